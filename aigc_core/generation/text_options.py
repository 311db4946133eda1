"""What a text generation asks for, checked without torch: sampling options and prompts.

The CLI checks `aigc generate`'s options here before anything slow starts (a wrong `--top-p` is a
usage error in well under a second), and the sampler (`aigc_core.generation.text`), the
content batches and the served model check them with the same code when they use them.

- `SamplingParams`: what the sampler takes (stop sequences as token ids), range-checked.
- `TextSampling`: what a text batch asks for, as the user gives it (stop sequences as
  strings); `sampling_options` keeps the options a caller gave, the rest keep its defaults.
- `PREDICT_PARAMS`: the served model's sampling options (the `params` of a pyfunc request) and
  their defaults; `request_options` / `request_option` check a request's, naming the option.
- `load_prompts`: a prompt file, one prompt per line.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MAX_NEW_TOKENS = 4096  # per item: bounds a request's time and memory


@dataclass(frozen=True)
class SamplingParams:
    """What the sampler (`aigc_core.generation.text.sample_tokens`) takes: stop sequences as
    token ids, an optional end-of-sequence id."""

    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 means greedy
    top_k: int | None = None  # keep the k most likely tokens
    top_p: float | None = None  # keep the smallest set whose probability reaches p
    stop: tuple[tuple[int, ...], ...] = field(default_factory=tuple)  # token-id sequences
    eos_id: int | None = None

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must lie in (0, 1] or be None, got {self.top_p}")
        if any(len(s) == 0 for s in self.stop):
            raise ValueError("stop sequences must not be empty")


@dataclass(frozen=True)
class TextSampling:
    """What a text batch asks of the model, as the user gives it: the maximum length in tokens
    (characters for the character-level models), temperature (0 is greedy), top-k, top-p, and
    stop sequences as strings (the text is cut before the first one)."""

    max_new_tokens: int = 200
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self):
        if isinstance(self.stop, str):
            raise ValueError(f"stop must be a list of strings, got the string {self.stop!r}")
        object.__setattr__(self, "stop", tuple(self.stop))
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise ValueError(
                f"max_new_tokens must lie in [1, {MAX_NEW_TOKENS}], got {self.max_new_tokens}"
            )
        if not math.isfinite(self.temperature):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop sequences must be non-empty strings, got {list(self.stop)}")
        SamplingParams(  # the same range checks as the sampler's
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "stop": list(self.stop)}


def sampling_options(
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    max_new_tokens: int | None = None,
    stop: Sequence[str] | None = None,
) -> dict:
    """The TextSampling fields a caller gave (not None or empty): the rest keep defaults."""
    given = {
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "max_new_tokens": max_new_tokens,
        "stop": list(stop) if stop else None,
    }
    return {k: v for k, v in given.items() if v is not None}


class PromptFileError(ValueError):
    """A prompt file cannot be read or holds no prompts."""


def load_prompts(path: str | Path) -> list[str]:
    """Prompts from a UTF-8 text file, one per line (the line ending removed, other whitespace
    kept); blank lines are skipped. A prompt cannot span lines."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise PromptFileError(f"prompt file {p}: no such file") from None
    except IsADirectoryError:
        raise PromptFileError(f"prompt file {p} is a folder: give a text file") from None
    except OSError as e:
        raise PromptFileError(f"cannot read prompt file {p}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise PromptFileError(
            f"prompt file {p} is not UTF-8 text (line {line}, byte {e.start}): save it as UTF-8"
        ) from None
    prompts = [ln.removesuffix("\r") for ln in text.split("\n")]
    prompts = [ln for ln in prompts if ln.strip()]
    if not prompts:
        raise PromptFileError(f"prompt file {p} has no prompts: write one prompt per line")
    return prompts


# The served model's sampling options: the `params` of a pyfunc request, with their defaults.
# MLflow fills in the default of every option a request leaves out, so these are what a request
# without params gets, served or not. top_k 0 and top_p 1.0 keep every token; temperature 0 is
# greedy (the seed then changes nothing); `stop` is a list of strings, cut before the first.
PREDICT_PARAMS: dict[str, Any] = {
    "temperature": 1.0,
    "top_k": 0,
    "top_p": 1.0,
    "max_new_tokens": 64,
    "stop": [],
    "seed": 0,
}


