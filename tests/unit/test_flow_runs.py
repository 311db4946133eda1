"""Flow-run names made of parameters (flows.runs)."""

from __future__ import annotations

import re

from flows import runs


def test_a_run_name_is_made_of_its_parameters_and_the_day(monkeypatch):
    monkeypatch.setattr(
        runs.flow_run, "parameters", {"family": "vae", "dataset": "my data/../x", "home": "/h"}
    )
    name = runs.name_from("nightly-{family}-{dataset}-{date}")()
    assert re.fullmatch(r"nightly-vae-my-data/\.\./x-\d{4}-\d{2}-\d{2}", name)


def test_parameters_left_out_take_their_defaults_or_none(monkeypatch):
    monkeypatch.setattr(runs.flow_run, "parameters", {})
    name = runs.name_from("nightly-{family}-{dataset}", family="dcgan")()
    assert name == "nightly-dcgan-none"


def test_outside_a_flow_run_tags_change_nothing():
    assert runs.add_tags(family="dcgan", preset=None) == ["family:dcgan"]
