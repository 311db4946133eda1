"""Content curation: scorers and filters that keep or reject every item with its reasons."""
