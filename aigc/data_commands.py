"""`aigc ingest` and `aigc datasets`: the data layer's commands.

`ingest` runs the ingest task's work (`tasks.data.ingest_gated`) in-process, without a Prefect
run or MLflow (seconds, no server): it reads the source, checks the data contract on the
in-memory table and publishes the snapshot only if it passes. Exit codes (`aigc.exit_codes`): 2
for a bad option, a missing --path or an unknown built-in dataset (checked first); 1 for data
that cannot be read or breaks its contract (nothing written).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal

import typer
from rich.markup import escape
from rich.table import Table

from aigc import exit_codes, preflight
from aigc.cli import _crashed, _fail, _name, _settings, app, err, out, progress_bars, usage_errors
from aigc_core import names
from aigc_core.paths import Home


def _home(home: Path | None, verbose: bool) -> Home:
    h = Home.resolve(home)
    if h.root.exists() and not h.root.is_dir():
        raise _fail(f"cannot use {h.root} as the aigc home: it is not a folder", exit_codes.USAGE)
    _settings(h, verbose)
    return h


@app.command()
def ingest(
    dataset: str = typer.Option(
        ...,
        help="Dataset name: built-in (digits, mnist, fashion-mnist, python-docs, notes), or a "
        "name of your choice with --path.",
    ),
    path: Path = typer.Option(
        None,
        help="Your files: MNIST IDX files (.gz or raw), a folder of PNG/JPEG images or of "
        "WAV/FLAC recordings (class subfolders as labels), or text (.txt, .jsonl, .csv, "
        ".parquet, or a folder of them).",
    ),
    kind: Literal["image", "text", "audio"] | None = typer.Option(
        None,
        help="image, text or audio (default: from the dataset or path).",
    ),
    text_column: str = typer.Option("text", help="Text column of JSONL, CSV or Parquet files."),
    image_size: int = typer.Option(None, min=4, max=1024, help="Resize images to this square."),
    mode: Literal["L", "RGB"] = typer.Option("L", help="Image folders: L (grayscale) or RGB."),
    sample_rate: int = typer.Option(
        None,
        min=1000,
        max=192000,
        help="Audio: resample every clip to this rate in Hz (default: notes 8000, a folder 16000).",
    ),
    clip_samples: int = typer.Option(
        None,
        min=64,
        max=1 << 20,
        help="Audio: samples per clip; longer recordings keep their loudest window, shorter "
        "ones are zero-padded (default: notes 4096, a folder 16384; the audio models take "
        "1024, 4096, 16384 or 65536).",
    ),
    max_seconds: float = typer.Option(
        600.0,
        min=0.001,
        help="Audio: refuse a file longer than this many seconds (read from its header).",
    ),
    bad_bytes: Literal["reject", "replace"] = typer.Option(
        "reject",
        help="Text that is not UTF-8 or holds NUL bytes: reject, or replace and count.",
    ),
    validation_fraction: float = typer.Option(
        0.2,
        help="Share of items in the validation split (by content hash), between 0 and 1.",
    ),
    home: Path = typer.Option(
        None, envvar="AIGC_HOME", help="Where snapshots go (default: ./.aigc)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show library logs."),
) -> None:
    """Ingest a dataset into a content-addressed snapshot, gated by its data contract."""
    dataset = _name(names.dataset, dataset)
    with usage_errors():
        preflight.existing_path("--path", path)
        if not 0.0 < validation_fraction < 1.0:
            raise ValueError(
                f"--validation-fraction {validation_fraction}: give a number in (0, 1)"
            )
    h = _home(home, verbose)
    if not verbose:  # contract warnings are printed below, once, in the CLI's own words
        logging.getLogger("data_contracts").setLevel(logging.ERROR)
    from aigc_core.data.files import DataSourceError
    from aigc_core.data.snapshot import SnapshotError

    with usage_errors():
        preflight.dataset_source(dataset, path)

    with err.status("loading the data contracts...", spinner="dots"):
        from data_contracts import ContractViolation
        from tasks.data import ingest_gated

    try:
        with progress_bars(transient=True):
            snap, report = ingest_gated(
                h,
                dataset,
                path=path,
                kind=kind,
                validation_fraction=validation_fraction,
                image_size=image_size,
                mode=mode,
                text_column=text_column,
                bad_bytes=bad_bytes,
                sample_rate=sample_rate,
                clip_samples=clip_samples,
                max_seconds=max_seconds,
            )
    except DataSourceError as e:
        raise _fail(f"ingest {dataset}: {e}\nNothing was written.") from None
    except ContractViolation as e:
        docs = f"\nResults: {e.report.data_docs}" if e.report.data_docs else ""
        source = f" from {path}" if path is not None else ""
        raise _fail(f"ingest {dataset}{source}: {e}\nNothing was written.{docs}") from None
    except SnapshotError as e:
        raise _fail(f"ingest {dataset}: {e}") from None
    except Exception as e:
        raise _crashed(e, verbose, f"ingest {dataset}: ") from None

    m = snap.manifest
    result = {
        "snapshot_id": snap.id,
        "dataset": snap.name,
        "kind": m["kind"],
        "path": str(snap.path),
        "rows": m["num_rows"],
        "splits": m["splits"],
        "created": snap.created,
        "data_docs": report.data_docs if report else None,
        "warnings": [c.describe() for c in report.warnings] if report else [],
    }
    if as_json:
        print(json.dumps(result, sort_keys=True))
        return
    for w in result["warnings"]:
        err.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    table = Table(title=f"aigc ingest {dataset}", show_header=False)
    for k in ("snapshot_id", "kind", "rows", "splits", "created", "path", "data_docs"):
        v = result[k]
        table.add_row(k, ", ".join(f"{a} {b}" for a, b in v.items()) if k == "splits" else str(v))
    out.print(table)
    if not snap.created:
        out.print("same content as an existing snapshot: nothing written")


@app.command()
def datasets(
    home: Path = typer.Option(
        None, envvar="AIGC_HOME", help="Where snapshots are (default: ./.aigc)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the list as one JSON object."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show library logs."),
) -> None:
    """List the published snapshots, oldest first."""
    h = _home(home, verbose)
    from aigc_core.data.snapshot import list_snapshots

    snaps = list_snapshots(h.datasets)
    rows = [
        {
            "dataset": s.name,
            "snapshot_id": s.id,
            "kind": s.manifest.get("kind"),
            "rows": s.manifest.get("num_rows"),
            "train": s.manifest.get("splits", {}).get("train"),
            "validation": s.manifest.get("splits", {}).get("validation"),
            "created_at": s.manifest.get("created_at"),
            "source": s.manifest.get("source"),
            "path": str(s.path),
        }
        for s in snaps
    ]
    if as_json:
        print(json.dumps({"home": str(h.root), "snapshots": rows}, sort_keys=True))
        return
    if not rows:
        err.print(f"no snapshots under {h.datasets}; create one with `aigc ingest --dataset NAME`")
        return
    cols = ("dataset", "snapshot_id", "kind", "rows", "train", "validation", "created_at")
    table = Table(title=f"snapshots in {h.datasets}")
    for col in cols:
        table.add_column(col, justify="right" if col in ("rows", "train", "validation") else "left")
    for r in rows:
        table.add_row(*(str(r[c]) for c in cols))
    out.print(table)
