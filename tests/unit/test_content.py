"""Content batches in the core (aigc_core.content): plan, shards and publishing on tiny untrained
models, without MLflow or Prefect. The registry is a `ModelVersion` and a folder of files."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from aigc_core import content
from aigc_core.atomic import sha256_file
from aigc_core.content import shard as shard_module
from aigc_core.content.schema import LINEAGE
from aigc_core.curation.policy import Policy
from aigc_core.data.snapshot import image_table, text_table, write_snapshot
from aigc_core.evaluation.classifier import Classifier, ClassifierConfig
from aigc_core.evaluation.evaluator import METRICS
from aigc_core.models.charlstm import CharLSTM, CharLSTMConfig
from aigc_core.models.dcgan import DCGANConfig, Generator
from aigc_core.models.io import CONFIG, WEIGHTS, save_model
from aigc_core.stages import ModelVersion
from tests.conftest import tiny_images

TALES = [f"the cat number {i} sat on the mat. it was happy." for i in range(40)]


class Registry:
    """Stands in for the tracker: hands out a saved model's files, counting downloads."""

    def __init__(self, folder: Path):
        self.folder, self.downloads = folder, 0

    def download(self, uri: str, dst: Path) -> Path:
        self.downloads += 1
        out = dst / "artifacts"
        out.mkdir(parents=True)
        for f in (WEIGHTS, CONFIG):
            shutil.copy(self.folder / f, out / f)
        return out


@pytest.fixture
def image_model(home, tmp_path):
    """An image snapshot, its (untrained) evaluator, and an untrained DCGAN version."""
    data = tiny_images(n=60)
    snap = write_snapshot(
        home.datasets,
        "bars",
        image_table(data),
        kind="image",
        source=data.source,
        params=data.params,
        extra={"label_set": list(range(10)), "image_shape": [1, 28, 28]},
    )
    cfg = ClassifierConfig(width=4, feature_dim=8)
    save_model(home.evaluators / snap.id, Classifier(cfg), cfg.to_dict())
    (home.evaluators / snap.id / METRICS).write_text(json.dumps({"accuracy": 0.1}))
    model_cfg = DCGANConfig(z_dim=8, g_width=4, d_width=4)
    save_model(tmp_path / "dcgan", Generator(model_cfg).eval(), model_cfg.to_dict())
    version = ModelVersion(
        "aigc-dcgan-bars", "3", "run-1", {"family": "dcgan", "snapshot_id": snap.id}
    )
    return version, Registry(tmp_path / "dcgan")


@pytest.fixture
def text_model(home, tmp_path):
    """A text snapshot and an untrained char-LSTM version over its characters."""
    snap = write_snapshot(
        home.datasets, "tales", text_table(TALES), kind="text", source="t", params={}
    )
    vocab = "".join(sorted(set("\n".join(TALES))))
    cfg = CharLSTMConfig(vocab=vocab, embed_dim=8, hidden=8, layers=1, block_size=8)
    save_model(tmp_path / "lstm", CharLSTM(cfg).eval(), cfg.to_dict())
    version = ModelVersion(
        "aigc-charlstm-tales", "1", "run-2", {"family": "charlstm", "snapshot_id": snap.id}
    )
    return version, Registry(tmp_path / "lstm")


def plan_for(home, version, registry, n=10, shards=3, seed=1, **kw):
    return content.make_plan(
        version,
        home,
        n,
        shards,
        seed,
        model_ref=version.name,
        fetch_model=lambda: content.model_files(home, version, registry.download),
        **kw,
    )


def make_all(plan, home) -> list[content.ShardResult]:
    return [content.run_shard(plan, s.index, home) for s in plan.shards]


def test_an_image_batch_is_planned_made_and_published(home, image_model):
    version, registry = image_model
    plan = plan_for(home, version, registry)
    assert plan.kind == "image" and plan.family == "dcgan" and plan.model_version == "3"
    assert [s.count for s in plan.shards] == [4, 3, 3]
    assert pickle.loads(pickle.dumps(plan)) == plan  # it travels to Dask workers
    # the batch id is the hash of the planning key image batches always had
    key = {"format": 2, "model": version.name, "version": "3", "n": 10, "shards": 3, "seed": 1}
    key["policy"] = Policy().image.to_dict()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    assert plan.batch_id == digest
    assert plan_for(home, version, registry) == plan and registry.downloads == 1

    results = make_all(plan, home)
    assert [r.skipped for r in results] == [False] * 3
    assert [r.skipped for r in make_all(plan, home)] == [True] * 3  # parts written: reused

    curated = content.curate(plan)
    batch = content.publish(plan, curated, batch_run_id="r1", flow_run_id="f1", shards_skipped=3)
    folder = Path(batch.batch_dir)
    assert folder == home.content / plan.batch_id and not Path(plan.work_dir).exists()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest == json.loads(json.dumps(batch.manifest()))
    assert "sampling" not in manifest and manifest["contact_sheet"] == "contact_sheet.png"
    assert list(manifest)[:6] == ["format_version", *LINEAGE]
    assert batch.to_dict() == {**batch.manifest(), "batch_dir": str(folder), "shards_skipped": 3}
    rows = 0
    for f in manifest["files"]:
        assert sha256_file(folder / f["path"]) == f["sha256"]
        part = pq.read_table(folder / f["path"]).to_pandas()
        assert set(part["model_version"]) == {"3"} and set(part["snapshot_id"]) == {
            version.tags["snapshot_id"]
        }
        rows += len(part)
    assert rows == batch.n_generated == 10 and batch.n_kept + batch.n_rejected == 10
    assert {p.name for p in batch.artifacts()} == {
        "manifest.json",
        "report.html",
        "contact_sheet.png",
    }

    again = content.published(plan, shards_skipped=3)
    assert again == batch  # a rerun finds the published batch
    assert [r.skipped for r in make_all(plan, home)] == [True] * 3
    params, metrics = content.run_params(plan), content.run_metrics(batch)
    assert params["model_uri"] == "models:/aigc-dcgan-bars/3" and "policy.min_confidence" in params
    assert metrics["kept_fraction"] == batch.n_kept / 10
    assert content.run_tags(plan, "f1")["aigc.stage"] == "content-batch"
    assert content.reason_rows(batch)[0] == {"reason": "kept", "items": batch.n_kept}
    assert plan.batch_id in content.summary_markdown(batch)


