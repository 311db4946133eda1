"""The exit codes of every `aigc` command, in one table (README.md, "Exit codes").

  0   OK           done (trained, generated, promoted, listed; an already-champion version too)
  1   FAILED       the run failed: a flow or stage raised, the promotion gate refused the
                   version, a service did not answer
  2   USAGE        usage error or not found: a bad option or name, an unknown model family,
                   preset, registered model, version or alias, a bad config or policy file, a
                   missing file (click's own usage errors are 2 as well)
  3   NONFINITE    `aigc train` only: stopped on a non-finite loss, the last good checkpoint kept
  4   REFUSED      `aigc compress` only: the compressed model lost more quality than the family's
                   tolerance allows; it is registered, and no alias moved
  75  INTERRUPTED  stopped by SIGTERM or SIGINT (Ctrl-C), resumable (EX_TEMPFAIL): a rerun goes
                   on (training from its checkpoint, a batch from its finished shards)

The two training codes are defined where the trainer's launcher uses them too
(`aigc_core.training.interrupt`), and only re-exported here.
"""

from __future__ import annotations

from aigc_core.training.interrupt import EXIT_INTERRUPTED, EXIT_NONFINITE

OK = 0
FAILED = 1
USAGE = 2
NONFINITE = EXIT_NONFINITE
REFUSED = 4
INTERRUPTED = EXIT_INTERRUPTED

TABLE = {
    OK: "ok",
    FAILED: "the run failed",
    USAGE: "usage error or not found",
    NONFINITE: "aigc train only: non-finite loss",
    REFUSED: "aigc compress only: quality outside the tolerance; no alias moved",
    INTERRUPTED: "interrupted (SIGTERM or SIGINT); a rerun goes on",
}
