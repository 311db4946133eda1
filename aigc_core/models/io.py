"""Save and rebuild models: safetensors weights plus a JSON config. Nothing is pickled.

A saved model is a folder with `weights.safetensors` and `config.json`, whose "family" key names
the model family that reads it back (`aigc_core.families.get(name)`): the family rebuilds its
config (`family.model_config(dict)`) and module, then `load_weights` fills it. This module knows
no family.

A compressed model (`aigc_core.compression`) is such a folder too: its config.json has a
"compression" block beside the model's fields (`config_fields` leaves it out), and a quantized
one's weights say so in their safetensors metadata (`QUANTIZATION`), so `load_weights` rebuilds
it whichever family loads it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from aigc_core.atomic import naming_full_disk, write_bytes_atomic

WEIGHTS = "weights.safetensors"
CONFIG = "config.json"
# safetensors metadata key: how the weights are quantized (aigc_core.compression.int8)
QUANTIZATION = "quantization"
# config.json keys that are not fields of the family's model config
NOT_MODEL_FIELDS = ("family", "compression")


def save_model(directory: Path, module: torch.nn.Module, config: dict) -> dict[str, Path]:
    """Write `weights.safetensors` and `config.json` (with a "family" key) into `directory`."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    return save_state(directory, state, config)


def save_state(
    directory: Path,
    state: dict[str, torch.Tensor],
    config: dict,
    metadata: dict[str, str] | None = None,
) -> dict[str, Path]:
    """`save_model` of a state dict (CPU tensors), with safetensors `metadata` (str -> str)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{WEIGHTS}.tmp"
    with naming_full_disk(directory / WEIGHTS):
        save_file(state, tmp, metadata=metadata)
    os.replace(tmp, directory / WEIGHTS)
    write_bytes_atomic(directory / CONFIG, json.dumps(config, indent=2).encode())
    return {"weights": directory / WEIGHTS, "config": directory / CONFIG}


def read_config(path: Path) -> dict:
    """A saved model's config dict (its "family" key included)."""
    return json.loads(Path(path).read_text())


def config_fields(config: dict) -> dict:
    """The config dict without its "family" key (and a compressed model's "compression"
    block): the fields of the family's config class."""
    return {k: v for k, v in config.items() if k not in NOT_MODEL_FIELDS}


def quantization(weights: Path) -> str | None:
    """How a safetensors file's weights are quantized (its metadata), or None: plain floats."""
    with safe_open(str(weights), framework="pt") as f:
        return (f.metadata() or {}).get(QUANTIZATION)


def read_weights(weights: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The state dict stored in a safetensors file, on `device`; quantized weights come back
    dequantized, as the float model's state dict (e.g. to warm-start from them)."""
    if quantization(weights) is None:
        return load_file(str(weights), device=str(device))
    from aigc_core.compression import int8

    state = int8.dequantized_state(_quantized_state(weights))
    return {k: v.to(device) for k, v in state.items()}


def load_weights(
    module: torch.nn.Module, weights: Path, device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Fill `module` (freshly built from its config) with the weights of a safetensors file;
    the module on `device`, in eval mode. A quantized file's layers are rebuilt as its
    quantization runs them (`aigc_core.compression.int8.load_int8`)."""
    if quantization(weights) is None:
        module.load_state_dict(read_weights(weights, device))
        return module.to(device).eval()
    from aigc_core.compression import int8

    return int8.load_int8(module, _quantized_state(weights), device)


def _quantized_state(weights: Path) -> dict[str, torch.Tensor]:
    from aigc_core.compression import int8

    method = quantization(weights)
    if method != int8.METHOD:
        raise ValueError(
            f"{weights} is quantized as {method!r}, which this version cannot load (it knows "
            f"{int8.METHOD!r}): a newer version of the project wrote it?"
        )
    return load_file(str(weights))


def load_model(weights: Path, config: Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The served module of a saved model, rebuilt by the family its config names (eval mode).

    Kept for models logged before they carried their own code: their pyfunc file, run from the
    installed project, calls this. New code loads a generator: `family.load_generator(...)`."""
    from aigc_core import families  # the families import this module

    family = families.get(read_config(config).get("family"))
    return family.load_generator(weights, config, device).module