def test_an_image_model_refuses_prompts_before_downloading(home, image_model, tmp_path):
    version, registry = image_model
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    with pytest.raises(ValueError, match="generates images.*drop --prompt-file"):
        plan_for(home, version, registry, prompt_file=str(prompts))
    with pytest.raises(ValueError, match=r"\(temperature\)"):
        plan_for(home, version, registry, sampling={"temperature": 0.5})
    assert registry.downloads == 0


def test_versions_without_a_known_family_or_a_snapshot_are_refused(home, image_model):
    version, registry = image_model
    odd = ModelVersion(version.name, "4", "r", {"family": "wavenet", "snapshot_id": "x"})
    with pytest.raises(ValueError, match="is a 'wavenet' model; batches are built for .*dcgan"):
        plan_for(home, odd, registry)
    bare = ModelVersion(version.name, "5", "r", {"family": "dcgan"})
    with pytest.raises(LookupError, match="has no snapshot_id tag"):
        plan_for(home, bare, registry)
    # a version registered before versions had a family tag: its saved config names it
    legacy = ModelVersion(version.name, "6", "r", {"snapshot_id": version.tags["snapshot_id"]})
    assert plan_for(home, legacy, registry).family == "dcgan"


def test_a_missing_part_is_named_when_publishing(home, image_model):
    version, registry = image_model
    plan = plan_for(home, version, registry, n=4, shards=2)
    content.run_shard(plan, 0, home)
    with pytest.raises(RuntimeError, match="shard 1 of batch .* is missing or unreadable"):
        content.curate(plan)


def test_a_text_batch_with_prompts_and_sampling(home, text_model, tmp_path):
    version, registry = text_model
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the cat\nit\n")
    sampling = {"max_new_tokens": 12, "temperature": 0.8, "stop": ["."]}
    plan = plan_for(
        home, version, registry, n=5, shards=2, prompt_file=str(prompts), sampling=sampling
    )
    assert plan.kind == "text" and plan.prompts == ("the cat", "it")
    assert plan.sampling["stop"] == ["."] and plan.sampling["max_new_tokens"] == 12
    assert [plan.item_prompt(i) for i in range(3)] == ["the cat", "it", "the cat"]
    make_all(plan, home)
    batch = content.publish(plan, content.curate(plan), batch_run_id="r")
    manifest = json.loads((Path(batch.batch_dir) / "manifest.json").read_text())
    assert manifest["n_prompts"] == 2 and manifest["prompt_file"] == str(prompts)
    assert manifest["contact_sheet"] is None
    assert not (Path(batch.batch_dir) / "contact_sheet.png").exists()
    table = pq.read_table(Path(batch.batch_dir) / manifest["files"][1]["path"]).to_pandas()
    # an item is regenerated alone from its prompt and seed
    row = table.iloc[0]
    kw = dict(temperature=0.8, top_k=None, top_p=None, stop=["."])
    alone = plan.generator().generate([row["prompt"]], 12, [int(row["seed"])], **kw)
    assert alone[0][0] == row["text"]
    assert content.run_params(plan)["prompts"] == 2


def test_text_requests_the_model_cannot_read_fail_at_planning(home, text_model, tmp_path):
    version, registry = text_model
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the cat\nthe zebra ♞\n")
    with pytest.raises(ValueError, match=r"prompt 2 of .*prompts.txt.*outside the model"):
        plan_for(home, version, registry, n=2, shards=1, prompt_file=str(prompts))
    with pytest.raises(ValueError, match="stop string.*never writes it"):
        plan_for(home, version, registry, n=2, shards=1, sampling={"stop": ["♞"]})
    with pytest.raises(ValueError, match="sampling options"):
        plan_for(home, version, registry, n=2, shards=1, sampling={"nucleus": 0.5})


def test_model_files_are_downloaded_once_into_the_home(home, text_model):
    version, registry = text_model
    first = content.model_files(home, version, registry.download)
    assert first.parent == home.content / ".models" and version.run_id in first.name
    assert sorted(p.name for p in first.iterdir()) == sorted([WEIGHTS, CONFIG])
    assert content.model_files(home, version, registry.download) == first
    assert registry.downloads == 1


def test_a_failed_write_leaves_no_part_and_a_rerun_makes_it(home, text_model, monkeypatch):
    version, registry = text_model
    plan = plan_for(home, version, registry, n=4, shards=2)

    def disk_vanished(path, table):
        raise OSError("disk vanished")

    monkeypatch.setattr(shard_module, "write_part", disk_vanished)
    with pytest.raises(OSError, match="disk vanished"):
        content.run_shard(plan, 1, home)
    monkeypatch.undo()
    assert not list(Path(plan.work_dir).glob("part-*"))
    assert content.run_shard(plan, 1, home).skipped is False
