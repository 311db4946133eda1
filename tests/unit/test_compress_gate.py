"""The compressed champion's gate (`promotion.gate_compressed`) on a registry in a dict: the alias
moves only for a compression of the champion within tolerance; every other outcome moves no
alias and is recorded with its reason."""

import pytest

from aigc_core.paths import Home
from aigc_core.promotion import (
    CHAMPION,
    CHAMPION_COMPRESSED,
    RegistryError,
    gate_compressed,
    read_audit,
)
from tests.unit.test_promotion import MemoryRegistry


@pytest.fixture
def reg() -> MemoryRegistry:
    """Versions 1 (the champion) and 2 (not), and their compressed copies 3 (of 1), 4 (of 2)."""
    r = MemoryRegistry()
    for fid in (20.0, 25.0, 21.0, 26.0):
        r.add(fid)
    r.aliases[CHAMPION] = "1"
    return r


def test_a_compression_of_the_champion_within_tolerance_gets_the_alias(tmp_path, reg):
    home = Home(tmp_path)
    out = gate_compressed(
        reg, home, "m", "3", "1", True, "fid 21 within 10% of 20", actor="t", record={"bytes": 9}
    )
    assert (out.moved, out.decision, out.holder, out.previous) == (True, "accepted", "3", None)
    assert reg.aliases == {CHAMPION: "1", CHAMPION_COMPRESSED: "3"}  # the champion untouched
    tags = reg.versions["3"].tags
    assert tags["compression.decision"] == "accepted"
    assert tags["compression.reason"] == "fid 21 within 10% of 20"
    (record,) = read_audit(home, "m")
    assert record["action"] == "compress" and record["parent_version"] == "1"
    assert record["holder_after"] == "3" and record["bytes"] == 9 and record["actor"] == "t"


def test_a_refused_compression_moves_no_alias_and_says_the_numbers(tmp_path, reg):
    home = Home(tmp_path)
    reg.aliases[CHAMPION_COMPRESSED] = "3"
    reason = "fid 90 is 350% worse than the parent's 20 (tolerance 10%: at most 22)"
    out = gate_compressed(reg, home, "m", "3", "1", True, "ok")
    assert out.decision == "unchanged" and not out.moved  # already holds it
    reg.add(90.0)  # version 5, another compression of the champion, ruined
    out = gate_compressed(reg, home, "m", "5", "1", False, reason)
    assert (out.moved, out.decision, out.reason) == (False, "refused", reason)
    assert (out.holder, out.previous) == ("3", "3")
    assert reg.aliases == {CHAMPION: "1", CHAMPION_COMPRESSED: "3"}
    assert reg.versions["5"].tags["compression.decision"] == "refused"
    assert reg.versions["5"].tags["compression.previous_holder"] == "3"
    decisions = [(r["version"], r["decision"], r["reason"]) for r in read_audit(home, "m")]
    assert decisions == [("3", "unchanged", "v3 already holds champion-compressed"),
                         ("5", "refused", reason)]  # fmt: skip


def test_a_compression_of_another_version_is_kept_without_the_alias(tmp_path, reg):
    out = gate_compressed(reg, Home(tmp_path), "m", "4", "2", True, "fid 26 within 10% of 25")
    assert out.decision == "not-champion" and not out.moved and out.holder is None
    assert "parent v2 is not the champion (v1)" in out.reason and "served as m/4" in out.reason
    assert CHAMPION_COMPRESSED not in reg.aliases
    reg.aliases.pop(CHAMPION)  # no champion at all: the same
    out = gate_compressed(reg, Home(tmp_path), "m", "3", "1", True, "ok")
    assert out.decision == "not-champion" and CHAMPION_COMPRESSED not in reg.aliases


def test_an_unknown_version_or_a_bad_name_is_refused_before_anything(tmp_path, reg):
    with pytest.raises(RegistryError, match="has no version '9'"):
        gate_compressed(reg, Home(tmp_path), "m", "9", "1", True, "ok")
    with pytest.raises(ValueError):
        gate_compressed(reg, Home(tmp_path), "m", "x/1", "1", True, "ok")
    assert read_audit(Home(tmp_path)) == [] and CHAMPION_COMPRESSED not in reg.aliases
