"""The logged text VAE interpolates as `mlflow models serve` runs it (issue 16): its signature
declares `interpolate_to` and `steps` (typed defaults that mean "not asked"), MLflow fills them in
where a request leaves them out, and a request with them answers the path `interpolate` decodes;
a bad one is MLflow's invalid-parameter error (the server's 400)."""

from __future__ import annotations

import sys

import mlflow.pyfunc
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from aigc_core import families
from aigc_core.models.io import save_model
from aigc_core.paths import Home
from tasks.tracking import Tracker
from tests.integration.test_model_requirements import tiny

A, B = "abc dej.", "a bad hice."


def test_the_logged_text_vae_answers_an_interpolation_request(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_model puts the model's code/ first
    family = families.get("textvae")
    tracker = Tracker(Home(tmp_path / "aigc-home").ensure())
    module, config, _ = tiny("textvae")
    run_id = tracker.start_run("textvae-pyfunc", tags={})
    artifacts = save_model(tmp_path / "saved", module, config)
    generator = family.load_generator(artifacts["weights"], artifacts["config"])
    example = pd.DataFrame({"prompt": ["abc"]})  # the tiny vocabulary has no "T"
    uri = tracker.log_model(
        run_id,
        artifacts,
        example,
        generator.predict(example, dict(family.params_example)),
        family.params_example,
    )
    model = mlflow.pyfunc.load_model(str(tracker.download_model(uri, tmp_path / "model").parent))

    declared = {p.name: p.default for p in model.metadata.get_params_schema().params}
    assert declared["interpolate_to"] == "" and declared["steps"] == 0
    path = model.predict(
        pd.DataFrame({"prompt": [A]}),
        params={"interpolate_to": B, "steps": 3, "temperature": 0.0},
    )
    assert path["step"].tolist() == [0, 1, 2]
    assert list(zip(path["text"], path["finish_reason"], strict=True)) == generator.interpolate(
        A, B, 3
    )
    plain = model.predict(pd.DataFrame({"prompt": ["abc"]}), params={"max_new_tokens": 5})
    assert len(plain) == 1 and "step" not in plain.columns  # the defaults ask for no path
    with pytest.raises(MlflowException, match=r"steps in params must lie in \[2, 256\]"):
        model.predict(pd.DataFrame({"prompt": [A]}), params={"interpolate_to": B, "steps": 1})
