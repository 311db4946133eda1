"""Mistyped `aigc` calls as a user makes them: a real process each, a real MLflow store.

Every command answers a wrong model, version, alias, family, preset, file or option with exit 2
and a message listing what there is, before anything starts: no Prefect server (its log and
database stay absent, so no flow run can exist), no MLflow import. The one exit-code table holds
for every command (2 usage or not found, 1 failed, 75 interrupted), and shell completion works
through the shell's own protocol."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aigc_core import families
from aigc_core.paths import Home
from tests.integration.test_registry_lookup import fill_registry

ROOT = Path(__file__).parents[3]
FAST_S = 2.0  # the bound for errors about models, versions, aliases and options


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A family catalog built once for these tests (as after a user's first call)."""
    path = tmp_path_factory.mktemp("cache")
    p = subprocess.run(
        [sys.executable, "-m", "aigc", "families", "--json"],
        capture_output=True,
        text=True,
        env={**clean_env(), "AIGC_CACHE_DIR": str(path)},
        cwd=ROOT,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    return path


def clean_env() -> dict:
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "AIGC_"))
    }


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Path:
    """A home whose registry holds aigc-dcgan-digits v1-3 (champion v2, challenger v3),
    aigc-charlstm-python-docs v1, v3 (v2 deleted, no aliases) and `empty`."""
    home = Home(tmp_path_factory.mktemp("home")).ensure()
    fill_registry(home)
    return home.root


