"""The kinds of content: what a snapshot holds, what a family trains on and makes, and what a
batch is built and curated for. One list, read by ingestion, the family contract and batches."""

KINDS = ("image", "text", "audio")
