"""Fixtures of the fault-injection tests: the fault folder (every broken file and row of issue 13 next to good ones),
a tiny saved model, and a guard that fails a test if a model is loaded before the error it expects; for the
output-folder and resume tests, a small data folder and a finished 2-step run to copy; for the publishing tests, the
Hub switched on (its calls recorded, never sent) and a record of every upload scan."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub
import pytest
import torch
from fault_cases import image_row, write_fault_folder, write_good_image
from run_cases import checkpointed_argv, write_small_folder

from croc_testing.tiny import save_tiny_croc
from modeling_croc import upload_scan
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


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_small_folder(tmp_path_factory.mktemp("resume_data"))


@pytest.fixture(scope="module")
def two_steps(tiny_model, data, tmp_path_factory):
    """A finished 2-step run with a checkpoint at each step; tests copy it."""
    out = tmp_path_factory.mktemp("two_steps") / "run"
    train_module.main(checkpointed_argv(out, tiny_model, data, "--max_steps=2"))
    return out


@pytest.fixture
def hub_online(monkeypatch) -> None:
    """The tests run with HF_HUB_OFFLINE=1; a push is only allowed online (the HfApi calls are recorded, never
    sent)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def scanned(monkeypatch) -> list[tuple[Path, list[str]]]:
    """Every (folder, files) the upload scan ran on, in order."""
    calls = []
    original = upload_scan.scan_upload_set

    def record(folder, files, **kwargs):
        calls.append((Path(folder), list(files)))
        return original(folder, files, **kwargs)

    monkeypatch.setattr(upload_scan, "scan_upload_set", record)
    return calls