def aigc(*args, home: Path, cache: Path, env=None, timeout=120) -> tuple:
    """Run `aigc ARGS --home HOME`: (the process, wall seconds)."""
    full = {**clean_env(), "AIGC_CACHE_DIR": str(cache), **(env or {})}
    t0 = time.monotonic()
    p = subprocess.run(
        [sys.executable, "-m", "aigc", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        env=full,
        cwd=ROOT,
        timeout=timeout,
    )
    return p, time.monotonic() - t0


def said(p) -> str:
    return " ".join(p.stderr.split())  # Rich wraps long lines


def nothing_started(home: Path) -> bool:
    """No embedded Prefect server ever ran in this home: no log, no database, no marker."""
    prefect = home / "prefect"
    return not any((prefect / n).exists() for n in ("server.log", "prefect.db", ".started"))


def test_generate_unknown_model_exits_2_in_under_2s_and_starts_nothing(tmp_path, cache):
    home = tmp_path / "fresh"
    p, wall = aigc("generate", "--model", "nosuch", "--n", "1", home=home, cache=cache)
    assert p.returncode == 2, p.stderr
    assert "no registered model 'nosuch'" in said(p) and "Traceback" not in p.stderr
    assert wall < FAST_S, wall
    assert not home.exists()  # not even the home was created


@pytest.mark.parametrize(
    "ref, message",
    [
        ("nosuch", "no registered model 'nosuch'; registered: aigc-charlstm-python-docs, "),
        ("aigc-dcgan-digit", "did you mean 'aigc-dcgan-digits'?"),
        ("aigc-dcgan-digits/7", "model 'aigc-dcgan-digits' has no version 7; versions: 1-3"),
        ("aigc-charlstm-python-docs/2", "has no version 2; versions: 1, 3"),
        ("aigc-charlstm-python-docs", "has no alias 'champion'; aliases: none"),
        ("aigc-dcgan-digits@prod", "aliases: challenger (v3), champion (v2)"),
    ],
)
def test_generate_wrong_refs_are_2_from_the_registry(registry, cache, ref, message):
    p, wall = aigc("generate", "--model", ref, "--n", "1", home=registry, cache=cache)
    assert p.returncode == 2 and message in said(p), p.stderr
    assert wall < FAST_S, wall
    assert nothing_started(registry)


def test_not_found_is_2_in_every_command(registry, cache, tmp_path):
    sid = "0123456789abcdef"
    cases = [
        (["promote", "nosuch", "1"], "no registered model 'nosuch'"),
        (["promote", "aigc-dcgan-digits", "9"], "has no version 9; versions: 1-3"),
        (["rollback", "nosuch"], "no registered model 'nosuch'"),
        (["models", "nosuch"], "no registered model 'nosuch'"),
        (["train", "--snapshot", sid], f"no snapshot with id '{sid}'"),
        (["train", "--snapshot", sid, "--model", "gpt"], "unknown model family 'gpt'"),
        (["run", "--init-from", "models:/aigc-dcgan-digits/9"], "has no version 9"),
        (["run", "--path", str(tmp_path / "none")], "none: no such file or folder"),
        (["ingest", "--dataset", "mine", "--path", str(tmp_path / "x")], "no such file"),
        # the built-in datasets are known to the data layer, which imports torch: seconds
        (["ingest", "--dataset", "nosuch"], "unknown dataset 'nosuch'; built-in datasets:"),
    ]
    for i, (args, message) in enumerate(cases):
        p, wall = aigc(*args, home=registry, cache=cache)
        assert p.returncode == 2 and message in said(p), (args, p.stderr)
        assert "Traceback" not in p.stderr
        if i < len(cases) - 1:  # the bound is generate's; a loaded test machine gets twice it
            assert wall < FAST_S * 2, (args, wall)
    assert nothing_started(registry)


def test_bad_options_are_2_in_every_command(registry, cache):
    cases = [
        (["run", "--model", "gpt"], "unknown model family 'gpt'; choose one of dcgan, vae"),
        (["run", "--model", "vae", "--preset", "seed"], "unknown preset 'seed' for vae"),
        (["run", "--preset", "huge"], "unknown preset 'huge'"),
        (["run", "--set", "train.nosuch=1", "--preset", "smoke"], "train.nosuch"),
        (["run", "--set", "oops"], "expected KEY=VALUE"),
        (["run", "--dataset", "nosuch", "--preset", "smoke"], "unknown dataset 'nosuch'"),
        (["run", "--model", "charlstm", "--dataset", "digits"], "holds image data"),
        (["train", "--snapshot", "0123456789abcdef", "--resume", "maybe"], "'maybe' is not one"),
        (["ingest", "--dataset", "digits", "--kind", "sound"], "'sound' is not one of"),
        (["ingest", "--dataset", "digits", "--validation-fraction", "1"], "in (0, 1)"),
        (["generate", "--model", "aigc-dcgan-digits", "--n", "2", "--shards", "3"], "at most 2"),
        (["generate", "--model", "aigc-dcgan-digits", "--n", "0"], "--n"),
        (["promote", "aigc-dcgan-digits", "1", "--force"], "--force needs --reason"),
    ]
    for args, message in cases:
        p, _ = aigc(*args, home=registry, cache=cache)
        assert p.returncode == 2 and message in said(p), (args, p.stderr)
    assert nothing_started(registry)


def test_generate_refuses_bad_text_options_before_starting_anything(registry, cache, tmp_path):
    """Prompt files and sampling options are checked, after the model, before Prefect starts."""
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    cases = [
        (["--prompt-file", str(tmp_path / "nope.txt")], "--prompt-file", "no such file"),
        (["--prompt-file", str(empty)], "empty.txt has", "no prompts"),
        (["--top-p", "1.5"], "--top-p: top_p must lie in (0, 1]", ""),
        (["--max-new-tokens", "0"], "--max-new-tokens: max_new_tokens must lie in", ""),
        (["--policy", str(tmp_path / "p.yaml")], "--policy", "no such file"),
    ]
    for args, *needles in cases:
        p, _ = aigc("generate", "--model", "aigc-dcgan-digits", "--n", "4", *args,
                    home=registry, cache=cache)  # fmt: skip
        assert p.returncode == 2, (args, p.stderr)
        assert all(n in said(p) for n in needles) and "Traceback" not in p.stderr, (args, said(p))
    assert nothing_started(registry)


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--set", "x"], "--set 'x': expected KEY=VALUE"),
        (["run", "--config", "missing.yaml"], "--config missing.yaml: no such file"),
        (["run", "--set", "train.lr=-1"], "train.lr: Input should be greater than 0 (got -1)"),
        (["run", "--model", "vae", "--set", "model.nosuch=3"], "model.nosuch: unknown model "),
        (["run", "--set", "curation.image.min_confidence=2"], "curation.image.min_confidence: "),
        (
            ["generate", "--model", "aigc-dcgan-digits", "--n", "1", "--top-p", "2"],
            "--top-p: top_p must lie in (0, 1]",
        ),
        (
            ["generate", "--model", "aigc-dcgan-digits", "--n", "1", "--temperature", "-1"],
            "--temperature: temperature must be >= 0",
        ),
    ],
)
def test_option_errors_are_2_in_under_2s_without_torch(registry, cache, args, message):
    """Settings overrides are checked against the family's cached schema, sampling options by
    their torch-free module: no family, no torch loaded for a wrong value."""
    p, wall = aigc(*args, home=registry, cache=cache)
    assert p.returncode == 2 and message in said(p), p.stderr
    assert "Traceback" not in p.stderr
    assert wall < FAST_S, (args, wall)
    assert nothing_started(registry)


def test_train_settings_errors_are_2_in_under_2s(tmp_path, cache):
    home = Home(tmp_path / "home").ensure()
    sid = "0123456789abcdef"
    (home.datasets / "digits" / sid).mkdir(parents=True)
    (home.datasets / "digits" / sid / "manifest.json").write_text("{}")  # found, not opened
    for sets, message in [
        (["model.nosuch=3"], "model.nosuch: unknown model setting of dcgan; allowed: z_dim,"),
        (["train.steps=-2"], "train.steps: Input should be greater than or equal to 0"),
    ]:
        args = ["train", "--snapshot", sid, *[a for s in sets for a in ("--set", s)]]
        p, wall = aigc(*args, home=home.root, cache=cache)
        assert p.returncode == 2 and message in said(p), p.stderr
        assert wall < FAST_S, (args, wall)


