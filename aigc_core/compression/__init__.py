"""Post-training compression of a saved model, and the gate a compressed model must pass.

A family that can be compressed names its method in its contract (`Family.compression`, a
`Compression`): how to make the smaller model from its parent's saved folder, and how much worse
the compressed model may score on the family's policy metric. The methods (chosen by measurement:
see benchmarks/compress.py):

- `dynamic-int8` (`aigc_core.compression.int8`; the language models): the weights of every
  `nn.Linear` and `nn.LSTM` as int8 with one float scale per output channel, the activations
  quantized on the fly (torch's dynamic quantized kernels on the CPU);
- `prune-<p>-distill` (`aigc_core.compression.pruning`; the DCGAN): p% of the generator's
  channels removed, the least important first, then a short fine-tune that matches the parent's
  images on the same latents. The result is an ordinary, narrower DCGAN.

A compressed model is an ordinary saved model folder (`weights.safetensors` + `config.json` with
the parent's "family" and a "compression" block saying how it was made), so it loads through its
family's own `load_generator`: served, generated from and evaluated as any other model, and
nothing is pickled. `compress` publishes the folder atomically; `within_tolerance` says whether
the compressed model's scores may stand in for its parent's.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aigc_core.atomic import staged_dir, staging_path
from aigc_core.models.io import CONFIG, WEIGHTS, read_config
from aigc_core.promotion import GatePolicy, floor_violations

if TYPE_CHECKING:  # the families import this module
    from aigc_core.families.base import Family


@dataclass(frozen=True)
class CompressInputs:
    """What a compression method may read: the parent's saved model and the snapshot it was
    trained on (calibration or fine-tuning uses its "train" rows only)."""

    parent_dir: Path  # the parent's saved model: weights.safetensors + config.json
    out_dir: Path  # where the compressed model goes (the same two files)
    table: Any  # pyarrow.Table of the snapshot, with its `split` column
    manifest: Mapping[str, Any]
    seed: int = 0


@dataclass(frozen=True)
class Compression:
    """A family's compression method (`Family.compression`; None: not compressible)."""

    method: str  # e.g. "dynamic-int8", "prune-50-distill"
    tolerance: float  # largest relative worsening of the family's policy metric vs the parent
    apply: Callable[[CompressInputs], None]  # writes out_dir/weights.safetensors + config.json

    def __post_init__(self):
        if not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ValueError(
                f"compression {self.method!r}: tolerance must be a finite number >= 0 (a "
                f"relative worsening, 0.1 for 10%), got {self.tolerance!r}"
            )


@dataclass(frozen=True)
class Compressed:
    out_dir: Path
    method: str
    parent_bytes: int  # weights + config of the parent, on disk
    bytes: int  # the same of the compressed model


def model_bytes(directory: Path) -> int:
    """Size on disk of a saved model: its weights and config files."""
    return sum((Path(directory) / name).stat().st_size for name in (WEIGHTS, CONFIG))


def compress(family: Family, inputs: CompressInputs) -> Compressed:
    """Compress the saved model in `inputs.parent_dir` with the family's method into
    `inputs.out_dir`, published whole (built under a staging name and renamed into place; an
    existing folder there is replaced only once the new one is complete)."""
    method = family.compression
    if method is None:
        raise ValueError(
            f"the {family.name} family has no compression method (Family.compression is None): "
            "serve its full model"
        )
    parent = Path(inputs.parent_dir)
    missing = [name for name in (WEIGHTS, CONFIG) if not (parent / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{parent} is not a saved model: it lacks {', '.join(missing)}; give the folder "
            "that save_model wrote"
        )
    compressed = read_config(parent / CONFIG).get("compression")
    if compressed:
        raise ValueError(
            f"{parent} is already compressed ({compressed.get('method')}): compress its "
            "full-size parent"
        )
    out = Path(inputs.out_dir)
    if out.resolve() == parent.resolve():
        raise ValueError(f"the compressed model cannot replace its parent in place: {out}")
    old = None
    with staged_dir(out) as staging:
        method.apply(dataclasses.replace(inputs, out_dir=staging))
        missing = [name for name in (WEIGHTS, CONFIG) if not (staging / name).is_file()]
        if missing:
            raise RuntimeError(
                f"compression {method.method!r} of {family.name} wrote no {', '.join(missing)}"
            )
        if out.exists():  # a retry's earlier output: set aside, removed once replaced
            old = staging_path(out)
            os.rename(out, old)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return Compressed(out, method.method, model_bytes(parent), model_bytes(out))


def within_tolerance(
    parent: Mapping[str, float],
    child: Mapping[str, float],
    policy: GatePolicy,
    tolerance: float,
) -> tuple[bool, str]:
    """Whether the compressed model (`child`'s metrics) may stand in for its parent: its policy
    metric at most `tolerance` (relative, of the parent's value) worse in the policy's direction,
    and the policy's hard floors and ceilings met by the child itself. The reason names both
    values and the limit."""
    m = policy.metric
    p, c = parent.get(m), child.get(m)
    for who, v in (("parent", p), ("compressed model", c)):
        if not _finite(v):
            return False, f"the {who} has no finite {m} ({v!r})"
    p, c = float(p), float(c)
    if policy.lower_is_better:
        limit, word = p + tolerance * abs(p), "at most"
        ok = c <= limit
    else:
        limit, word = p - tolerance * abs(p), "at least"
        ok = c >= limit
    reason = (
        f"{m} {c:.4g} against the parent's {p:.4g}: {word} {limit:.4g} allowed "
        f"({tolerance:.0%} {'above' if policy.lower_is_better else 'below'} the parent's)"
    )
    violations = floor_violations(child, policy)
    if violations:
        return False, f"{reason}; fails hard floors: {'; '.join(violations)}"
    return ok, reason


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False
