"""A disk too small for what a run will write: refused in one line before the first step when its first save cannot
fit (hours of steps lost at the first checkpoint otherwise), warned when what it keeps may not. The disk's free space
is faked (`shutil.disk_usage`); the sizes are the tiny model's own."""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

import pytest
from run_cases import checkpointed_argv as _argv
from run_cases import cli_error

from croc_testing.tiny import tiny_croc_config
from modeling_croc import CrocForConditionalGeneration
from trainer import disk_space
from trainer import train as train_module

Usage = namedtuple("Usage", "total used free")


def _fake_free(monkeypatch, free_for, small_disk=None) -> dict:
    """Report `free_for(sizes)` bytes free on every disk (only on the disk of the folder `small_disk`, if given,
    plenty elsewhere); returns the sizes the run computed (filled when it asks)."""
    seen = {}
    real = disk_space.save_sizes

    def sizes(model, adapter_only, optim="adamw_torch"):
        seen["sizes"] = real(model, adapter_only, optim)
        return seen["sizes"]

    def usage(path):
        small = small_disk is None or Path(path) in (Path(small_disk), Path(small_disk).parent)
        return Usage(10**12, 10**12, free_for(seen["sizes"]) if small else 10**12)

    monkeypatch.setattr(disk_space, "save_sizes", sizes)
    monkeypatch.setattr(disk_space.shutil, "disk_usage", usage)
    return seen


def test_a_run_whose_first_checkpoint_cannot_fit_is_refused_before_the_first_step(tiny_model, data, tmp_path,
                                                                                  monkeypatch):
    _fake_free(monkeypatch, lambda sizes: sizes.checkpoint - 1)
    steps = []
    monkeypatch.setattr(train_module.CrocTrainer, "training_step", lambda *a, **k: steps.append(1))
    out = tmp_path / "run"
    message = cli_error(_argv(out, tiny_model, data, "--max_steps=2"), monkeypatch)
    assert message.startswith(f"configuration error: output_dir {out} has ")
    assert " bytes free, and its first checkpoint needs at least " in message
    assert message.endswith(": free space or choose an output_dir on a larger disk (nothing was trained)")
    assert steps == [] and not list(out.glob("checkpoint-*"))


def test_a_run_that_saves_no_checkpoint_is_measured_against_its_final_model(tiny_model, data, tmp_path, monkeypatch):
    _fake_free(monkeypatch, lambda sizes: sizes.final - 1)
    message = cli_error(_argv(tmp_path / "run", tiny_model, data, "--max_steps=2", "--save_strategy=no"), monkeypatch)
    assert ", and the final model needs at least " in message


