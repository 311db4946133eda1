"""The compress path: a registered version's compressed twin, gated onto `champion-compressed`.

`aigc compress --model NAME@champion` runs it, and the nightly flow after promotion when asked
(`compress=True`). The compressed copy is always registered (a new version naming its parent and
method); the alias moves only when its quality stays within the family's tolerance of its
parent's, measured on the same held-out data, and its parent is the champion.
"""

from __future__ import annotations

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from aigc_core import names
from aigc_core.paths import Home
from flows import notify
from flows.runs import add_tags, name_from
from tasks.compression import check_tolerance, compress, gate_compressed


@flow(
    name="compress-model",
    flow_run_name=name_from("compress-{model}-{date}"),
    task_runner=ThreadPoolTaskRunner(max_workers=1),
    **notify.HOOKS,
)
def compress_model(
    model: str,
    home: str | None = None,
    tolerance: float | None = None,
    force: bool = False,
    parent_run_id: str | None = None,
) -> dict:
    """model: NAME (its champion), NAME@ALIAS or NAME/VERSION; tolerance: the largest relative
    worsening of the family's primary metric accepted (None: the family's own, e.g. 0.1 is 10%);
    force: compress again even when this version was compressed before by the same method and
    code. The stage's MLflow run nests under `parent_run_id` (a pipeline run) when given."""
    # bad names and a bad tolerance fail the run before anything starts
    model, tolerance = names.model_ref(model), check_tolerance(tolerance)
    home = str(Home.resolve(home).root)
    add_tags(model=model.partition("@")[0].partition("/")[0], stage="compress")

    # 1. the compressed copy: made, scored beside its parent on the same data, registered
    #    (or the one made before by the same method and code)
    compressed = compress(model, home, force=force, parent_run_id=parent_run_id)

    # 2. the gate: `champion-compressed` moves only within the family's tolerance
    return gate_compressed(compressed, home, tolerance).to_dict()
