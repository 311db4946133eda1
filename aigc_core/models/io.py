"""Save and rebuild models: safetensors weights plus a JSON config. Nothing is pickled.

A saved model is a folder with `weights.safetensors` and `config.json`, whose "family" key names
the model family that reads it back (`aigc_core.families.get(name)`): the family rebuilds its
config (`family.model_config(dict)`) and module, then `load_weights` fills it. This module knows
no family.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from aigc_core.atomic import naming_full_disk, write_bytes_atomic

WEIGHTS = "weights.safetensors"
CONFIG = "config.json"


def save_model(directory: Path, module: torch.nn.Module, config: dict) -> dict[str, Path]:
    """Write `weights.safetensors` and `config.json` (with a "family" key) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    tmp = directory / f".{WEIGHTS}.tmp"
    with naming_full_disk(directory / WEIGHTS):
        save_file(state, tmp)
    os.replace(tmp, directory / WEIGHTS)
    write_bytes_atomic(directory / CONFIG, json.dumps(config, indent=2).encode())
    return {"weights": directory / WEIGHTS, "config": directory / CONFIG}


def read_config(path: Path) -> dict:
    """A saved model's config dict (its "family" key included)."""
    return json.loads(Path(path).read_text())


def config_fields(config: dict) -> dict:
    """The config dict without its "family" key: the fields of the family's config class."""
    return {k: v for k, v in config.items() if k != "family"}


def read_weights(weights: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The state dict stored in a safetensors file, on `device`."""
    return load_file(str(weights), device=str(device))


def load_weights(
    module: torch.nn.Module, weights: Path, device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Fill `module` with the weights of a safetensors file; the module on `device`, in eval
    mode."""
    module.load_state_dict(read_weights(weights, device))
    return module.to(device).eval()


def load_model(weights: Path, config: Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The served module of a saved model, rebuilt by the family its config names (eval mode).

    Kept for models logged before they carried their own code: their pyfunc file, run from the
    installed project, calls this. New code loads a generator: `family.load_generator(...)`."""
    from aigc_core import families  # the families import this module

    family = families.get(read_config(config).get("family"))
    return family.load_generator(weights, config, device).module
