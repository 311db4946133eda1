"""Audio content batches in the core (aigc_core.content): plan, shards and publishing of a batch
of kind "audio" from a tiny untrained WaveGAN, without MLflow or Prefect.

The audio snapshot is ingested (`data.ingest.prepare` / `publish`) from a folder of sine WAVs the
test writes; its evaluator is an untrained `AudioClassifier` saved where the pipeline trains one.
The family is the project's `wavegan` family when `aigc_core/families/wavegan.py` exists, else a
minimal local `Family` of kind "audio" around `generation.audio.load_generator`."""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile

from aigc_core import content, families
from aigc_core.audio import to_pcm16, to_wav_bytes
from aigc_core.content.shard import wav_files
from aigc_core.curation.policy import AudioPolicy, ImagePolicy, Policy
from aigc_core.data import ingest
from aigc_core.data.snapshot import image_table, write_snapshot
from aigc_core.evaluation.audio_eval import AudioClassifier, AudioClassifierConfig
from aigc_core.evaluation.classifier import Classifier, ClassifierConfig
from aigc_core.evaluation.evaluator import METRICS
from aigc_core.generation.labels import LabelsError
from aigc_core.models.dcgan import DCGANConfig
from aigc_core.models.dcgan import Generator as DCGANGenerator
from aigc_core.models.io import save_model
from aigc_core.models.wavegan import Generator, WaveGANConfig
from aigc_core.stages import ModelVersion
from tests.conftest import tiny_images
from tests.unit.test_content import Registry

SR, L = 8000, 1024
TONES = {"low": 300.0, "high": 600.0}  # class folder -> pitch (Hz)


def tiny_wavegan(sample_rate: int = SR, conditional: bool = False) -> WaveGANConfig:
    return WaveGANConfig(
        z_dim=8,
        width=4,
        length=L,
        kernel=9,
        sample_rate=sample_rate,
        conditional=conditional,
        num_classes=len(TONES) if conditional else 0,
    )


def local_family():
    """A minimal audio family: what a content batch asks of one (kind, load_generator)."""
    from aigc_core.families.base import Family, Preset
    from aigc_core.generation.audio import load_generator
    from aigc_core.models.io import config_fields, read_config
    from aigc_core.promotion import GatePolicy

    def unused(*args, **kwargs):
        raise AssertionError("content batches do not train or evaluate")

    return Family(
        name="wavegan",
        kind="audio",
        presets={"smoke": Preset(tiny_wavegan(), None)},
        model_config=lambda d: WaveGANConfig(**config_fields(d)),
        train_config=dict,
        build_job=unused,
        served_module=unused,
        load_generator=lambda w, c, device="cpu": load_generator(w, read_config(c), device),
        evaluate=unused,
        policy=GatePolicy(metric="fad"),
        input_example={"n": [1], "seed": [0]},
        params_example={"labels": ""},
    )


@pytest.fixture
def wavegan_family(monkeypatch):
    """The `wavegan` family: the project's when it has one, else `local_family()`."""
    if "wavegan" in families.available():
        return families.get("wavegan")
    from aigc_core.families import base

    if "audio" not in base.KINDS:
        monkeypatch.setattr(base, "KINDS", (*base.KINDS, "audio"))
    family = local_family()
    known = {**families.available(), "wavegan": family}
    monkeypatch.setattr(families, "available", lambda: known)
    return family


def write_tones(folder: Path, per_class: int = 10) -> None:
    """Sine tones in class subfolders, each a little detuned and at its own level."""
    t = np.arange(int(0.2 * SR)) / SR
    for name, hz in TONES.items():
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            x = (0.3 + 0.04 * i) * np.sin(2 * np.pi * hz * (1 + 0.003 * i) * t + i)
            soundfile.write(folder / name / f"{i}.wav", x.astype(np.float32), SR, subtype="PCM_16")


@pytest.fixture
def audio_snapshot(home, tmp_path):
    write_tones(tmp_path / "tones")
    prepared = ingest.prepare(
        "tones", path=tmp_path / "tones", kind="audio", sample_rate=SR, clip_samples=L
    )
    snap = ingest.publish(prepared, home.datasets)
    cfg = AudioClassifierConfig(num_classes=len(TONES), sample_rate=SR, length=L, width=2)
    save_model(home.evaluators / snap.id, AudioClassifier(cfg).eval(), cfg.to_dict())
    (home.evaluators / snap.id / METRICS).write_text(json.dumps({"accuracy": 0.5}))
    return snap


