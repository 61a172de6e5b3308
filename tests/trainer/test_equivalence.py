"""Gradient accumulation and resuming leave training unchanged (stage 1.5, Croc objectives on).

Masks: the trainer seeds each micro-batch's generator from (seed, global step) and skips the draws of the images
before it in the step (`trainer.croc_rng`), so the k-th image of a step gets the same mask however the step is
split. That makes an exact comparison possible with the real mask ratio (0.75 of each image's tokens), and the
negative control shows the comparison would catch masks that depend on the split.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from trainer_helpers import log_history, run_stage
from transformers import TrainerCallback

from trainer import croc_rng
from trainer import croc_trainer as croc_trainer_module
from trainer import train as train_module


def _updates(before: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach() - before[name] for name, tensor in model.state_dict().items()}


def _one_sgd_step(tmp_path, data_dir, stage1_dir, initial_state, per_device: int, name: str):
    # SGD without clipping: the update is the gradient itself, so any error in how the LM and VTR terms are
    # normalised over micro-batches shows (Adam's first step would hide scale errors, clipping would rescale).
    trainer = run_stage(
        "stage1_5.yaml", tmp_path / name, f"--data.path={data_dir / 'detailed.json'}",
        f"--model.name_or_path={stage1_dir}", f"--per_device_train_batch_size={per_device}",
        "--global_batch_size=4", "--max_steps=1", "--optim=sgd", "--max_grad_norm=0",
        "--projector_lr=0.1", "--prompt_pool_lr=0.1", "--language_model_lr=0.1",
    )
    state = dict(initial_state)
    initial_state.clear()
    return _updates(state, trainer.model), [e for e in log_history(tmp_path / name) if "loss" in e][0]


def test_accumulation_equals_the_doubled_batch(tmp_path, data_dir, stage1_dir, initial_state, monkeypatch):
    split, split_log = _one_sgd_step(tmp_path, data_dir, stage1_dir, initial_state, 2, "accumulate")
    whole, whole_log = _one_sgd_step(tmp_path, data_dir, stage1_dir, initial_state, 4, "whole")
    assert split_log["vtr_loss"] > 0 and split_log["pool_utilisation"] > 0
    for key in ("loss", "lm_loss", "vtr_loss", "pool_utilisation", "pool_entropy"):
        assert split_log[key] == pytest.approx(whole_log[key], rel=1e-5), key
    moved = 0
    for name, update in whole.items():
        torch.testing.assert_close(split[name], update, rtol=1e-4, atol=1e-7, msg=name)
        moved += int(update.abs().max() > 0)
    assert moved > 10

    # Negative control: masks seeded per micro-batch without the offset differ from the whole batch's.
    monkeypatch.setattr(croc_trainer_module, "mask_generator",
                        lambda seed, step, offset: croc_rng.mask_generator(seed, step, 0))
    naive, naive_log = _one_sgd_step(tmp_path, data_dir, stage1_dir, initial_state, 2, "naive")
    differs = max(float((naive[n] - whole[n]).abs().max()) for n in whole if "prompt_pool" in n)
    assert differs > 1e-4 or naive_log["vtr_loss"] != pytest.approx(whole_log["vtr_loss"], rel=1e-5)


class _Kill(TrainerCallback):
    """Stops the process the hard way as step 3 begins, after checkpoint-2 was written."""

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 2:
            raise KeyboardInterrupt("simulated kill")


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path, data_dir, stage1_dir, monkeypatch):
    # 12 rows, 4 per step: 3 steps per epoch, so the resumed run also crosses an epoch boundary.
    common = [f"--data.path={data_dir / 'detailed.json'}", f"--model.name_or_path={stage1_dir}",
              "--per_device_train_batch_size=2", "--global_batch_size=4", "--max_steps=4",
              "--save_strategy=steps", "--save_steps=2", "--lr_scheduler_type=cosine"]
    reference = tmp_path / "uninterrupted"
    run_stage("stage1_5.yaml", reference, *common)

    resumed = tmp_path / "killed"

    class KilledTrainer(train_module.CrocTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(_Kill())

    with monkeypatch.context() as patch:
        patch.setattr(train_module, "CrocTrainer", KilledTrainer)
        with pytest.raises(KeyboardInterrupt):
            run_stage("stage1_5.yaml", resumed, *common)
    checkpoint = resumed / "checkpoint-2"
    assert sorted(p.name for p in resumed.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-2"]
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"):
        assert (checkpoint / name).is_file(), name
    assert "model.prompt_pool.weight" in load_file(str(checkpoint / "model.safetensors"))

    run_stage("stage1_5.yaml", resumed, *common)  # the same command again: continues from checkpoint-2

    expected, actual = load_file(str(reference / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert set(expected) == set(actual)
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    curve = {e["step"]: e for e in log_history(reference) if "loss" in e}
    again = {e["step"]: e for e in log_history(resumed) if "loss" in e}
    assert sorted(curve) == sorted(again) == [1, 2, 3, 4]
    for step, entry in curve.items():
        for key in ("loss", "lm_loss", "vtr_loss", "pool_utilisation"):
            assert again[step][key] == pytest.approx(entry[key], rel=1e-5), (step, key)
