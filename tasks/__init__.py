"""Thin Prefect tasks: call aigc_core, log through `tasks.tracking.Tracker`, publish artifacts.

Task results are the small frozen stage records of `aigc_core.stages` (and `aigc_core.content`'s
batch plan and batch): ids and paths, never arrays or models."""
