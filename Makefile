# The few targets the README names. `make demo` and `make test` set everything up from scratch.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of torch, installed from this machine's disk where it lies there; set TORCH_SPEC
# (e.g. TORCH_SPEC=torch) to take a CUDA build on a GPU machine.
TORCH_SPEC ?= torch==2.13.0
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: setup demo test test-fast lint format bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) "$(TORCH_SPEC)"
	$(PIP) -e ".[dev]"
	touch $@

demo: setup  ## the nightly pipeline once, embedded, on the built-in digits (a few minutes on CPU)
	$(VENV)/bin/aigc run --preset cpu

test: setup  ## the whole suite: unit, contracts and integration (flows, stores, the CLI, servers)
	$(PY) -m pytest -q

test-fast: setup  ## the pure unit tests: no MLflow store, no subprocess, no server (under a minute)
	$(PY) -m pytest -q tests/unit

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .aigc .pytest_cache .ruff_cache
