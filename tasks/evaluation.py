"""Task of the evaluate stage: the family scores its trained model; the run records the scores."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from prefect import task

from aigc_core import families, plots, progress
from aigc_core.data.snapshot import open_snapshot, read_table
from aigc_core.families.base import EvalInputs
from aigc_core.paths import Home
from aigc_core.stages import Scores, TrainedRun
from tasks.tracking import Tracker

log = logging.getLogger(__name__)


@task(name="evaluate")
def evaluate(trained: TrainedRun, home: str) -> Scores:
    """Score the candidate against the snapshot's held-out data with its family's metrics (the
    gate's among them); log them, the family's images (samples, ...), its tables (sample texts)
    and the loss curves on the training run."""
    h = Home.resolve(home)
    tracker, run_id = Tracker(h), trained.run_id
    with tracker.run(run_id):
        progress.report("evaluate", 0, 1)
        snap = open_snapshot(trained.snapshot)
        inputs = EvalInputs(
            model_dir=Path(trained.model_dir),
            checkpoint_dir=Path(trained.checkpoint_dir),
            snapshot_id=snap.id,
            table=read_table(snap),
            manifest=snap.manifest,
            evaluators_dir=h.evaluators,
            final={k: v for k, v in trained.final.items() if v is not None},
        )
        result = families.get(trained.family).evaluate(inputs)
        tracker.log_metrics(run_id, result.metrics)
        for name, image in result.images.items():
            tracker.log_image(run_id, image, name)
        for name, rows in result.tables.items():  # e.g. sample texts, shown as a table
            tracker.log_table(run_id, pd.DataFrame(rows), name)
        curves = plots.loss_curves(tracker.metric_history(run_id, contains="loss"))
        if curves is None:
            log.warning("run %s has no loss metrics to plot", run_id)
        else:
            tracker.log_image(run_id, curves, "loss_curves.png")
        progress.report("evaluate", 1, 1)
    if result.summary:
        log.info("%s", result.summary)
    return Scores(run_id, dict(result.metrics))
