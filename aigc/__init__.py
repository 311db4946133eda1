"""The `aigc` command line."""
