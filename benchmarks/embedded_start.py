"""Benchmark: start-up of the embedded Prefect server against Prefect's own, same run.

Each trial is a fresh process running a one-task flow, the way `aigc run` reaches Prefect:
- project: `aigc.embedded` (our server, started before Prefect is imported; see its docstring);
- baseline: Prefect's own ephemeral server (no PREFECT_API_URL), with its default 20 s start-up
  time-out unless --baseline-timeout is given.

In new homes (the database is created: the first run on a machine) it counts successes of each;
in an existing home it reports seconds to the flow's result, best of --repeats. With --load every
core is held busy by a spinning process, as on a loaded or slow machine (issue 13: Prefect's own
first start needed ~30 s on a quiet 2-core AVX2 EPYC and failed there 3 times out of 3). Ends with
one JSON line (DESIGN.md section 5): value/baseline are the existing-home seconds.

usage: python benchmarks/embedded_start.py [--fresh 3] [--repeats 3] [--load]
       [--baseline-timeout S]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FLOW = """
import sys, time
t0 = time.perf_counter()
from pathlib import Path
if sys.argv[2] == "project":
    from aigc import embedded
    from aigc_core.paths import Home
    embedded.start(Home(Path(sys.argv[1])).ensure())
from prefect import flow, task
@task
def one(): return 1
@flow
def f(): return one()
if sys.argv[2] == "project":
    embedded.wait()
assert f() == 1
print("seconds", time.perf_counter() - t0, flush=True)
"""


def trial(home: Path, which: str, baseline_timeout: float | None) -> tuple[bool, float, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AIGC_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        PREFECT_HOME=str(home / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="CRITICAL",
    )
    if which == "baseline" and baseline_timeout:
        env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = str(baseline_timeout)
    t0 = time.perf_counter()
    try:
        p = subprocess.run(
            [sys.executable, "-c", FLOW, str(home), which],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return False, time.perf_counter() - t0, "no result within 300 s"
    wall = time.perf_counter() - t0
    why = "" if p.returncode == 0 else (p.stderr.strip().splitlines() or ["?"])[-1][:160]
    return p.returncode == 0, wall, why


@contextlib.contextmanager
def cpu_load(on: bool):
    spin = "while True: pass"
    procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(os.cpu_count() or 2)]
    if not on:
        for p in procs:
            p.kill()
        procs = []
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def main() -> None:
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--fresh", type=int, default=3, help="trials in new homes, each side")
    a.add_argument("--repeats", type=int, default=3, help="trials in an existing home, each side")
    a.add_argument("--load", action="store_true", help="hold every core busy meanwhile")
    a.add_argument("--baseline-timeout", type=float, default=None)
    args = a.parse_args()
    result: dict = {"benchmark": "embedded_start", "unit": "s", "load": args.load}
    with tempfile.TemporaryDirectory() as tmp, cpu_load(args.load):
        for which in ("project", "baseline"):
            ok, times = 0, []
            for i in range(args.fresh):
                good, wall, why = trial(
                    Path(tmp) / f"{which}-fresh-{i}", which, args.baseline_timeout
                )
                ok += good
                times.append(round(wall, 1))
                print(f"{which} fresh home {i}: {'ok' if good else 'FAILED'} {wall:.1f} s {why}")
            result[f"{which}_fresh_ok"] = f"{ok}/{args.fresh}"
            result[f"{which}_fresh_s"] = times
            home = Path(tmp) / f"{which}-existing"
            trial(home, which, 600)  # creates the database
            best = float("inf")
            for _ in range(args.repeats):
                good, wall, why = trial(home, which, args.baseline_timeout)
                print(f"{which} existing home: {'ok' if good else 'FAILED'} {wall:.1f} s {why}")
                if good:
                    best = min(best, wall)
            result[f"{which}_existing_s"] = round(best, 2)
    result["value"] = result["project_existing_s"]
    result["baseline"] = result["baseline_existing_s"]
    result["ratio"] = round(result["baseline"] / result["value"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
