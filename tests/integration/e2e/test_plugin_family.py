"""A user's own model family, in its own package, runs the whole nightly path: no fork.

The test writes a tiny installable package holding one family in one file (a two-layer MLP
image generator trained adversarially against a two-layer MLP critic), installs it with pip into
a folder of its own (the `aigc.families` entry point in its metadata), and runs the `aigc`
command as a user would with that folder on the path: the family is listed, trained, evaluated,
registered, promoted, and a curated batch is generated from it. No file of this project changes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[3]

PLUGIN = '''
"""aigc_mlp: a two-layer MLP image generator as an aigc model family (one file)."""

from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from aigc_core.families import images
from aigc_core.families.base import Family, Preset


@dataclass(frozen=True)
class MLPConfig:
    z_dim: int = 16
    hidden: int = 64
    channels: int = 1
    image_size: int = 28

    def to_dict(self) -> dict:
        return {"family": "mlp", **asdict(self)}


@dataclass(frozen=True)
class MLPTrainConfig:
    steps: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    log_every: int = 10
    checkpoint_every: int = 0
    seed: int = 0

    @property
    def total_steps(self) -> int:
        return self.steps

    def to_dict(self) -> dict:
        return asdict(self)


class MLPGenerator(nn.Module):
    def __init__(self, cfg: MLPConfig):
        super().__init__()
        self.cfg = cfg
        out = cfg.channels * cfg.image_size**2
        self.net = nn.Sequential(
            nn.Linear(cfg.z_dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, out), nn.Tanh()
        )

    def forward(self, z):  # (B, z) -> (B, C, H, W) in [-1, 1]
        c, s = self.cfg.channels, self.cfg.image_size
        return self.net(z).view(-1, c, s, s)


class MLPJob:
    def __init__(self, data, model_cfg, train_cfg, device):
        self.cfg, self.train_cfg = model_cfg, train_cfg
        self.data = data.need("images", "mlp").to(device) * 2 - 1  # (N, C, H, W)
        self.generator = MLPGenerator(model_cfg).to(device)
        pixels = model_cfg.channels * model_cfg.image_size**2
        self.critic = nn.Sequential(
            nn.Flatten(), nn.Linear(pixels, model_cfg.hidden), nn.LeakyReLU(0.2),
            nn.Linear(model_cfg.hidden, 1),
        ).to(device)
        self.modules = {"generator": self.generator, "critic": self.critic}
        self.optimizers = {
            k: torch.optim.Adam(m.parameters(), lr=train_cfg.lr, betas=(0.5, 0.999))
            for k, m in self.modules.items()
        }
        self.rng = torch.Generator().manual_seed(train_cfg.seed)
        self.samples_per_step = train_cfg.batch_size
        self.device = device

    def train_step(self, step):
        b = self.train_cfg.batch_size
        idx = torch.randint(len(self.data), (b,), generator=self.rng)
        z = torch.randn(b, self.cfg.z_dim, generator=self.rng).to(self.device)
        bce = nn.functional.binary_cross_entropy_with_logits
        fake = self.generator(z)
        real_logits = self.critic(self.data[idx.to(self.device)])
        fake_logits = self.critic(fake.detach())
        loss_d = bce(real_logits, torch.ones_like(real_logits)) + bce(
            fake_logits, torch.zeros_like(fake_logits)
        )
        self.optimizers["critic"].zero_grad()
        loss_d.backward()
        self.optimizers["critic"].step()
        logits = self.critic(fake)
        loss_g = bce(logits, torch.ones_like(logits))
        self.optimizers["generator"].zero_grad()
        loss_g.backward()
        self.optimizers["generator"].step()
        return {"loss_g": loss_g.detach(), "loss_d": loss_d.detach()}

    def evaluate(self):
        return {}


def model_config(config: dict) -> MLPConfig:
    return MLPConfig(**{k: v for k, v in config.items() if k != "family"})


def train_config(config: dict) -> MLPTrainConfig:
    return MLPTrainConfig(**config)


def build_job(model_cfg, train_cfg, data, device):
    return MLPJob(data, model_cfg, train_cfg, device)


def served_module(job):
    return job.generator


def prepare(model_cfg, data):
    """The image shape comes from the snapshot."""
    c, s = data.need("images", "mlp").shape[1:3]
    return replace(model_cfg, channels=int(c), image_size=int(s))


load_generator = images.generator_loader(MLPGenerator, model_config)

FAMILY = Family(
    name="mlp",
    kind="image",
    presets={"smoke": Preset(MLPConfig(), MLPTrainConfig())},
    model_config=model_config,
    train_config=train_config,
    build_job=build_job,
    served_module=served_module,
    load_generator=load_generator,
    evaluate=images.evaluator(load_generator),
    policy=images.GATE,
    input_example=images.INPUT_EXAMPLE,
    final_metrics={"final_loss_g": "loss_g", "final_loss_d": "loss_d"},
    prepare=prepare,
    description="two-layer MLP generator (a plugin)",
)
'''

PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "aigc-mlp-family"
version = "0.1.0"

[tool.setuptools]
py-modules = ["aigc_mlp"]

[project.entry-points."aigc.families"]
mlp = "aigc_mlp:FAMILY"
"""


