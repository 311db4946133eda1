"""`aigc generate`: a curated content batch from a registered model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer
from rich.table import Table

from aigc import completion, exit_codes, preflight
from aigc.cli import _fail, _name, app, out, usage_errors
from aigc.flow_run import run_flow
from aigc_core import names
from aigc_core.paths import Home

SAMPLING_FLAGS = {
    "max_new_tokens": "--max-new-tokens",
    "temperature": "--temperature",
    "top_k": "--top-k",
    "top_p": "--top-p",
    "stop": "--stop",
}


@app.command()
def generate(
    model: str = typer.Option(
        ...,
        "--model",
        help="Registered model: NAME (its champion), NAME@ALIAS or NAME/VERSION.",
        autocompletion=completion.model_refs,
    ),
    n: int = typer.Option(
        None, "--n", min=1, help="Items to generate (required unless --interpolate is given)."
    ),
    shards: int = typer.Option(
        None,
        "--shards",
        min=1,
        help="Shards to split the work into (default: one per 4,096 items).",
    ),
    seed: int = typer.Option(0, help="Seed of the batch; each shard derives its own from it."),
    policy: Path = typer.Option(
        None, "--policy", help="Curation policy file (YAML or JSON) (default: built-in)."
    ),
    prompt_file: Path = typer.Option(
        None,
        "--prompt-file",
        help="Text models: UTF-8 prompts, one per line (blank lines skipped); item i continues "
        "prompt i mod P. Without it, each item starts a new document.",
    ),
    temperature: float = typer.Option(
        None, "--temperature", help="Text models: sampling temperature >= 0; 0 is greedy (1.0)."
    ),
    top_k: int = typer.Option(
        None, "--top-k", help="Text models: sample among the K most likely tokens (all)."
    ),
    top_p: float = typer.Option(
        None, "--top-p", help="Text models: nucleus sampling, P in (0, 1] (1, off)."
    ),
    max_new_tokens: int = typer.Option(
        None,
        "--max-new-tokens",
        help="Text models: maximum length of an item in tokens (characters here) (200).",
    ),
    stop: list[str] = typer.Option(
        None,
        "--stop",
        help="Text models: end an item before this string; repeatable; \\n and \\t are "
        "newline and tab.",
    ),
    labels: str = typer.Option(
        None,
        "--labels",
        help="Conditional image and audio models: the classes to draw: 7 (all 7s), 3,7 (in "
        "turn), or a mix 3:0.7,7:0.3. Curation rejects items the evaluator reads as another "
        "class (wrong_class).",
    ),
    labels_file: Path = typer.Option(
        None,
        "--labels-file",
        help="Conditional image and audio models: a file of labels (one or more per line, as "
        "--labels; # comments), taken in turn.",
    ),
    guidance: float = typer.Option(
        None,
        "--guidance",
        help="Diffusion models: classifier-free guidance scale >= 0 (the model's default).",
    ),
    sampling_steps: int = typer.Option(
        None,
        "--sampling-steps",
        min=1,
        help="Diffusion models: denoising steps of the sampler (the model's default).",
    ),
    interpolate: tuple[str, str] = typer.Option(
        None,
        "--interpolate",
        metavar="A B",
        help="Text VAEs: decode --steps points on the path between the posterior means of "
        "sentences A and B (greedy unless --temperature is given); takes no --n or "
        "--prompt-file.",
    ),
    steps: int = typer.Option(
        None, "--steps", min=2, help="With --interpolate: items on the path, both ends included."
    ),
    dask_address: str = typer.Option(
        None, "--dask-address", help="Run shards on this Dask scheduler (tcp://host:port)."
    ),
    dask_local: int = typer.Option(
        None, "--dask-local", min=1, help="Run shards on a local Dask cluster of N workers."
    ),
    home: Path = typer.Option(
        None, envvar="AIGC_HOME", help="Where snapshots, MLflow and content go (default: ./.aigc)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show library logs."),
) -> None:
    """Generate a batch from a registered model, shard by shard; score, filter, and publish it
    with a manifest and an HTML review report. A rerun resumes an interrupted batch."""
    model = _name(names.model_ref, model)
    with usage_errors():  # fail before starting anything, the fast checks first
        path = _interpolation(interpolate, steps, n, prompt_file)
        if path:
            n = steps
            temperature = 0.0 if temperature is None else temperature
        if dask_address and dask_local:
            raise ValueError("give either --dask-address or --dask-local, not both")
        if shards is not None and shards > n:
            raise ValueError(f"--shards {shards} is more than --n {n}: use at most {n} shards")
        preflight.existing_file("--policy", policy)
        preflight.existing_file("--prompt-file", prompt_file)
        preflight.labels(labels, labels_file)
        preflight.generation_options(guidance, sampling_steps)
        found = preflight.model_ref(Home.resolve(home), model)  # the registry, without MLflow
        options = {"guidance": guidance, "sampling_steps": sampling_steps}
        preflight.model_request(Home.resolve(home), found, labels, labels_file, options)
    sampling = _check_content_options(
        policy, prompt_file, temperature, top_k, top_p, max_new_tokens, stop
    )
    summary = run_flow(
        home,
        verbose,
        "flows.batch_generate:run_batch_generate",
        model=model,
        n=n,
        shards=shards,
        seed=seed,
        policy_file=str(policy) if policy else None,
        prompt_file=str(prompt_file) if prompt_file else None,
        dask_address=dask_address,
        dask_local=dask_local,
        labels=labels,
        labels_file=str(labels_file) if labels_file else None,
        guidance=guidance,
        sampling_steps=sampling_steps,
        **({"interpolate": path} if path else {}),
        **sampling,
    )

    batch_dir = Path(summary["batch_dir"])
    result = {
        k: summary[k]
        for k in (
            "batch_id",
            "batch_dir",
            "kind",
            "model_name",
            "model_version",
            "run_id",
            "snapshot_id",
            "seed",
            "n_generated",
            "n_kept",
            "rejected_by_reason",
            "shards_skipped",
            "batch_run_id",
        )
    }
    result["shards"] = len(summary["shards"])
    result["report"] = str(batch_dir / summary["report"])
    for k in ("options", "labels"):  # only in batches whose request gave them
        if summary.get(k):
            result[k] = summary[k]
    if as_json:
        print(json.dumps(result, sort_keys=True))
        return
    table = Table(title="aigc generate", show_header=False)
    for k, v in result.items():
        if k != "labels":
            table.add_row(k, json.dumps(v) if isinstance(v, dict) else str(v))
    out.print(table)
    if result.get("labels"):
        out.print(_labels_table(result["labels"]))
    out.print(f"review report: {result['report']}")


def _labels_table(labels: dict) -> Table:
    """Items asked and kept per class (the manifest's `labels`)."""
    table = Table(title="per class asked")
    for column in ("label", "requested", "kept", "kept %"):
        table.add_column(column, justify="right")
    for label, requested in labels["requested"].items():
        kept = labels["kept"].get(label, 0)
        share = f"{kept / requested:.0%}" if requested else "-"
        table.add_row(label, str(requested), str(kept), share)
    return table


def _check_content_options(
    policy, prompt_file, temperature, top_k, top_p, max_new_tokens, stop
) -> dict:
    """The policy file, the prompt file and the sampling options, checked as the flow will use
    them; the sampling options by name. (Their modules do not import torch: well under a
    second.)"""
    from aigc_core.curation.policy import PolicyError, load_policy
    from aigc_core.generation.text_options import (
        PromptFileError,
        TextSampling,
        load_prompts,
        sampling_options,
    )

    stops = [_unescape(s) for s in stop or []]
    sampling = sampling_options(temperature, top_k, top_p, max_new_tokens, stops)
    try:
        load_policy(policy)
        TextSampling(**sampling)
        if prompt_file is not None:
            load_prompts(prompt_file)
    except (PolicyError, PromptFileError) as e:
        raise _fail(str(e), exit_codes.USAGE) from None
    except ValueError as e:  # TextSampling's messages start with the field's name
        flag = SAMPLING_FLAGS.get(str(e).split()[0], "sampling options")
        raise _fail(f"{flag}: {e}", exit_codes.USAGE) from None
    return sampling


def _interpolation(
    interpolate: tuple[str | None, str | None], steps: int | None, n: int | None, prompt_file
) -> list[str]:
    """The two sentences of `--interpolate` (empty: not asked), checked with --steps, --n and
    --prompt-file: an interpolation batch is the path, K = --steps items, and nothing else."""
    given = [s for s in interpolate or () if s is not None]
    if not given:
        if steps is not None:
            raise ValueError("--steps applies to --interpolate: give --interpolate A B")
        if n is None:
            raise ValueError("give --n, the number of items (or --interpolate A B --steps K)")
        return []
    if n is not None:
        raise ValueError("--interpolate makes --steps items: drop --n")
    if prompt_file is not None:
        raise ValueError("--interpolate takes no prompts: drop --prompt-file")
    if steps is None:
        raise ValueError("--interpolate needs --steps K, the items on the path (K >= 2)")
    if any(not s.strip() for s in given):
        raise ValueError("--interpolate takes two non-empty sentences")
    return given


def _unescape(value: str) -> str:
    """`\\n`, `\\t` and `\\\\` in a command-line string as newline, tab and backslash."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t"}.get(m[1], "\\"), value)
