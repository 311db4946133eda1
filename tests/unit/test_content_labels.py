"""Class-conditional content batches (aigc_core.content with `labels` and `options`): the plan's
id, the label pattern across shards, the wrong_class rule, the per-class counts, and the errors,
with a tiny fake conditional generator and a fake evaluator that reads the class it drew."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from aigc import preflight
from aigc_core import content, families
from aigc_core.content import plan as plan_module
from aigc_core.content import shard as shard_module
from aigc_core.content.publish import read_parts
from aigc_core.curation.images import decide_images
from aigc_core.curation.policy import ImagePolicy, Policy
from aigc_core.generation.labels import LabelsError, parse_labels
from aigc_core.generation.shards import part_name
from aigc_core.models.dcgan import DCGANConfig, Generator
from aigc_core.models.io import CONFIG, read_config, save_model
from tests.unit import test_content
from tests.unit.test_content import plan_for

image_model = test_content.image_model  # an untrained DCGAN version and its snapshot
text_model = test_content.text_model  # an untrained char-LSTM version
SIZE, CLASSES = 28, 10
ONLY_CLASS = Policy.from_dict(  # wrong_class is the only reason an item can be rejected
    {"image": {"min_confidence": None, "max_duplicate_bits": None, "min_train_distance": None}}
)


def bar_row(label: int) -> int:
    return 2 + (label * (SIZE - 4)) // CLASSES


class FakeConditional:
    """A conditional generator: class k is a one-pixel-high bar at row `bar_row(k)` over seeded
    noise; asked for a 3 it draws a 4 (so the evaluator reads every 3 as wrong)."""

    num_classes = CLASSES

    def __init__(self):
        self.calls: list[dict] = []

    def generate(self, n, seed, batch_size=256, on_batch=None, labels=None, **options):
        self.calls.append({"n": n, "seed": seed, "labels": labels, "options": options})
        if labels is None:
            labels = np.arange(n, dtype=np.int64) % self.num_classes
        assert labels.shape == (n,) and labels.dtype == np.int64
        rng = np.random.default_rng(seed)
        x = rng.uniform(0, 0.1, size=(n, 1, SIZE, SIZE)).astype(np.float32)  # (n, 1, H, W)
        for i, k in enumerate(labels):
            drawn = 4 if k == 3 else int(k)
            x[i, 0, bar_row(drawn), 2:-2] = 1.0
        return x


class FakeEvaluator:
    """Reads the class of a bar image from its brightest row."""

    def embed(self, x: torch.Tensor):
        rows = x[:, 0].mean(dim=2).numpy()  # (N, H)
        row = rows.argmax(axis=1)
        label = np.abs(np.array([bar_row(k) for k in range(CLASSES)])[None] - row[:, None])
        probs = np.full((len(x), CLASSES), 0.01 / (CLASSES - 1))
        probs[np.arange(len(x)), label.argmin(axis=1)] = 0.99
        return np.zeros((len(x), 2)), probs


@pytest.fixture
def conditional(home, image_model, monkeypatch):
    """The image fixture's version with a conditional DCGAN's files (10 classes, untrained),
    and shards reading their images with the fake evaluator."""
    version, registry = image_model
    cfg = DCGANConfig(z_dim=8, g_width=4, d_width=4, conditional=True, num_classes=CLASSES)
    save_model(registry.folder, Generator(cfg).eval(), cfg.to_dict())
    monkeypatch.setattr(
        shard_module, "load_or_train_evaluator", lambda home, snapshot_id: (FakeEvaluator(), {})
    )
    return version, registry


@pytest.fixture
def diffusion_like(monkeypatch):
    """The dcgan family as if it took a diffusion model's generation options."""
    params = {"labels": "", "guidance": -1.0, "sampling_steps": 0}
    found = dict(families.available())
    found["dcgan"] = dataclasses.replace(found["dcgan"], params_example=params)
    monkeypatch.setattr(families, "available", lambda: found)


