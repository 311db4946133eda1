"""Prefect flows: one file per user path. Flows wire tasks; they do no work themselves."""
