"""`python -m aigc`: the same as the `aigc` command."""

from aigc.cli import app

app(prog_name="aigc")
