"""One flow run from a command: the home, the embedded Prefect server, the flow, its errors.

What `aigc generate` and `aigc compress` do once their arguments are checked (`aigc.preflight`):
open the home (settings applied before Prefect or MLflow are imported), start the Prefect
server, import the flow while the server comes up (both take seconds), run the flow under the
progress bars, and turn its errors into one line and an exit code (`aigc.exit_codes`).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from aigc import embedded, exit_codes


def run_flow(home: Path | None, verbose: bool, flow: str, **params):
    """Run `flow` ("module:function", e.g. "flows.compress:compress_model") with `params` and
    the resolved home (`home=`), and return what it returns. Errors: LookupError (the model or
    version is gone since the preflight: not found all the same) and ValueError (the request
    does not fit the model or version) are usage errors, exit 2; anything else is exit 1 with
    one line. With `verbose`, the traceback too (not for a model that is not found)."""
    # here, not at the top: `aigc.cli` imports the command modules, which import this one
    from aigc.cli import (
        _crashed,
        _fail,
        err,
        open_home,
        progress_bars,
        start_prefect,
        wait_for_prefect,
    )

    h = open_home(home, verbose)
    start_prefect(h)
    module, name = flow.split(":")
    with err.status(embedded.starting_message(), spinner="dots"):
        run = getattr(importlib.import_module(module), name)
        wait_for_prefect()

    try:
        with progress_bars():
            return run(home=str(h.root), **params)
    except LookupError as e:  # the model changed since the preflight: not found all the same
        raise _fail(str(e.args[0] if e.args else e), exit_codes.USAGE) from None
    except ValueError as e:  # the request does not fit the model or version
        if verbose:
            err.print_exception()
        raise _fail(str(e), exit_codes.USAGE) from None
    except Exception as e:
        raise _crashed(e, verbose) from None
