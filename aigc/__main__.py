"""`python -m aigc`: the same as the `aigc` command."""

from aigc.cli import app

if __name__ == "__main__":  # Dask process workers re-import the main module
    app(prog_name="aigc")
