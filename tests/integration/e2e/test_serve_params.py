"""A text champion's sampling options are its pyfunc's params: registered through the register
task, its signature holds a params schema, and both MLflow's `predict(..., params=)` and
`mlflow models serve` (local env, 127.0.0.1) honour them: temperature 0 is greedy and answers
the same twice; 1.5 samples; a bad value is a 400 naming the option; the request shape before
params (options as columns) still works."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest
import torch
import yaml

from aigc_core.generation.text_options import PREDICT_PARAMS
from aigc_core.models.charlstm import CharLSTM, CharLSTMConfig
from aigc_core.models.chars import build_vocab
from aigc_core.models.io import save_model
from aigc_core.stages import Scores, SnapshotRef, TrainedRun
from tasks.registry import promote_version, register
from tasks.tracking import Tracker
from tests.integration.e2e.serving import invoke, model_server
from tests.integration.e2e.test_serve import ROOT, clean_env

pytestmark = pytest.mark.slow
NAME = "aigc-charlstm-tiny"
VOCAB = build_vocab("The quick brown fox.\n")
GATE_METRICS = {"bits_per_char": 3.0, "distinct_2": 0.5, "novelty": 0.5}


@pytest.fixture
def text_champion(home):
    """A tiny character LSTM registered by the register task and promoted to champion."""
    tracker = Tracker(home)
    torch.manual_seed(0)
    cfg = CharLSTMConfig(vocab=VOCAB, embed_dim=8, hidden=16, block_size=8)
    run_id = tracker.start_run("test", tags={})
    model_dir = home.runs / run_id / "model"
    save_model(model_dir, CharLSTM(cfg), cfg.to_dict())
    trained = TrainedRun(
        run_id=run_id,
        snapshot=SnapshotRef("snap-text", "tiny-text", "text", str(home.datasets), 10, False),
        family="charlstm",
        model_name=NAME,
        model_dir=str(model_dir),
        checkpoint_dir=str(home.runs / run_id / "checkpoints"),
        preset="test",
        device="cpu",
        steps=1,
        resumed_from_step=0,
    )
    registered = register.fn(trained, Scores(run_id, GATE_METRICS), str(home.root))
    assert promote_version(home, NAME, registered.version).promoted
    return home, registered


def test_the_logged_signature_has_the_sampling_params(text_champion):
    home, registered = text_champion
    model_dir = Tracker(home).download_model(registered.model_uri, home.root / "download").parent
    signature = yaml.safe_load((model_dir / "MLmodel").read_text())["signature"]
    params = {p["name"]: p for p in json.loads(signature["params"])}
    assert {k: p["default"] for k, p in params.items()} == PREDICT_PARAMS
    assert params["temperature"]["type"] == "double" and params["seed"]["type"] == "long"
    assert (params["stop"]["type"], params["stop"]["shape"]) == ("string", [-1])
    inputs = {c["name"]: c for c in json.loads(signature["inputs"])}
    assert inputs["prompt"] == {"type": "string", "name": "prompt", "required": True}
    for name in PREDICT_PARAMS:  # the request shape before params: optional per-row columns
        assert inputs[name]["required"] is False, inputs[name]
    example = json.loads((model_dir / "serving_input_example.json").read_text())
    assert example["params"]["temperature"] == PREDICT_PARAMS["temperature"]


def test_mlflow_predict_honours_params(text_champion):
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    home, _ = text_champion
    path = list(sys.path)  # MLflow puts the model's code/ first for good
    try:
        model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    finally:
        sys.path[:] = path
    request = pd.DataFrame({"prompt": ["The "]})

    def text(**params) -> str:
        return model.predict(request, params=params)["text"].iloc[0]

    assert text(temperature=0) == text(temperature=0)
    assert text(temperature=1.5) != text(temperature=0)
    assert len(text(max_new_tokens=7)) == 7
    with pytest.raises(MlflowException, match="top_p in params must lie in"):
        text(top_p=2.0)


def test_served_text_champion_honours_sampling_params(text_champion):
    home, _ = text_champion
    prompt = {"dataframe_records": [{"prompt": "The "}]}

    env = {**clean_env(home.root), "MLFLOW_TRACKING_URI": home.tracking_uri}
    with model_server(f"models:/{NAME}@champion", env, ROOT) as base:

        def text(**params) -> str:
            status, answer = invoke(base, {**prompt, "params": params})
            assert status == 200, answer
            [row] = answer["predictions"]
            assert row["prompt"] == "The " and set(row["text"]) <= set(VOCAB)
            return row["text"]

        greedy = text(temperature=0)
        assert greedy == text(temperature=0)  # greedy: the same text twice
        assert len(greedy) == PREDICT_PARAMS["max_new_tokens"]
        hot = text(temperature=1.5)
        assert hot != greedy
        assert hot == text(temperature=1.5)  # the same seed (the default) samples the same
        assert text(temperature=1.5, seed=1) != hot
        assert len(text(temperature=1.5, max_new_tokens=5)) == 5
        stop = greedy[3:5]
        assert text(temperature=0, stop=[stop]) == greedy[: greedy.find(stop)]

        # the request shape before params: options as columns still reach the model
        status, answer = invoke(
            base,
            {"dataframe_records": [{"prompt": "The ", "max_new_tokens": 9, "temperature": 0}]},
        )
        assert status == 200, answer
        assert answer["predictions"][0]["text"] == greedy[:9]

        status, answer = invoke(base, {**prompt, "params": {"temperature": -1}})
        assert status == 400 and "temperature in params must be >= 0" in answer["message"]
        status, answer = invoke(base, {**prompt, "params": {"temperature": "hot"}})
        assert status == 400 and "temperature" in answer["message"]
