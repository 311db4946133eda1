"""Data sources, preprocessing and content-addressed Parquet snapshots."""
