"""Thin Prefect tasks: call aigc_core, log to MLflow, publish artifacts.

Task results are small and JSON-able: ids and paths, never arrays or models."""