def audio_version(home, tmp_path, snap, cfg: WaveGANConfig, version: str = "1"):
    folder = tmp_path / f"wavegan-{version}"
    save_model(folder, Generator(cfg).eval(), cfg.to_dict())
    tags = {"family": "wavegan", "snapshot_id": snap.id}
    return ModelVersion("aigc-wavegan-tones", version, f"run-{version}", tags), Registry(folder)


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


def make_all(plan, home, generator=None):
    return [content.run_shard(plan, s.index, home, generator) for s in plan.shards]


def read_batch(batch) -> list[dict]:
    folder = Path(batch.batch_dir)
    return [r for f in batch.files for r in pq.read_table(folder / f["path"]).to_pylist()]


def test_an_audio_batch_is_planned_made_and_published(
    home, tmp_path, audio_snapshot, wavegan_family
):
    version, registry = audio_version(home, tmp_path, audio_snapshot, tiny_wavegan())
    plan = plan_for(home, version, registry)
    assert plan.kind == "audio" and plan.family == "wavegan" and plan.labels == ()
    assert list(plan.policy) == ["audio"]  # only the audio section: the id hashes it alone
    assert pickle.loads(pickle.dumps(plan)) == plan  # it travels to Dask workers
    key = {"format": 2, "model": version.name, "version": "1", "n": 10, "shards": 3, "seed": 1}
    key |= {"kind": "audio", "policy": AudioPolicy().to_dict()}
    assert (
        plan.batch_id == hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    )
    strict = Policy(audio=AudioPolicy(min_confidence=0.5))
    assert plan_for(home, version, registry, policy=strict).batch_id != plan.batch_id

    assert [r.skipped for r in make_all(plan, home)] == [False] * 3
    batch = content.publish(plan, content.curate(plan), batch_run_id="r1", flow_run_id="f1")
    manifest = json.loads((Path(batch.batch_dir) / "manifest.json").read_text())
    assert manifest["kind"] == "audio" and manifest["sample_rate"] == SR
    assert manifest["contact_sheet"] is None and "sampling" not in manifest
    assert "labels" not in manifest  # no class was asked
    predicted = manifest["predicted_labels"]  # what the evaluator heard, per class
    assert sum(predicted["generated"].values()) == 10 and sum(predicted["kept"].values()) == 0
    assert set(predicted["generated"]) <= {"0", "1"}
    assert sum(manifest["rejected_by_reason"].values()) >= batch.n_rejected
    rows = read_batch(batch)
    assert [r["index"] for r in rows] == list(range(10))
    assert {r["model_version"] for r in rows} == {"1"}
    assert {r["snapshot_id"] for r in rows} == {audio_snapshot.id}
    assert all(r["requested_label"] is None for r in rows)
    # every item is a 16-bit WAV of the generator's clip, drawn from its shard's seed
    gen = plan.generator()
    for s in plan.shards:
        want = to_pcm16(gen.generate(s.count, s.seed))
        for j, r in enumerate(rows[s.start : s.stop]):
            clip, rate = soundfile.read(io.BytesIO(r["wav"]), dtype="int16")
            assert rate == SR and soundfile.info(io.BytesIO(r["wav"])).subtype == "PCM_16"
            np.testing.assert_array_equal(clip, want[j])
            assert r["seed"] == s.seed
    for r in rows:
        assert 0 <= r["confidence"] <= 1 and 0 <= r["silence_fraction"] <= 1
        assert len(r["fingerprint"]) == 64 and r["nearest_train_id"]
        assert r["kept"] == (r["reason"] == "")
    # an untrained evaluator is never sure: every clip is low_confidence
    assert batch.rejected_by_reason.get("low_confidence<0.9") == 10
    # the report plays and shows every clip
    html = (Path(batch.batch_dir) / "report.html").read_text()
    assert html.count("<audio controls") == 10
    assert html.count("data:audio/wav;base64,") == 10
    assert html.count('alt="spectrogram of ') == 10
    assert {p.name for p in batch.artifacts()} == {"manifest.json", "report.html"}


