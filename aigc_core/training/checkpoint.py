"""Training checkpoints: one file per step, written atomically, verified before use.

A checkpoint is one `torch.save` dict with plain containers and tensors only (so it loads with
`weights_only=True`): the step, the full config, every module's and optimizer's state dict, and
the RNG states (torch CPU, CUDA, and the trainer's data generator). Writing goes to a temporary
file that is fsynced and `os.replace`d into `ckpt-<step>.pt`; a `.sha256` sidecar is written the
same way after it. A checkpoint without a matching sidecar (a crash between the two writes, a
truncated copy) is refused with a warning and the previous one is used; if checkpoints exist but
none is valid, loading raises rather than letting training silently restart from scratch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import uuid
from pathlib import Path

import torch

from aigc_core.atomic import naming_full_disk, sha256_file, write_bytes_atomic

log = logging.getLogger(__name__)

_NAME = re.compile(r"^ckpt-(\d{8})\.pt$")
SIDECAR = ".sha256"


class CheckpointError(RuntimeError):
    pass


def checkpoint_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"ckpt-{step:08d}.pt"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint file in `directory`, newest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found, reverse=True)


def save_checkpoint(directory: Path, step: int, state: dict, keep: int = 3) -> Path:
    """Write `state` as the checkpoint of `step` (atomic, with a sha256 sidecar); keep the
    newest `keep` checkpoints and delete older ones. Returns the checkpoint's path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(directory, step)
    tmp = directory / f".{final.name}.{uuid.uuid4().hex}.tmp"
    with naming_full_disk(final):  # raised once the partial file is gone
        try:
            with open(tmp, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            digest = sha256_file(tmp)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    write_bytes_atomic(final.with_name(final.name + SIDECAR), f"{digest}  {final.name}\n".encode())
    for _, old in list_checkpoints(directory)[max(keep, 1) :]:
        old.with_name(old.name + SIDECAR).unlink(missing_ok=True)
        old.unlink(missing_ok=True)
    log.info("checkpoint written: %s", final)
    return final


def verify_checkpoint(path: Path) -> str | None:
    """None when `path` matches its sidecar, else why not."""
    sidecar = path.with_name(path.name + SIDECAR)
    if not sidecar.exists():
        return "no sha256 sidecar (the write did not complete)"
    expected = sidecar.read_text().split()[0] if sidecar.read_text().strip() else ""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    if h.hexdigest() != expected:
        return "sha256 does not match its sidecar (truncated or corrupted)"
    return None


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Load one verified checkpoint with weights_only=True."""
    path = Path(path)
    problem = verify_checkpoint(path)
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    return torch.load(path, map_location=map_location, weights_only=True)


def load_latest(
    directory: Path, map_location: str | torch.device = "cpu"
) -> tuple[Path, dict] | None:
    """The newest valid checkpoint in `directory` as (path, state), or None if there is none
    at all. Invalid newer ones are skipped with a warning; if every one is invalid, raises."""
    candidates = list_checkpoints(directory)
    for _, path in candidates:
        try:
            return path, load_checkpoint(path, map_location)
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is skipped the same way
            why = str(e).removeprefix(f"{path}: ")
            log.warning("checkpoint %s is unusable (%s); falling back to the one before", path, why)
    if candidates:
        raise CheckpointError(
            f"{directory} holds {len(candidates)} checkpoint(s) and none is valid; refusing to "
            "restart from scratch: remove the directory to start over"
        )
    return None


def rng_state(data_rng: torch.Generator) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "data": data_rng.get_state(),
    }


def set_rng_state(state: dict, data_rng: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    data_rng.set_state(state["data"])
