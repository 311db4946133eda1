"""The on-demand path: a curated content batch from a registered model, shard by shard.

Image models draw images: a conditional one the classes `labels` asks for ("7", "3,7" in
turn, a mix "3:0.7,7:0.3", or `labels_file`, one spec a line), which curation checks the
evaluator sees; a diffusion model under its `guidance` and `sampling_steps` (other families
refuse them). Text models continue the prompts of `prompt_file` (one per line; none: new
documents) under the sampling options (temperature, top_k, top_p, max_new_tokens, stop), which
image and audio models refuse. Audio models (WaveGAN) make clips, stored as WAV files; a
conditional one the classes `labels` asks for, as for images.

The batch is the `content-batch` subflow. Its shards are mapped as Prefect tasks: in-process
one after another (torch already uses every core), or, with a Dask scheduler address or a local
Dask cluster of N worker processes, there through prefect-dask. The plan fixes every shard's
seed first, so where shards run never changes the batch.
"""

from __future__ import annotations

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from aigc_core import names
from aigc_core.generation.text_options import sampling_options
from aigc_core.paths import Home
from flows import notify
from flows.content import content_batch
from flows.runs import add_tags, name_from


@flow(name="batch-generate", flow_run_name=name_from("generate-{model}-{n}-{date}"), **notify.HOOKS)
def batch_generate(
    model: str,
    n: int,
    shards: int | None = None,
    seed: int = 0,
    policy_file: str | None = None,
    prompt_file: str | None = None,
    home: str | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    max_new_tokens: int | None = None,
    stop: list[str] | None = None,
    dask_address: str | None = None,
    dask_local: int | None = None,
    labels: str | None = None,
    labels_file: str | None = None,
    guidance: float | None = None,
    sampling_steps: int | None = None,
    interpolate: list[str] | None = None,
) -> dict:
    """Sampling options left None take the text defaults (`TextSampling`,
    aigc_core.generation.text_options); guidance and sampling_steps left None, the model's own.
    labels / labels_file: the classes asked of a conditional image or audio model (not both).
    dask_address / dask_local: run the shards on that Dask scheduler, or on a local Dask
    cluster of that many worker processes (default: in-process)."""
    model = names.model_ref(model)  # a bad name fails the run before anything starts
    add_tags(model=model.partition("@")[0].partition("/")[0])
    runner = task_runner(dask_address, dask_local)
    home = str(Home.resolve(home).root)
    sampling = sampling_options(temperature, top_k, top_p, max_new_tokens, stop)
    options = generation_options(guidance, sampling_steps)

    batch = content_batch.with_options(task_runner=runner)(
        model,
        n,
        shards,
        seed,
        home,
        policy_file=policy_file,
        prompt_file=prompt_file,
        sampling=sampling,
        labels=labels,
        labels_file=labels_file,
        options=options or None,
        interpolate=interpolate,
    )
    return batch.to_dict()


def generation_options(guidance: float | None, sampling_steps: int | None) -> dict:
    """The image generation options given (None: the model's default), by name."""
    given = {"guidance": guidance, "sampling_steps": sampling_steps}
    return {k: v for k, v in given.items() if v is not None}


def task_runner(dask_address: str | None = None, dask_local: int | None = None):
    """The task runner for shards: an existing Dask cluster, a local one, or in-process."""
    if dask_address and dask_local:
        raise ValueError("give either a Dask address or a number of local Dask workers, not both")
    if dask_local is not None and dask_local < 1:
        raise ValueError(f"local Dask workers must be >= 1, got {dask_local}")
    if not (dask_address or dask_local):
        return ThreadPoolTaskRunner(max_workers=1)
    from prefect_dask import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": dask_local,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        },
    )


def run_batch_generate(
    *, dask_address: str | None = None, dask_local: int | None = None, **params
) -> dict:
    """Run the flow (params: its parameters, by name) with its shards on the task runner the
    Dask options ask for."""
    return batch_generate(**params, dask_address=dask_address, dask_local=dask_local)
