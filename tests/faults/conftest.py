"""Fixtures of the fault-injection tests: the fault folder (every broken file and row of issue 13 next to good ones),
a tiny saved model, and a guard that fails a test if a model is loaded before the error it expects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fault_cases import image_row, write_fault_folder, write_good_image

from croc_testing.tiny import save_tiny_croc
from trainer import train as train_module

# Two cores shared by the xdist workers and the processes the tests start.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def faults(tmp_path_factory) -> dict:
    """{"root": the data folder (rows.json + images/), "rows", "expected": {row id: verdict}, "not_an_object_id"};
    `outside.png` lies next to the root, outside it."""
    root = tmp_path_factory.mktemp("faults") / "data"
    return {"root": root, **write_fault_folder(root)}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_croc(tmp_path_factory.mktemp("tiny_model"), seed=0)


@pytest.fixture
def no_model_load(monkeypatch):
    """Loading a model fails the test: the error under test must come before."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the error")

    monkeypatch.setattr(train_module, "load_model_and_processor", refuse)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """Two good image rows: a config to refuse needs a data file that exists."""
    root = tmp_path_factory.mktemp("small_data")
    for i in range(2):
        write_good_image(root / "images" / f"{i}.png", (90 * i, 60, 200))
    (root / "rows.json").write_text(json.dumps([image_row(str(i), f"images/{i}.png") for i in range(2)]))
    return root / "rows.json"


@pytest.fixture
def nothing_loaded(monkeypatch, no_model_load):
    """Neither the model nor the training rows may be read before a configuration error."""

    def refuse(*args, **kwargs):
        raise AssertionError("the training rows were read before the configuration error")

    monkeypatch.setattr(train_module, "load_training_rows", refuse)
