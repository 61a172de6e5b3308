# One entry point for people and CI. `make test` builds its own environment from nothing.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv test lint bench demo clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
venv: $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"

test: venv
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1 \
		$(BIN)/python -m pytest -n 2 --dist loadfile -q tests

lint: venv
	$(BIN)/ruff check .

bench: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks all

# The whole method on a laptop CPU: synthetic data, stage 1 -> 1.5 -> 2 and the baseline, evaluation, report.
demo: venv
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m demo --out demo_out

clean:
	rm -rf $(VENV) .pytest_cache
