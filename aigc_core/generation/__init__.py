"""Batched sampling from trained generators (tensor in, tensor out)."""
