"""Stage 1.5 fits a two-row set: the total, caption (LM) and reconstruction (VTR) losses go down, for both presets."""

from __future__ import annotations

import pytest
from trainer_helpers import log_history, run_stage


@pytest.mark.parametrize("preset", ["paper", "official"])
def test_stage1_5_loss_decreases_on_a_tiny_overfit_set(tmp_path, data_dir, stage1_dir, preset):
    out = tmp_path / preset
    run_stage("stage1_5.yaml", out, f"--data.path={data_dir / 'detailed.json'}", f"--model.name_or_path={stage1_dir}",
              f"--croc_preset={preset}", "--data.max_samples=2", "--per_device_train_batch_size=2",
              "--global_batch_size=2", "--max_steps=8", "--lr_scheduler_type=constant",
              "--projector_lr=1e-2", "--prompt_pool_lr=1e-2", "--language_model_lr=1e-2")
    curve = [entry for entry in log_history(out) if "loss" in entry]
    assert len(curve) == 8

    def early(key):
        return (curve[0][key] + curve[1][key]) / 2

    def late(key):
        return (curve[-1][key] + curve[-2][key]) / 2

    assert late("loss") < 0.9 * early("loss")
    assert late("lm_loss") < early("lm_loss") - 0.5
    assert late("vtr_loss") < early("vtr_loss")
