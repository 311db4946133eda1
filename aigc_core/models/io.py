"""Save and rebuild models: safetensors weights plus a JSON config. Nothing is pickled."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from aigc_core.atomic import naming_full_disk, write_bytes_atomic
from aigc_core.evaluation.classifier import Classifier, ClassifierConfig
from aigc_core.models.charlstm import CharLSTM, CharLSTMConfig
from aigc_core.models.dcgan import DCGANConfig, Generator
from aigc_core.models.transformer import TransformerConfig, TransformerLM
from aigc_core.models.vae import VAEConfig, VAEDecoder

WEIGHTS = "weights.safetensors"
CONFIG = "config.json"

# config["family"] -> (config dataclass, module class built from it). Image families save their
# generator only (the VAE its decoder): the part that is served, (B, z) -> images in [-1, 1].
_FAMILIES = {
    "dcgan": (DCGANConfig, Generator),
    "vae": (VAEConfig, VAEDecoder),
    "charlstm": (CharLSTMConfig, CharLSTM),
    "transformer": (TransformerConfig, TransformerLM),
    "classifier": (ClassifierConfig, Classifier),
}


def config_from_dict(config: dict):
    """The config dataclass named by config["family"], rebuilt from a saved dict."""
    cfg = dict(config)
    family = cfg.pop("family", None)
    if family not in _FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {sorted(_FAMILIES)}")
    return _FAMILIES[family][0](**cfg)


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


def load_model(weights: Path, config: Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the module named by the config's family and load its weights (eval mode)."""
    cfg = json.loads(Path(config).read_text())
    family = cfg.get("family")
    if family not in _FAMILIES:
        raise ValueError(f"{config}: unknown model family {family!r}; known: {sorted(_FAMILIES)}")
    module = _FAMILIES[family][1](config_from_dict(cfg))
    module.load_state_dict(load_file(str(weights), device=str(device)))
    return module.to(device).eval()
