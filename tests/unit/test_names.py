"""The one check of user-given names (aigc_core.names) and of paths built from them."""

from __future__ import annotations

import pyarrow as pa
import pytest

from aigc_core import names
from aigc_core.data.snapshot import SnapshotError, content_id, find_snapshot, write_snapshot

# every name the project makes or ships today must pass its own check
DATASETS = ["digits", "mnist", "fashion-mnist", "python-docs", "my-idx", "shop", "v1.2_final"]
MODELS = ["aigc-dcgan-digits", "aigc-transformer-python-docs", "aigc-vae-fashion-mnist"]
ALIASES = ["champion", "challenger"]

HOSTILE = [
    "../../etc",
    "/some/dir",
    "a/b",
    "a\\b",
    "..",
    ".",
    ".hidden",
    "a..b",
    "",
    " ",
    "o'reilly",
    'say"cheese',
    "*",
    "data?",
    "[abc]",
    "a b",
    "mnist\n",
    "-rf",
    "ünïcode",
    "x" * 129,
]


@pytest.mark.parametrize("name", DATASETS)
def test_every_dataset_name_in_use_passes(name):
    assert names.dataset(name) == name


@pytest.mark.parametrize("name", MODELS + [f"aigc-dcgan-{d}" for d in DATASETS])
def test_every_model_name_the_pipeline_registers_passes(name):
    assert names.model(name) == name


@pytest.mark.parametrize("name", ALIASES)
def test_the_aliases_pass(name):
    assert names.alias(name) == name


def test_dataset_names_are_case_insensitive_and_stored_in_lowercase():
    assert names.dataset("MNIST") == "mnist"
    assert names.dataset("Fashion-MNIST") == "fashion-mnist"
    assert names.dataset("MyFaces") == "myfaces"


@pytest.mark.parametrize("family", ["dcgan", "transformer"])
@pytest.mark.parametrize("dataset", DATASETS)
def test_registered_model_names_are_family_and_dataset(family, dataset):
    name = names.registered_model_name(family, dataset)
    assert name == f"aigc-{family}-{dataset}" and names.model(name) == name


@pytest.mark.parametrize(
    ("ref", "parsed"),
    [
        ("aigc-dcgan-digits", ("aigc-dcgan-digits", "champion", None)),
        (" aigc-dcgan-digits@challenger ", ("aigc-dcgan-digits", "challenger", None)),
        ("aigc-dcgan-digits/3", ("aigc-dcgan-digits", None, "3")),
    ],
)
def test_model_refs_name_an_alias_or_a_version(ref, parsed):
    assert names.parse_model_ref(ref) == parsed


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("m/latest", "a version after '/' is a number"),
        ("@champion", "expected NAME, NAME@ALIAS or NAME/VERSION"),
        ("m@", "expected NAME, NAME@ALIAS or NAME/VERSION"),
    ],
)
def test_malformed_model_refs_say_what_is_expected(ref, message):
    with pytest.raises(ValueError, match=message):
        names.parse_model_ref(ref)


def test_model_names_and_aliases_keep_their_case():
    assert names.model("aigc-dcgan-MyFaces") == "aigc-dcgan-MyFaces"  # registered before the rule
    assert names.alias("Champion") == "Champion"


def test_snapshot_ids_are_what_content_id_makes_in_either_case():
    sid = content_id(pa.table({"id": ["a", "b"], "split": ["train", "validation"]}), {})
    assert names.snapshot_id(sid) == sid
    assert names.snapshot_id(sid.upper()) == sid
    assert names.batch_id("0123456789ABCDEF") == "0123456789abcdef"


@pytest.mark.parametrize("check", [names.dataset, names.model, names.alias])
@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_names_are_refused_naming_the_input_and_the_rule(check, value):
    with pytest.raises(names.InvalidName) as e:
        check(value)
    assert isinstance(e.value, ValueError)
    assert repr(value) in str(e.value)
    assert "characters:" in str(e.value)  # the rule, in words


@pytest.mark.parametrize("value", ["x" * 65, "a" * 64 + "b"])
def test_dataset_names_are_at_most_64_characters(value):
    with pytest.raises(names.InvalidName, match="1-64 characters"):
        names.dataset(value)


@pytest.mark.parametrize("value", ["*", "?" * 16, "0123456789abcde", "0123456789abcdef0", "../x"])
def test_a_glob_or_path_is_not_a_snapshot_id(value):
    with pytest.raises(names.InvalidName, match="16 hexadecimal digits"):
        names.snapshot_id(value)


@pytest.mark.parametrize("value", [None, 3, b"mnist", ["mnist"]])
def test_non_strings_are_refused(value):
    with pytest.raises(names.InvalidName):
        names.dataset(value)


@pytest.mark.parametrize(
    "ref", ["aigc-dcgan-digits", "aigc-dcgan-digits@champion", "aigc-dcgan-digits/3"]
)
def test_model_references_pass(ref):
    assert names.model_ref(f" {ref} ") == ref


@pytest.mark.parametrize(
    "ref, needle",
    [
        ("../x@champion", "model name"),
        ("m@../champion", "alias"),
        ("m@", "alias"),
        ("m/latest", "version"),
        ("a/b/3", "model name"),
        ("o'reilly", "model name"),
    ],
)
def test_hostile_model_references_are_refused(ref, needle):
    with pytest.raises(names.InvalidName, match=needle):
        names.model_ref(ref)


def test_a_path_inside_the_root_passes(tmp_path):
    assert names.inside(tmp_path, tmp_path / "datasets" / "mnist") == tmp_path / "datasets/mnist"


@pytest.mark.parametrize("built", ["datasets/../../etc", "/some/dir", "registry/locks/../../.."])
def test_a_path_that_leaves_the_root_is_refused(tmp_path, built):
    root = tmp_path / "home"
    with pytest.raises(names.InvalidName, match="outside"):
        names.inside(root, root / built)


def test_the_root_itself_is_not_inside(tmp_path):
    with pytest.raises(names.InvalidName):
        names.inside(tmp_path, tmp_path / "datasets" / "..")


def test_a_symlink_out_of_the_root_is_refused(tmp_path):
    root = tmp_path / "home"
    (root / "datasets").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "datasets" / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(names.InvalidName, match="outside"):
        names.inside(root, root / "datasets" / "linked" / "0123456789abcdef")


def test_train_snapshot_glob_finds_nothing_even_where_a_snapshot_exists(tmp_path):
    """`aigc train --snapshot '*'` trained on whatever a glob found first: the id is a folder
    name now, never a pattern."""
    table = pa.table({"id": ["a"], "split": ["train"], "text": ["x"]})
    snap = write_snapshot(tmp_path, "shop", table, kind="text", source="t", params={})
    assert find_snapshot(tmp_path, snap.id).path == snap.path
    for pattern in ("*", "?" * 16, f"{snap.id[:-1]}?", "[0-9a-f]" * 16):
        with pytest.raises(SnapshotError, match="16 hexadecimal digits"):
            find_snapshot(tmp_path, pattern)
