"""The audio data contract: `notes` and a clean table pass; each check, and only it, fails on a
table crafted to break it, with the severity the contract gives it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from aigc_core.data.audio import AudioData
from aigc_core.data.ingest import prepare
from aigc_core.data.snapshot import audio_table
from data_contracts import ContractViolation, validate_snapshot

RATE, LENGTH, CLASSES, PER_CLASS = 8000, 1024, 4, 20


def clips(seed: int = 0) -> AudioData:
    """CLASSES x PER_CLASS tones at -6 dBFS with a little noise: clean, distinct, balanced."""
    rng = np.random.default_rng(seed)
    t = np.arange(LENGTH) / RATE
    labels = np.repeat(np.arange(CLASSES), PER_CLASS)
    freqs = 200.0 * 2 ** (labels / 4) * (1 + rng.uniform(-0.01, 0.01, len(labels)))
    x = 0.5 * np.sin(2 * np.pi * freqs[:, None] * t) + rng.normal(0, 1e-3, (len(labels), LENGTH))
    return AudioData(
        pcm=np.rint(x * 32767).astype(np.int16),
        labels=labels.astype(np.int64),
        label_names=[f"c{i}" for i in range(CLASSES)],
        sample_rate=RATE,
        source="test",
    )


def manifest(**over) -> dict:
    m = {
        "id": "test",
        "kind": "audio",
        "sample_rate": RATE,
        "clip_samples": LENGTH,
        "label_set": list(range(CLASSES)),
    }
    return {**m, **over}


def table_of(mutate=None) -> pa.Table:
    data = clips()
    if mutate:
        mutate(data)
    return audio_table(data)


def failures(table: pa.Table, m: dict | None = None) -> dict[str, str]:
    """{guards label: severity} of every failed check (the gate raising or not)."""
    try:
        report = validate_snapshot(table, m or manifest())
    except ContractViolation as e:
        report = e.report
    return {c.guards: c.severity for c in report.checks if not c.success}


def test_a_clean_table_passes_every_check():
    report = validate_snapshot(table_of(), manifest())
    assert report.success and not report.warnings and len(report.checks) >= 15


def test_the_builtin_notes_pass_every_check():
    p = prepare("notes")
    report = validate_snapshot(p.table, p.manifest_preview())
    assert report.success and not report.warnings, [c.describe() for c in report.warnings]


def with_split(table: pa.Table, rows: list[int], split: str) -> pa.Table:
    values = table.column("split").to_pylist()
    for r in rows:
        values[r] = split
    return table.set_column(1, table.schema.field(1), pa.array(values, pa.string()))


def set_column(table: pa.Table, name: str, values) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))


def quiet(d):  # 3 clips at about -50 dBFS
    d.pcm[:3] = (d.pcm[:3] / 160).astype(np.int16)


def mostly_silent(d):  # 12 of 80 clips (15%) silent after their first 10%
    d.pcm[::7, LENGTH // 10 :] = 0


def clipped(d):  # two clips driven into full scale
    d.pcm[5:7] = np.clip(d.pcm[5:7].astype(np.int32) * 4, -32768, 32767).astype(np.int16)


def dc(d):  # a 10% DC offset on two clips
    d.pcm[9:11] = (d.pcm[9:11] // 2 + 3277).astype(np.int16)


def rare_class(d):  # class 3 keeps 1 clip of 20: 1/61 < 0.2 / 4
    keep = np.r_[np.arange(3 * PER_CLASS + 1)]
    d.pcm, d.labels = d.pcm[keep], d.labels[keep]


CASES = {
    # name: (table, manifest overrides, {guards: severity} expected to fail)
    "empty": (lambda: table_of().slice(0, 0), {}, None),
    "one split": (
        lambda: (t := table_of()).filter(pc.equal(t.column("split"), "train")),
        {},
        {"an empty train or validation split": "critical"},
    ),
    "unknown split": (
        lambda: with_split(table_of(), [0], "test"),
        {},
        {"unknown split names": "critical"},
    ),
    "missing label": (
        lambda: set_column(table_of(), "label", [None] + [0] * 79),
        {},
        None,  # also unbalances classes and empties classes 1..3
    ),
    "label out of range": (
        lambda: set_column(table_of(), "label", [7] + list(clips().labels[1:])),
        {},
        {"labels out of range": "critical", "unbalanced classes": "warning"},  # a class of 1
    ),
    "a class with no clips": (
        lambda: table_of(),
        {"label_set": list(range(CLASSES + 1))},
        {"a class with no clips": "critical"},
    ),
    "unbalanced": (lambda: table_of(rare_class), {}, {"unbalanced classes": "warning"}),
    "wrong rate": (
        lambda: set_column(table_of(), "sample_rate", [16000] + [RATE] * 79),
        {},
        {"wrong sample rate": "critical"},
    ),
    "wrong length": (
        lambda: table_of(),
        {"clip_samples": 4096},
        {"wrong clip length": "critical"},
    ),
    "quiet": (lambda: table_of(quiet), {}, {"quiet clips": "warning"}),
    "mostly silence": (lambda: table_of(mostly_silent), {}, {"mostly silence": "critical"}),
    "clipping": (lambda: table_of(clipped), {}, {"clipping": "warning"}),
    "dc offset": (lambda: table_of(dc), {}, {"DC offset": "warning"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_check_fails_on_a_table_crafted_to_break_it(case):
    make, over, expected = CASES[case]
    failed = failures(make(), manifest(**over))
    if case == "empty":
        assert failed.get("empty dataset") == "critical"
    elif case == "missing label":
        assert failed["missing labels"] == "critical"
    else:
        assert failed == expected


def test_split_leakage_and_duplicates():
    table = table_of()
    first_train = table.column("split").to_pylist().index("train")
    copy = with_split(table.slice(first_train, 1), [0], "validation")
    assert failures(pa.concat_tables([table, copy])) == {
        "train/validation overlap": "critical",
        "duplicate clips": "warning",
    }
    # one clip repeated in its own split: a warning; mostly repeats: blocked
    again = table.slice(first_train, 1)
    assert failures(pa.concat_tables([table, again])) == {"duplicate clips": "warning"}
    many = pa.concat_tables([table] + [again] * 20)
    assert failures(many) == {"duplicate ratio": "critical", "duplicate clips": "warning"}


def test_a_blocking_failure_raises_and_names_the_check():
    with pytest.raises(ContractViolation, match="mostly silence"):
        validate_snapshot(table_of(mostly_silent), manifest())
