# One entry point for people and CI. `make test` builds its own environment from nothing.
#
# Two environments:
#   .venv         the locked one: exactly the versions of requirements/lock.txt (tests, demo, benchmarks, CI), so a
#                 fresh clone behaves the same whatever is released tomorrow;
#   .venv-latest  the canary (`make test-latest`): the newest releases setup.cfg allows, no lock, rebuilt each time,
#                 so the next upstream break shows up here a release before it reaches anyone.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LATEST_VENV ?= .venv-latest
LOCK := requirements/lock.txt
# Installed with --no-deps after the extras (lmms-eval: its declared torchvision breaks transformers next to the CPU
# torch wheel); what they import is in the `eval` extra, which `dev` includes.
NO_DEPS := requirements/no-deps.txt
# torch is pinned outside the ranges: a bare `torch` requirement would pull a multi-GB CUDA build on a CPU machine.
TORCH_VERSION ?= 2.13.0
EXTRAS ?= dev
TEST_ENV := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1
# Files in collection order (tests/conftest.py puts the `slow` ones first), not xdist's default of the most tests
# first: a slow file with few tests then started last and ran alone at the end of the run.
PYTEST_ARGS ?= -n 2 --dist loadfile --no-loadscope-reorder -q tests

.PHONY: venv test test-latest lock lint bench gpu-wheels demo clean

# Build tools come from the lock too, and the project is installed without build isolation, so no unpinned
# setuptools is fetched behind the lock's back.
$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c $(LOCK) pip setuptools wheel

# A `*.egg-info` left at the root by a non-editable build sits on the editable install's path and shadows its
# metadata (a stale one declares old ranges): removed before installing.
venv: $(BIN)/python
	rm -rf *.egg-info
	$(BIN)/pip install -q -c $(LOCK) torch
	$(BIN)/pip install -q -c $(LOCK) --no-build-isolation -e ".[$(EXTRAS)]"
	if [[ ",$(EXTRAS)," == *,dev,* || ",$(EXTRAS)," == *,eval,* ]]; then \
		$(BIN)/pip install -q -c $(LOCK) --no-deps -r $(NO_DEPS); fi

test: venv
	$(TEST_ENV) $(BIN)/python -m pytest $(PYTEST_ARGS)

# The canary: newest allowed releases of everything but torch (pinned as above), then the same suite.
test-latest:
	rm -rf $(LATEST_VENV)
	$(PY) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/pip install -q --upgrade pip setuptools wheel
	$(LATEST_VENV)/bin/pip install -q torch==$(TORCH_VERSION)
	# eager upgrades would replace the CPU torch with the newest (CUDA) release: torch stays pinned
	$(LATEST_VENV)/bin/pip install -q --upgrade --upgrade-strategy eager --no-build-isolation \
		-c <(echo torch==$(TORCH_VERSION)) -e ".[dev]"
	$(LATEST_VENV)/bin/pip install -q --upgrade --no-deps -r $(NO_DEPS)
	@echo "== canary: versions that differ from $(LOCK) (lock < | > newest allowed) =="
	@diff <(grep -v '^#' $(LOCK) | sort -f) \
		<($(LATEST_VENV)/bin/pip freeze --all --exclude-editable | sed 's/+cpu$$//' | sort -f) || true
	CROC_CANARY=1 $(TEST_ENV) $(LATEST_VENV)/bin/python -m pytest $(PYTEST_ARGS)

# Regenerate the lock from the newest releases the ranges allow; run `make test` on it before committing.
lock:
	rm -rf .venv-lock
	$(PY) -m venv .venv-lock
	.venv-lock/bin/pip install -q --upgrade pip setuptools wheel
	.venv-lock/bin/pip install -q torch==$(TORCH_VERSION)
	.venv-lock/bin/pip install -q --no-build-isolation -e ".[dev]"
	.venv-lock/bin/pip install -q --no-deps -r $(NO_DEPS)
	{ echo "# Exact versions of the tested environment (Python $$(.venv-lock/bin/python -c 'import platform; print(platform.python_version())')), for \`pip install -c\`."; \
	  echo "# Regenerate with \`make lock\`, then run \`make test\`. torch is written without its local label (+cpu)."; \
	  .venv-lock/bin/pip freeze --all --exclude-editable | sed 's/+cpu$$//' | sort -f; } > $(LOCK)
	rm -rf .venv-lock

lint: venv
	$(BIN)/ruff check .

bench: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks all

# For a GPU machine with no package index: the wheels benchmarks/gpu_check.sh installs there, fetched here into .whl
# (the locked closure of the `test` extra and requirements/gpu.txt, for the machine's Python; see the script).
gpu-wheels: venv
	$(BIN)/python -m benchmarks.gpu_wheels

# The whole method on a laptop CPU: synthetic data, stage 1 -> 1.5 -> 2 and the baseline, evaluation, report. The
# `test` extra too: the README's next commands (`python -m croc_testing tiny-model ...`) use its offline tokenizer.
demo: EXTRAS = demo,test
demo: venv
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m demo --out demo_out

clean:
	rm -rf $(VENV) $(LATEST_VENV) .venv-lock .pytest_cache
