"""A logged pyfunc carries its own code and pinned third-party requirements: it loads and
predicts in a process where this project cannot be imported, and its requirements never name
this project's distribution (an unrelated project holds that name on the public index)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from aigc_core import families
from aigc_core.models.charlstm import CharLSTM, CharLSTMConfig
from aigc_core.models.chars import build_vocab
from aigc_core.models.dcgan import DCGANConfig, Generator
from aigc_core.models.io import save_model
from aigc_core.models.transformer import TransformerConfig, TransformerLM
from aigc_core.models.vae import VAEConfig, VAEDecoder
from aigc_core.paths import Home
from aigc_core.serving.environment import PROJECT_DISTRIBUTION, model_environment
from tasks.tracking import Tracker

ROOT = Path(__file__).parents[2]
PYFUNC = ROOT / "tasks" / "pyfunc_model.py"  # the one pyfunc file: every family's models
VOCAB = build_vocab("abcdefghij .")
IMAGE_REQUEST = {"n": [3], "seed": [0]}
TEXT_REQUEST = {"prompt": ["abc"], "max_new_tokens": [5], "seed": [0]}
PINNED = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*==\d+(\.\d+)*$")  # name==version, no local label


def tiny(family: str) -> tuple[torch.nn.Module, dict, dict]:
    """A seeded tiny module of the family, its config and a request it serves."""
    torch.manual_seed(0)
    if family == "dcgan":
        cfg = DCGANConfig(z_dim=8, g_width=4, d_width=4)
        return Generator(cfg), cfg.to_dict(), IMAGE_REQUEST
    if family == "vae":
        cfg = VAEConfig(z_dim=4, width=4)
        return VAEDecoder(cfg), cfg.to_dict(), IMAGE_REQUEST
    if family == "charlstm":
        cfg = CharLSTMConfig(vocab=VOCAB, embed_dim=8, hidden=16, block_size=8)
        return CharLSTM(cfg), cfg.to_dict(), TEXT_REQUEST
    if family == "diffusion":
        from aigc_core.models.diffusion import DiffusionConfig, DiffusionModel

        cfg = DiffusionConfig(
            image_size=8, block_out_channels=(4, 8), norm_groups=4, sampling_steps=2
        )
        return DiffusionModel(cfg), cfg.to_dict(), IMAGE_REQUEST
    if family == "textvae":
        from aigc_core.models.textvae import TextVAE, TextVAEConfig

        cfg = TextVAEConfig(vocab=VOCAB, embed_dim=8, hidden=16, z_dim=4, max_len=16)
        return TextVAE(cfg), cfg.to_dict(), TEXT_REQUEST
    if family == "wavegan":
        from aigc_core.models.wavegan import Generator as WaveGenerator
        from aigc_core.models.wavegan import WaveGANConfig

        cfg = WaveGANConfig(z_dim=8, width=4, kernel=9, length=1024, sample_rate=8000)
        return WaveGenerator(cfg), cfg.to_dict(), IMAGE_REQUEST
    cfg = TransformerConfig(vocab=VOCAB, block_size=8, n_layer=1, n_head=2, n_embd=8)
    return TransformerLM(cfg), cfg.to_dict(), TEXT_REQUEST


def log_tiny_models(root: Path, names=families.BUILTIN) -> dict[str, Path]:
    """Log a tiny model of each family through the tracker into a fresh home under `root`;
    returns family -> the logged model's local folder (MLmodel, requirements.txt, code/, ...)."""
    home = Home(root / "aigc-home").ensure()
    tracker = Tracker(home)
    out = {}
    for family in names:
        module, config, request = tiny(family)
        run_id = tracker.start_run(f"env-{family}", tags={})
        artifacts = save_model(home.runs / run_id / "model", module, config)
        example = pd.DataFrame(request)
        served = families.get(family).load_generator(artifacts["weights"], artifacts["config"])
        uri = tracker.log_model(run_id, artifacts, example, served.predict(example))
        out[family] = tracker.download_model(uri, root / "models" / family).parent
    return out


# Loads each model in turn, as MLflow serving does, and prints what it predicted. The project is
# made unimportable first (its folder off sys.path, the editable install's finders removed), so
# `aigc_core` can only come from the model's own code/ folder; it is forgotten between models so
# each model proves its own.
LOAD_AND_PREDICT = r"""
import importlib.util, json, os, sys
from pathlib import Path

root = Path(sys.argv[1]).resolve()
sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != root]
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in str(f)]
sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in str(h)]
sys.path_importer_cache.clear()
assert importlib.util.find_spec("aigc_core") is None, "the project is importable"

import mlflow.pyfunc
import pandas as pd

out = {}
for family, model_dir, request in json.loads(sys.argv[2]):
    for name in [m for m in sys.modules if m.split(".")[0] == "aigc_core"]:
        del sys.modules[name]
    pred = mlflow.pyfunc.load_model(model_dir).predict(pd.DataFrame(request))
    code = (Path(model_dir) / "code").resolve()
    imported = {
        name: Path(m.__file__).resolve().is_relative_to(code)
        for name, m in sys.modules.items()
        if name.split(".")[0] == "aigc_core"
    }
    out[family] = {
        "columns": list(pred.columns),
        "rows": len(pred),
        "first": {k: str(v) for k, v in pred.iloc[0].items()},
        "imported": imported,
    }
print(json.dumps(out))
"""