def test_an_audio_report_shows_at_most_audio_cards_per_tab(
    home, tmp_path, audio_snapshot, wavegan_family, monkeypatch
):
    publishing = importlib.import_module("aigc_core.content.publish")  # not the function
    monkeypatch.setattr(publishing, "AUDIO_CARDS", 4)
    version, registry = audio_version(home, tmp_path, audio_snapshot, tiny_wavegan())
    plan = plan_for(home, version, registry, n=9, shards=1)
    make_all(plan, home)
    batch = content.publish(plan, content.curate(plan))
    assert batch.n_rejected == 9  # an untrained evaluator: all low_confidence
    html = (Path(batch.batch_dir) / "report.html").read_text()
    assert html.count("<audio controls") == 4 == html.count('alt="spectrogram of ')
    assert "(first 4 of 9)" in html
    assert len(read_batch(batch)) == 9  # the batch keeps every clip; the report shows some


class FixedClips:
    """Stands in for a generator: every shard gets the same clips, in order: a copy of a
    training clip, silence, then a tone twice."""

    sample_rate, length, num_classes = SR, L, 0

    def __init__(self, train_clip: np.ndarray):
        t = np.arange(L) / SR
        tone = 0.5 * np.sin(2 * np.pi * 1000.0 * t)
        self.clips = np.stack([train_clip / 32768.0, np.zeros(L), tone, tone]).astype(np.float32)
        self.calls = 0

    def generate(self, n, seed, **kw):
        self.calls += 1
        return self.clips[np.arange(n) % len(self.clips)]


def test_silence_copies_and_near_duplicates_across_shards_are_rejected(
    home, tmp_path, audio_snapshot, wavegan_family
):
    from aigc_core.data.snapshot import pcm_values, read_table

    table = read_table(audio_snapshot)
    train = table.filter(np.asarray(table.column("split").to_pylist()) == "train")
    first_id = train.column("id")[0].as_py()
    fixed = FixedClips(pcm_values(train.column("pcm"))[0].astype(np.float32))
    version, registry = audio_version(home, tmp_path, audio_snapshot, tiny_wavegan())
    policy = Policy(audio=AudioPolicy(min_confidence=None))
    plan = plan_for(home, version, registry, n=8, shards=2, policy=policy)  # shards of 4
    make_all(plan, home, fixed)
    assert fixed.calls == 2  # once per shard: clips are made and scored a shard at a time
    batch = content.publish(plan, content.curate(plan))
    rows = read_batch(batch)
    reasons = [set(r["reason"].split(";")) - {""} for r in rows]
    assert rows[0]["nearest_train_id"] == first_id and rows[0]["train_similarity"] > 0.999
    assert "memorized>0.998" in reasons[0] and "silent>0.5" in reasons[1]
    assert reasons[2] == set() and rows[2]["kept"]  # the first tone
    assert reasons[3] == {"duplicate"} and rows[3]["duplicate_of"] == 2
    # the second shard repeats the first: each of its clips is a duplicate of one in shard 0
    assert [r["duplicate_of"] for r in rows[4:]] == [0, 1, 2, 2]
    assert all("duplicate" in r for r in reasons[4:])
    assert batch.n_kept == 1 and batch.rejected_by_reason["duplicate"] == 5
    kept_class = str(rows[2]["predicted_label"])
    assert batch.predicted_labels["kept"] == {
        k: int(k == kept_class) for k in batch.predicted_labels["generated"]
    }