def _project_state() -> str:
    """What git sees of this project's files (empty where it is not a git checkout)."""
    p = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return p.stdout if p.returncode == 0 else ""


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The plugin package, installed by pip into a folder of its own."""
    src = tmp_path_factory.mktemp("plugin-src")
    (src / "aigc_mlp.py").write_text(textwrap.dedent(PLUGIN))
    (src / "pyproject.toml").write_text(PYPROJECT)
    site = tmp_path_factory.mktemp("plugin-site")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    p = subprocess.run(
        [*pip, "--no-deps", "--no-build-isolation", "--target", str(site), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert list(site.glob("aigc_mlp_family-*.dist-info/entry_points.txt"))
    return site


def aigc(*args: str, site: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "AIGC_"))
    }
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [sys.executable, "-m", "aigc", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def test_families_lists_the_plugin_beside_the_builtins(plugin_site):
    p = aigc("families", "--json", site=plugin_site, timeout=120)
    assert p.returncode == 0, p.stderr
    listed = {f["name"]: f for f in json.loads(p.stdout)}
    assert list(listed)[:4] == ["dcgan", "vae", "charlstm", "transformer"]
    assert listed["mlp"]["kind"] == "image"
    assert listed["mlp"]["primary_metric"] == "fid"
    assert set(listed["mlp"]["presets"]) == {"smoke"}


@pytest.mark.slow
def test_a_plugin_family_runs_the_nightly_path(plugin_site, tmp_path):
    before = _project_state()
    home = tmp_path / "home"
    p = aigc(
        "run",
        "--preset",
        "smoke",
        "--model",
        "mlp",
        "--n",
        "32",
        "--json",
        "--home",
        str(home),
        site=plugin_site,
    )
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["model_name"] == "aigc-mlp-digits"
    assert summary["model_version"] == "1"
    assert summary["promoted"] is True, summary["promotion_reason"]  # gated on FID like a DCGAN
    assert summary["fid"] > summary["fid_floor"] > 0
    assert summary["batch_kind"] == "image"
    assert summary["n_generated"] == 32
    manifest = json.loads((Path(summary["batch_dir"]) / "manifest.json").read_text())
    assert manifest["family"] == "mlp" and manifest["model_version"] == "1"
    assert manifest["n_kept"] + manifest["n_rejected"] == 32
    # the registry holds it like a built-in's: champion alias, lineage tags
    listed = aigc("models", "--json", "--home", str(home), site=plugin_site, timeout=120)
    assert listed.returncode == 0, listed.stderr
    (model,) = [m for m in json.loads(listed.stdout) if m["name"] == "aigc-mlp-digits"]
    assert model["aliases"]["champion"] == "1"
    assert model["versions"][0]["tags"]["aigc.family"] == "mlp"
    assert _project_state() == before  # nothing of this project was written or changed