def check_predictions(out: dict, models: dict[str, Path]) -> None:
    """What LOAD_AND_PREDICT printed: each family answered its request with its own code."""
    for family in models:
        got = out[family]
        if families.get(family).kind == "image":
            assert got["rows"] == 3 and "png_base64" in got["columns"]
            size = str(tiny(family)[1].get("image_size", 28))
            assert (got["first"]["height"], got["first"]["width"]) == (size, size)
        elif families.get(family).kind == "audio":
            assert got["rows"] == 3 and "wav_base64" in got["columns"]
            assert (got["first"]["num_samples"], got["first"]["sample_rate"]) == ("1024", "8000")
        elif family == "textvae":  # a sentence model may end its sentence (EOS) before 5
            assert got["rows"] == 1 and got["first"]["finish_reason"] in ("length", "eos")
            assert len(got["first"]["text"]) <= 5 and set(got["first"]["text"]) <= set(VOCAB)
        else:
            assert got["rows"] == 1 and got["first"]["finish_reason"] == "length"
            assert len(got["first"]["text"]) == 5 and set(got["first"]["text"]) <= set(VOCAB)
        assert got["imported"] and all(got["imported"].values()), got["imported"]
        assert set(got["imported"]) <= set(model_environment(PYFUNC).modules)  # it was shipped


def requests_of(models: dict[str, Path]) -> str:
    return json.dumps([[f, str(d), tiny(f)[2]] for f, d in models.items()])


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    return log_tiny_models(tmp_path_factory.mktemp("model-env"))


def test_requirements_are_pinned_third_party_packages_only():
    env = model_environment(PYFUNC)
    assert env.requirements and all(PINNED.match(r) for r in env.requirements), env.requirements
    names = {r.split("==")[0] for r in env.requirements}
    assert PROJECT_DISTRIBUTION not in names and "mlflow" not in names  # skinny serves a pyfunc
    assert {"mlflow-skinny", "torch", "safetensors", "numpy", "pandas", "pillow"} <= names
    # serving never evaluates: the evaluation stack stays out of a served model
    assert not names & {"torchmetrics", "scipy", "matplotlib", "prefect"}, names
    assert not any(m.startswith("aigc_core.evaluation.") for m in env.modules), env.modules
    assert {"aigc_core", "aigc_core.models", "aigc_core.models.io"} <= set(env.modules)
    # the family modules `aigc_core.families` imports by name ship with it
    assert {f"aigc_core.families.{n}" for n in families.BUILTIN} <= set(env.modules)
    for m in env.modules:  # every package above a shipped module ships too
        assert m.rpartition(".")[0] in (*env.modules, "")


def test_an_import_that_cannot_ship_is_refused(tmp_path):
    own = tmp_path / "own.py"
    own.write_text("def f():\n    from tasks import registry\n")
    with pytest.raises(ValueError, match="this project's own distribution"):
        model_environment(own)
    missing = tmp_path / "missing.py"
    missing.write_text("from aigc_core.no_such_module import thing\n")
    with pytest.raises(ValueError, match="has no module aigc_core.no_such_module"):
        model_environment(missing)
    unknown = tmp_path / "unknown.py"
    unknown.write_text("import not_an_installed_package_xyz\n")
    with pytest.raises(ValueError, match="no installed distribution"):
        model_environment(unknown)


def test_the_logged_model_carries_its_code_and_its_pins(models):
    env = model_environment(PYFUNC)
    for model_dir in models.values():
        assert (model_dir / "requirements.txt").read_text().split() == list(env.requirements)
        mlmodel = (model_dir / "MLmodel").read_text()
        assert re.search(r"^    code: code$", mlmodel, re.M), mlmodel
        shipped = sorted(
            ".".join(p.relative_to(model_dir / "code").with_suffix("").parts).removesuffix(
                ".__init__"
            )
            for p in (model_dir / "code").rglob("*.py")
        )
        assert shipped == list(env.modules)


def test_logged_models_load_and_predict_where_the_project_cannot_be_imported(models, tmp_path):
    p = subprocess.run(
        [sys.executable, "-I", "-c", LOAD_AND_PREDICT, str(ROOT), requests_of(models)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false", "PATH": "/usr/bin:/bin"},
    )
    assert p.returncode == 0, p.stderr[-3000:]
    check_predictions(json.loads(p.stdout.splitlines()[-1]), models)


# The pyfunc file image models were logged with before they carried code (and before one file
# served every family): MLflow copied it into each model, so those models still run it.
OLD_IMAGE_PYFUNC = """
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class ImageGenerator(PythonModel):
    def load_context(self, context):
        from aigc_core.models.io import load_model

        self.generator = load_model(context.artifacts["weights"], context.artifacts["config"])

    def generate(self, n, seed, batch_size=256, on_batch=None):
        from aigc_core.generation.images import generate_images

        return generate_images(self.generator, n, seed, batch_size=batch_size, on_batch=on_batch)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        raise NotImplementedError


set_model(ImageGenerator())
"""


def test_a_model_logged_before_it_carried_code_still_loads(home, tmp_path):
    """Versions registered earlier name `aigc-pipeline` and have no code/: where the project is
    installed they load from it, as they always did."""
    import mlflow

    tracker = Tracker(home)
    module, config, request = tiny("dcgan")
    run_id = tracker.start_run("old", tags={})
    artifacts = save_model(home.runs / run_id / "model", module, config)
    old_pyfunc = tmp_path / "image_generator.py"
    old_pyfunc.write_text(OLD_IMAGE_PYFUNC)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(old_pyfunc),
            artifacts={k: str(v) for k, v in artifacts.items()},
            pip_requirements=["torch", "aigc-pipeline"],
        )
    path = list(sys.path)
    model = tracker.load_model(info.model_uri)
    assert sys.path == path  # loading leaves this process's import path as it was
    assert model.generate(2, seed=0).shape == (2, 1, 28, 28)