def test_a_conditional_audio_model_is_asked_for_classes(
    home, tmp_path, audio_snapshot, wavegan_family
):
    cfg = tiny_wavegan(conditional=True)
    version, registry = audio_version(home, tmp_path, audio_snapshot, cfg)
    plan = plan_for(home, version, registry, n=6, shards=2, labels="1")
    assert plan.labels == (1,)
    make_all(plan, home)
    curated = content.curate(plan)
    batch = content.publish(plan, curated, class_names=["high", "low"])
    rows = read_batch(batch)
    assert [r["requested_label"] for r in rows] == [1] * 6
    assert batch.labels["requested"] == {"1": 6}
    # the clips are the generator's for class 1
    gen = plan.generator()
    want = to_pcm16(gen.generate(3, plan.shards[0].seed, labels=np.ones(3, np.int64)))
    got = soundfile.read(io.BytesIO(rows[0]["wav"]), dtype="int16")[0]
    np.testing.assert_array_equal(got, want[0])
    wrong = [r for r in rows if r["predicted_label"] != 1]
    assert all("wrong_class" in r["reason"] for r in wrong)
    html = (Path(batch.batch_dir) / "report.html").read_text()
    assert "asked low" in html  # the class asked, by the snapshot's name for it
    with pytest.raises(LabelsError, match="3"):  # a class the model does not have
        plan_for(home, version, registry, labels="3")


def test_audio_requests_the_model_cannot_serve_fail_at_planning(
    home, tmp_path, audio_snapshot, wavegan_family
):
    version, registry = audio_version(home, tmp_path, audio_snapshot, tiny_wavegan())
    with pytest.raises(LabelsError):  # an unconditional model takes no labels
        plan_for(home, version, registry, labels="1")
    with pytest.raises(ValueError, match=r"generates audio, and prompts"):
        plan_for(home, version, registry, sampling={"temperature": 0.5})
    with pytest.raises(ValueError, match=r"takes no --guidance"):
        plan_for(home, version, registry, options={"guidance": 2.0})
    other, other_registry = audio_version(
        home, tmp_path, audio_snapshot, tiny_wavegan(sample_rate=16000), version="2"
    )
    with pytest.raises(ValueError, match=r"at 16000 Hz but its snapshot .* at 8000 Hz"):
        plan_for(home, other, other_registry)


def test_wav_files_are_the_files_soundfile_writes():
    rng = np.random.default_rng(0)
    clips = rng.uniform(-1.2, 1.2, size=(5, 64)).astype(np.float32)  # some beyond full scale
    files = wav_files(clips, SR).to_pylist()
    assert files == [to_wav_bytes(c, SR) for c in clips]


def test_the_audio_policy_section_leaves_image_batch_ids_unchanged(home, tmp_path):
    """Moving AudioPolicy into the policy file: an image batch hashes only its own section."""
    data = tiny_images(n=30)
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
    (home.evaluators / snap.id / "metrics.json").write_text(json.dumps({"accuracy": 0.1}))
    model_cfg = DCGANConfig(z_dim=8, g_width=4, d_width=4)
    save_model(tmp_path / "dcgan", DCGANGenerator(model_cfg).eval(), model_cfg.to_dict())
    version = ModelVersion(
        "aigc-dcgan-bars", "3", "run-1", {"family": "dcgan", "snapshot_id": snap.id}
    )
    registry = Registry(tmp_path / "dcgan")
    plan = plan_for(home, version, registry)
    key = {"format": 2, "model": version.name, "version": "3", "n": 10, "shards": 3, "seed": 1}
    key["policy"] = ImagePolicy().to_dict()
    assert (
        plan.batch_id == hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    )
    audio_changed = Policy(audio=AudioPolicy(min_confidence=0.1, max_duplicate_bits=0))
    assert plan_for(home, version, registry, policy=audio_changed).batch_id == plan.batch_id


def test_the_policy_file_has_an_audio_section(tmp_path):
    from aigc_core.curation.policy import PolicyError, load_policy

    f = tmp_path / "policy.yaml"
    f.write_text("audio:\n  min_confidence: 0.5\n  max_train_similarity: null\n")
    policy = load_policy(f)
    assert policy.audio == AudioPolicy(min_confidence=0.5, max_train_similarity=None)
    assert policy.image == ImagePolicy()  # the other sections keep their defaults
    assert set(Policy.json_schema()["properties"]) == {"image", "text", "audio"}
    f.write_text("audio:\n  max_duplicate_bits: 300\n")  # more bits than a fingerprint has
    with pytest.raises(PolicyError, match=r"audio\.max_duplicate_bits.*256"):
        load_policy(f)
    f.write_text("audio:\n  max_silence: 0.1\n")  # a typo must not turn a scorer off
    with pytest.raises(PolicyError, match=r"unknown audio threshold.*max_silence"):
        load_policy(f)