def test_the_option_checks_import_no_torch():
    code = (
        "import sys; import aigc.preflight, aigc_core.settings, aigc_core.curation.policy, "
        "aigc_core.generation.text_options; "
        "print(sorted({'torch', 'scipy', 'pandas', 'prefect', 'mlflow'} & set(sys.modules)))"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert p.returncode == 0 and p.stdout.strip() == "[]", (p.stdout, p.stderr)


def test_models_reads_the_registry_without_mlflow(registry, cache):
    p, wall = aigc("models", "--json", home=registry, cache=cache)
    assert p.returncode == 0, p.stderr
    listed = {m["name"]: m for m in json.loads(p.stdout)}
    assert set(listed) == {"aigc-charlstm-python-docs", "aigc-dcgan-digits", "empty"}
    dcgan = listed["aigc-dcgan-digits"]
    assert dcgan["aliases"] == {"champion": "2", "challenger": "3"}
    assert [v["version"] for v in dcgan["versions"]] == ["3", "2", "1"]
    assert dcgan["versions"][1]["tags"]["promotion.decision"] == "promoted"
    assert wall < FAST_S * 2, wall  # was ~15 s through MLflow
    p, _ = aigc("models", "aigc-dcgan-digits", home=registry, cache=cache)
    assert p.returncode == 0 and "champion" in p.stdout and "challenger" in p.stdout


def test_families_come_from_the_catalog_without_torch(tmp_path, cache):
    env = {**clean_env(), "AIGC_CACHE_DIR": str(cache)}
    p = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "aigc", "families", "--json"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    imported = {line.split("|")[-1].strip() for line in p.stderr.splitlines() if "|" in line}
    assert not imported & {"torch", "prefect", "mlflow"}, imported & {"torch", "prefect", "mlflow"}
    assert json.loads(p.stdout) == [
        json.loads(json.dumps(f.to_dict())) for f in families.available().values()
    ]


def test_an_unreachable_tracking_server_is_exit_1(tmp_path, cache):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
    for args in (["models"], ["generate", "--model", "m", "--n", "1"]):
        p, _ = aigc(*args, home=tmp_path, cache=cache, env=env)
        assert p.returncode == 1, p.stderr
        assert f"cannot reach the MLflow server http://127.0.0.1:{port}" in said(p)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_any_command_with_75(tmp_path, cache, sig):
    """`aigc models` waiting on a tracking server that never answers: stopped, exit 75."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        env = {**clean_env(), "AIGC_CACHE_DIR": str(cache), "MLFLOW_TRACKING_URI": url}
        p = subprocess.Popen(
            [sys.executable, "-m", "aigc", "models", "--home", str(tmp_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        )  # fmt: skip
        server.settimeout(60)
        conn, _ = server.accept()  # the command is now waiting for an answer
        with conn:
            p.send_signal(sig)
            _, err = p.communicate(timeout=30)
    assert p.returncode == 75, err
    assert f"stopped by {sig.name}" in " ".join(err.split()) and "Traceback" not in err


def test_shell_completion(registry, cache):
    env = {**clean_env(), "AIGC_CACHE_DIR": str(cache), "SHELL": "/bin/bash"}
    p = subprocess.run(
        [sys.executable, "-m", "aigc", "--show-completion", "bash"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "_AIGC_COMPLETE=complete_bash" in p.stdout and "complete " in p.stdout

    def complete(line: str) -> list[str]:
        words = line.split(" ")
        shell = {**env, "_AIGC_COMPLETE": "complete_bash", "COMP_WORDS": line}
        shell["COMP_CWORD"] = str(len(words) - 1)
        p = subprocess.run(
            [sys.executable, "-m", "aigc"],
            capture_output=True, text=True, env=shell, cwd=ROOT, timeout=60,
        )  # fmt: skip
        assert p.returncode == 0, p.stderr
        return p.stdout.split()

    assert complete("aigc run --model ") == families.family_names()
    assert complete("aigc train --model vae --preset ") == list(families.get("vae").presets)
    home = f"--home {registry}"
    assert complete(f"aigc generate {home} --model aigc-d") == ["aigc-dcgan-digits"]
    assert complete(f"aigc generate {home} --model aigc-dcgan-digits/") == [
        "aigc-dcgan-digits/1",
        "aigc-dcgan-digits/2",
        "aigc-dcgan-digits/3",
    ]
    assert complete(f"aigc promote {home} aigc-charlstm-python-docs ") == ["3", "1"]