class RequestError(ValueError):
    """A pyfunc request's option is of the wrong type or out of range; the message names it."""


def request_number(name: str, value, where: str, integer: bool) -> float | int:
    """`value` as a number (an int when `integer`): NumPy scalars and, for integers, whole floats
    (what a column with missing rows holds) accepted; bools, text and NaN refused."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise RequestError(f"{name} {where} must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise RequestError(f"{name} {where} must be a finite number, got {value!r}")
    if integer:
        if value != int(value):
            raise RequestError(f"{name} {where} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


def _stop_strings(value, where: str) -> tuple[str, ...]:
    if isinstance(value, str):  # one stop string given bare
        value = [value]
    if not isinstance(value, list | tuple | np.ndarray) or not all(
        isinstance(s, str) and s for s in value
    ):
        raise RequestError(f"stop {where} must be a list of non-empty strings, got {value!r}")
    return tuple(value)


def _check_range(name: str, value, where: str) -> None:
    bad = {
        "temperature": (value < 0, "must be >= 0 (0 is greedy)"),
        "top_k": (value < 0, "must be >= 0 (0 keeps every token)"),
        "top_p": (not 0 < value <= 1, "must lie in (0, 1] (1 keeps every token)"),
        "max_new_tokens": (not 1 <= value <= MAX_NEW_TOKENS, f"must lie in [1, {MAX_NEW_TOKENS}]"),
        "seed": (value < 0, "must be >= 0"),
    }
    wrong, rule = bad[name]
    if wrong:
        raise RequestError(f"{name} {where} {rule}, got {value!r}")


def request_option(name: str, value, where: str = "in params"):
    """One sampling option of a request, checked and converted; `where` says where it came from
    (the params, a row's column) in the error."""
    if name == "stop":
        return _stop_strings(value, where)
    if name not in PREDICT_PARAMS:
        raise RequestError(
            f"unknown option {name!r} {where}: the options are {', '.join(PREDICT_PARAMS)}"
        )
    value = request_number(name, value, where, integer=isinstance(PREDICT_PARAMS[name], int))
    _check_range(name, value, where)
    return value


def request_options(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """`PREDICT_PARAMS` with a request's params over them, each checked (RequestError naming the
    option: an unknown name, a wrong type, a value out of range)."""
    given = dict(params or {})
    out = {**PREDICT_PARAMS, "stop": ()}
    for name, value in given.items():
        out[name] = request_option(name, value)
    return out


class LatentPoint(str):
    """The prompt of one item of an interpolation batch (`aigc generate --interpolate A B
    --steps K`): a point a fraction `t` of the way from sentence `a` to sentence `b` in a text
    VAE's latent space. As a string it reads "A -> B @ t" (what the batch's prompt column and
    report show); a generator with `interpolate` (the text VAE's) decodes it from the point
    between the two posterior means instead of continuing it. Plain values: it travels with a
    plan."""

    a: str
    b: str
    t: float

    def __new__(cls, a: str, b: str, t: float) -> LatentPoint:
        if not 0.0 <= t <= 1.0:
            raise ValueError(
                f"an interpolation point lies in [0, 1] between the sentences, got {t}"
            )
        obj = super().__new__(cls, f"{a} -> {b} @ {t:.3f}")
        obj.a, obj.b, obj.t = a, b, float(t)
        return obj

    def __reduce__(self):
        return (LatentPoint, (self.a, self.b, self.t))


def interpolation_points(a: str, b: str, steps: int) -> list[LatentPoint]:
    """`steps` >= 2 points from `a` (t = 0) to `b` (t = 1), evenly spaced."""
    if steps < 2:
        raise ValueError(f"--steps must be >= 2 (both ends of the path), got {steps}")
    return [LatentPoint(a, b, i / (steps - 1)) for i in range(steps)]
