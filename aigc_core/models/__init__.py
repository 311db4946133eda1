"""Generative model families. One file per family; no IO in model files (see `io.py`)."""