def test_room_for_the_first_checkpoint_but_not_for_all_kept_is_a_warning_and_the_run_goes_on(
        tiny_model, data, tmp_path, monkeypatch, capsys):
    seen = _fake_free(monkeypatch, lambda sizes: sizes.checkpoint + sizes.final - 1)
    out = tmp_path / "run"
    train_module.main(_argv(out, tiny_model, data, "--max_steps=2", "--save_total_limit=3"))
    warned = [line for line in capsys.readouterr().err.splitlines() if "WARNING trainer.disk_space" in line]
    assert len(warned) == 1 and "the 2 checkpoint(s) this run keeps at once and its final model need at least" in warned[0]
    assert sorted(path.name for path in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    # lower bounds of what the run then wrote
    assert sum(path.stat().st_size for path in (out / "checkpoint-1").rglob("*")) >= seen["sizes"].checkpoint
    assert (out / "model.safetensors").stat().st_size >= seen["sizes"].final


def test_the_sizes_count_the_weights_and_the_optimiser_moments_known_for_certain():
    model = CrocForConditionalGeneration(tiny_croc_config())
    for name, param in model.named_parameters():
        param.requires_grad = "multi_modal_projector" in name
    whole = sum(param.numel() * param.element_size() for param in model.parameters())
    trainable = sum(param.numel() * param.element_size() for param in model.parameters() if param.requires_grad)
    count = sum(param.numel() for param in model.parameters() if param.requires_grad)
    assert 0 < trainable < whole
    assert disk_space.save_sizes(model, adapter_only=False) == disk_space.SaveSizes(whole + 2 * trainable, whole)
    # LoRA: the adapter in the checkpoints and output_dir, the whole model in the merged folder
    assert disk_space.save_sizes(model, adapter_only=True) == disk_space.SaveSizes(3 * trainable, trainable, whole)
    # SGD and Adafactor keep nothing known per parameter (an SGD run that fitted was refused); 8-bit Adam a byte
    # per moment
    assert disk_space.save_sizes(model, False, "sgd").checkpoint == whole
    assert disk_space.save_sizes(model, False, "adafactor").checkpoint == whole
    assert disk_space.save_sizes(model, False, "adamw_bnb_8bit").checkpoint == whole + 2 * count


@pytest.mark.parametrize("where", ["merged", "dry run"])
def test_a_final_write_to_another_small_disk_is_refused_before_the_first_step(tiny_model, data, tmp_path,
                                                                              monkeypatch, where):
    """A LoRA run's merged folder, or the dry run's folder, on a disk too small for it: the run trained to the end
    and stopped there (the dry run's rerun on a larger disk retrained from scratch)."""
    out = tmp_path / "run"
    if where == "merged":
        small, extra = tmp_path / "run-merged", ["--model.use_peft=true"]
        words = "the merged model needs at least"
    else:
        (tmp_path / "small").mkdir()
        small, extra = tmp_path / "small" / "dry", [f"--hub_dry_run={tmp_path / 'small' / 'dry'}"]
        words = "the dry run's copy of the final folder needs at least"
    _fake_free(monkeypatch, lambda sizes: (sizes.merged or sizes.final) - 1, small_disk=small)
    message = cli_error(_argv(out, tiny_model, data, "--max_steps=2", *extra), monkeypatch)
    assert message.startswith(f"configuration error: {small} is on a disk with ") and words in message, message


def test_a_lora_run_is_measured_against_its_adapter_not_the_whole_model(tiny_model, data, tmp_path, monkeypatch):
    """A LoRA run writes its adapter into output_dir: measured against the whole model it was refused on a disk
    that held it (the merged model goes to <output_dir>-merged)."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run-merged").mkdir()  # on another disk, with room
    seen = _fake_free(monkeypatch, lambda sizes: sizes.merged - 1, small_disk=tmp_path / "run")
    train_module.main(_argv(tmp_path / "run", tiny_model, data, "--max_steps=1", "--save_strategy=no",
                            "--model.use_peft=true"))
    assert (tmp_path / "run" / "adapter_model.safetensors").stat().st_size >= seen["sizes"].final


@pytest.mark.parametrize(("settings", "expected"), [
    (dict(save_strategy="no"), 0),
    (dict(save_strategy="epoch"), 1),
    (dict(max_steps=10, save_steps=2), 5),
    (dict(max_steps=10, save_steps=2, save_total_limit=2), 3),
    (dict(max_steps=10, save_steps=0.25), 3),
    (dict(max_steps=-1, save_steps=500), 1),
])
def test_planned_checkpoints(settings, expected):
    args = SimpleNamespace(**{"save_strategy": "steps", "max_steps": 100, "save_steps": 500, "save_total_limit": None,
                              **settings})
    assert disk_space.planned_checkpoints(args) == expected


def test_a_missing_output_dir_is_measured_on_the_disk_that_will_hold_it(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(disk_space.shutil, "disk_usage", lambda path: asked.append(path) or Usage(1, 1, 10**15))
    args = SimpleNamespace(output_dir=str(tmp_path / "a" / "b"), save_strategy="no", max_steps=1, save_steps=1,
                           save_total_limit=None, optim="adamw_torch", hub_dry_run=None)
    disk_space.check_disk_space(CrocForConditionalGeneration(tiny_croc_config()), args, adapter_only=False)
    assert asked == [tmp_path]