def batch_id(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def make_all(plan, home, generator):
    return [content.run_shard(plan, s.index, home, generator) for s in plan.shards]


def publish(plan, home, generator):
    make_all(plan, home, generator)
    return content.publish(plan, content.curate(plan), class_names=[f"c{i}" for i in range(10)])


# --- the plan ---------------------------------------------------------------------------------


def test_labels_and_options_are_part_of_the_batch_id(home, conditional, diffusion_like):
    version, registry = conditional
    plain = plan_for(home, version, registry)
    # a request without labels or options keeps the id image batches always had
    key = {"format": 2, "model": version.name, "version": "3", "n": 10, "shards": 3, "seed": 1}
    key["policy"] = {"min_confidence": 0.9, "max_duplicate_bits": 2, "min_train_distance": 0.02}
    assert plain.batch_id == batch_id(key) and plain.labels == () and plain.options is None
    # so does one that turns off the class check, which has nothing to check without labels
    off = Policy.from_dict({"image": {"require_requested_class": False}})
    assert plan_for(home, version, registry, policy=off).batch_id == plain.batch_id

    sevens = plan_for(home, version, registry, labels="7")
    assert sevens.labels == (7,) and sevens.batch_id == batch_id({**key, "labels": [7]})
    assert pickle.loads(pickle.dumps(sevens)) == sevens  # it travels to Dask workers
    ids = {
        plain.batch_id,
        sevens.batch_id,
        plan_for(home, version, registry, labels="3,7").batch_id,
        plan_for(home, version, registry, labels="7,3").batch_id,
        plan_for(home, version, registry, labels="3:0.7,7:0.3").batch_id,
        plan_for(home, version, registry, labels="7", policy=off).batch_id,
        plan_for(home, version, registry, options={"guidance": 2.0}).batch_id,
        plan_for(home, version, registry, options={"guidance": 3}).batch_id,
        plan_for(home, version, registry, options={"sampling_steps": 10}).batch_id,
    }
    assert len(ids) == 9  # every different request is a different batch
    # the same request said another way is the same batch
    assert plan_for(home, version, registry, labels=[3, 7]).batch_id == (
        plan_for(home, version, registry, labels=" 3, 7").batch_id
    )
    guided = plan_for(home, version, registry, options={"guidance": 3, "sampling_steps": None})
    assert guided.options == {"guidance": 3.0}  # None: the model's default, not an option
    assert guided.batch_id == batch_id({**key, "options": {"guidance": 3.0}})
    assert plan_for(home, version, registry, labels="", options={}).batch_id == plain.batch_id
    assert registry.downloads == 1


def test_requests_the_model_cannot_honour_fail_at_planning(home, image_model, text_model):
    version, registry = image_model
    with pytest.raises(LabelsError, match=r"version 3: labels '7' asked of an unconditional"):
        plan_for(home, version, registry, labels="7")
    with pytest.raises(ValueError, match=r"dcgan model, which takes no --guidance option"):
        plan_for(home, version, registry, options={"guidance": 2.0})
    text_version, text_registry = text_model
    with pytest.raises(ValueError, match=r"generates text.*\(--labels, --top-p-ish\)"):
        plan_for(home, text_version, text_registry, labels="1", options={"top_p_ish": 1})
    assert text_registry.downloads == 0  # refused before the model's files are fetched


def test_labels_out_of_range_and_bad_options_are_named(home, conditional, diffusion_like):
    version, registry = conditional
    with pytest.raises(LabelsError, match=r"label 10 is out of range.*classes 0\.\.9"):
        plan_for(home, version, registry, labels="3,10")
    with pytest.raises(LabelsError, match=r"label 'seven' is not a class index"):
        plan_for(home, version, registry, labels="seven")
    with pytest.raises(ValueError, match=r"--sampling-steps must be an integer, got 2.5"):
        plan_for(home, version, registry, options={"sampling_steps": 2.5})
    with pytest.raises(ValueError, match=r"--guidance must be a finite number, got 'high'"):
        plan_for(home, version, registry, options={"guidance": "high"})
    with pytest.raises(ValueError, match=r"no --eta option \(its generation options: "):
        plan_for(home, version, registry, options={"eta": 0.0})


def test_option_values_the_generator_refuses_fail_at_planning(
    home, conditional, diffusion_like, monkeypatch
):
    version, registry = conditional

    class Checking(FakeConditional):
        def options(self, guidance=None, sampling_steps=None):
            if sampling_steps is not None and sampling_steps > 50:
                raise ValueError(f"sampling_steps must be in [1, 50], got {sampling_steps}")

    monkeypatch.setattr(plan_module.cache, "generator", lambda family, folder: Checking())
    with pytest.raises(ValueError, match=r"version 3: sampling_steps must be in \[1, 50\]"):
        plan_for(home, version, registry, options={"sampling_steps": 51})
    assert plan_for(home, version, registry, options={"sampling_steps": 50}).options == {
        "sampling_steps": 50
    }


# --- shards, curation, the manifest -------------------------------------------------------------


def test_the_pattern_runs_across_shard_boundaries(home, conditional):
    version, registry = conditional
    gen = FakeConditional()
    plan = plan_for(home, version, registry, n=10, shards=3, labels="3,7,7", policy=ONLY_CLASS)
    assert [s.count for s in plan.shards] == [4, 3, 3]  # boundaries off the pattern's period
    make_all(plan, home, gen)
    asked = np.concatenate([c["labels"] for c in gen.calls])
    expected = [(3, 7, 7)[i % 3] for i in range(10)]
    assert asked.tolist() == expected == [plan.item_label(i) for i in range(10)]
    assert all(c["options"] == {} for c in gen.calls)
    table = read_parts(plan)
    assert table.column("requested_label").to_pylist() == expected
    assert str(table.schema.field("requested_label").type) == "int16"


def test_wrong_class_items_are_rejected_and_counted_per_label(home, conditional):
    version, registry = conditional
    gen = FakeConditional()  # every 3 comes out as a 4
    mix = "3:0.3,7:0.7"
    plan = plan_for(home, version, registry, n=20, shards=3, labels=mix, policy=ONLY_CLASS)
    batch = publish(plan, home, gen)
    want = parse_labels(mix, CLASSES)
    assert plan.labels == want and len(want) == 100
    n3 = sum(want[i] == 3 for i in range(20))
    assert batch.labels == {"requested": {"3": n3, "7": 20 - n3}, "kept": {"3": 0, "7": 20 - n3}}
    assert batch.rejected_by_reason == {"wrong_class": n3} and batch.n_kept == 20 - n3
    folder = Path(batch.batch_dir)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["labels"] == batch.labels and "options" not in manifest
    assert content.Batch.read(folder) == batch
    rows = pd.concat(pq.read_table(folder / f["path"]).to_pandas() for f in manifest["files"])
    wrong = rows[rows["reason"] == "wrong_class"]
    assert set(wrong["requested_label"]) == {3} and set(wrong["predicted_label"]) == {4}
    assert content.run_metrics(batch)["label_3.kept"] == 0
    assert content.run_metrics(batch)["label_7.requested"] == 20 - n3
    assert content.run_params(plan)["labels"].startswith("7,3,7,")
    report = (folder / "report.html").read_text()
    assert "Classes asked" in report and "c3 (3)" in report  # per class, by name
    assert "asked c3" in report and "label c4" in report  # each card: asked and seen


def test_a_conditional_model_without_labels_asks_nothing(home, conditional):
    version, registry = conditional
    gen = FakeConditional()
    plan = plan_for(home, version, registry, n=6, shards=2, policy=ONLY_CLASS)
    batch = publish(plan, home, gen)
    assert [c["labels"] for c in gen.calls] == [None, None]  # the generator's own choice
    manifest = json.loads((Path(batch.batch_dir) / "manifest.json").read_text())
    assert "labels" not in manifest and batch.labels is None
    assert batch.rejected_by_reason == {}  # its 3s drawn as 4s: not asked, not checked
    assert "Classes asked" not in (Path(batch.batch_dir) / "report.html").read_text()


def test_options_reach_the_generator_and_the_manifest(home, conditional, diffusion_like):
    version, registry = conditional
    gen = FakeConditional()
    options = {"guidance": 2, "sampling_steps": 5}
    plan = plan_for(home, version, registry, n=4, shards=2, options=options)
    batch = publish(plan, home, gen)
    assert [c["options"] for c in gen.calls] == [{"guidance": 2.0, "sampling_steps": 5}] * 2
    assert batch.options == {"guidance": 2.0, "sampling_steps": 5}
    params = content.run_params(plan)
    assert params["options.guidance"] == 2.0 and "labels" not in params


def test_a_part_written_before_requested_labels_is_read_as_asking_none(home, conditional):
    version, registry = conditional
    plan = plan_for(home, version, registry, n=6, shards=2)
    make_all(plan, home, FakeConditional())
    first = Path(plan.work_dir) / part_name(0)
    old = pq.read_table(first).drop_columns(["requested_label"])
    pq.write_table(old, first)
    assert read_parts(plan).column("requested_label").null_count == 6
    assert content.curate(plan).labels is None


# --- the decision alone ---------------------------------------------------------------------


def test_decide_images_checks_the_requested_class_only_where_one_was_asked():
    scores = pd.DataFrame(
        {
            "confidence": [0.99] * 4,
            "phash": np.arange(4, dtype=np.int64) * 0x0F0F0F0F,
            "train_distance": [0.5] * 4,
            "predicted_label": np.array([7, 4, 4, 7], np.int16),
            "requested_label": [7, 3, None, None],  # null: nothing asked
        }
    )
    policy = ImagePolicy(max_duplicate_bits=None)
    assert decide_images(scores, policy)["reason"].tolist() == ["", "wrong_class", "", ""]
    off = ImagePolicy(max_duplicate_bits=None, require_requested_class=False)
    assert decide_images(scores, off)["kept"].all()
    # a table without the column (a batch of an unconditional model) is unaffected
    assert decide_images(scores.drop(columns="requested_label"), policy)["kept"].all()


def test_the_class_switch_is_in_the_policy_dict_only_when_off():
    assert "require_requested_class" not in ImagePolicy().to_dict()
    off = Policy.from_dict({"image": {"require_requested_class": False}})
    assert off.image.to_dict()["require_requested_class"] is False
    assert Policy.from_dict(off.to_dict()) == off
    with pytest.raises(ValueError, match="require_requested_class"):
        Policy.from_dict({"image": {"require_requested_class": "yes"}})


# --- the command line's checks ----------------------------------------------------------------


def test_preflight_checks_the_labels_spec_and_file(tmp_path):
    assert preflight.labels(None, None) is None
    assert preflight.labels("3:0.7,7:0.3", None) == "3:0.7,7:0.3"
    with pytest.raises(ValueError, match="either --labels or --labels-file"):
        preflight.labels("7", tmp_path / "x")
    with pytest.raises(LabelsError, match=r"--labels: label 'x' is not a class index"):
        preflight.labels("3,x", None)
    with pytest.raises(LabelsError, match=r"--labels: empty"):
        preflight.labels(" ", None)
    with pytest.raises(LabelsError, match=r"weight 'a' is not a number"):
        preflight.labels("3:a", None)
    with pytest.raises(ValueError, match=r"--labels-file .*missing.txt: no such file"):
        preflight.labels(None, tmp_path / "missing.txt")
    f = tmp_path / "labels.txt"
    f.write_text("# which classes\n3\n7\n")
    assert preflight.labels(None, f) is None  # the flow reads the file
    f.write_text("3\n-1\n")
    with pytest.raises(LabelsError, match=r"--labels-file .*labels.txt: label -1 is out of range"):
        preflight.labels(None, f)


def test_preflight_checks_generation_options():
    preflight.generation_options(None, None)
    preflight.generation_options(0.0, 1)
    with pytest.raises(ValueError, match=r"--guidance must be a finite number >= 0, got -1"):
        preflight.generation_options(-1.0, None)
    with pytest.raises(ValueError, match=r"--guidance .* got nan"):
        preflight.generation_options(float("nan"), None)
    with pytest.raises(ValueError, match=r"--sampling-steps must be >= 1, got 0"):
        preflight.generation_options(None, 0)


def test_a_saved_config_without_num_classes_is_unconditional(home, image_model):
    version, registry = image_model
    config = registry.folder / CONFIG
    saved = read_config(config)
    assert saved.get("num_classes", 0) == 0
    config.write_text(json.dumps({k: v for k, v in saved.items() if k != "num_classes"}))
    with pytest.raises(LabelsError, match="unconditional"):
        plan_for(home, version, registry, labels=[1])
    assert plan_for(home, version, registry).labels == ()
