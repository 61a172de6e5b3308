"""Issue 20, divergence: a non-finite loss, gradient norm or weight stops the run at its step with one line naming the
step and the newest checkpoint; nothing non-finite is ever applied or saved; `max_nonfinite_steps` skips such steps
(no update) within its budget, and the budget survives a resume."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from run_cases import assert_same_weights, cli_exit, curve, run_argv, weights, write_small_folder

from trainer import croc_trainer
from trainer import train as train_module
from trainer.checkpoint_io import checkpoint_problem
from trainer.run_control import NONFINITE_FILE, TrainingDiverged


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_small_folder(tmp_path_factory.mktemp("divergence_data"))


def _argv(out, tiny_model, data, *extra):
    return run_argv("stage2.yaml", out, tiny_model, data, "--save_strategy=steps", "--save_steps=1", *extra)


def _all_finite(state: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(tensor).all() for tensor in state.values() if tensor.is_floating_point())


def _nan_loss_at(monkeypatch, steps: set[int]) -> None:
    """The loss of every micro-batch of the given optimiser steps becomes NaN (what an overflow or a bad batch gives)."""
    compute_loss = croc_trainer.CrocTrainer.compute_loss

    def poisoned(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = compute_loss(self, model, inputs, return_outputs=return_outputs,
                              num_items_in_batch=num_items_in_batch)
        if self.state.global_step + 1 not in steps:
            return result
        loss, outputs = result if return_outputs else (result, None)
        loss = loss * float("nan")
        return (loss, outputs) if return_outputs else loss

    monkeypatch.setattr(croc_trainer.CrocTrainer, "compute_loss", poisoned)


def test_a_learning_rate_that_blows_up_stops_the_run_before_any_nan_is_saved(tiny_model, data, tmp_path, monkeypatch,
                                                                               capsys):
    """The issue's case: before, the run exited 0 with loss logged as 0 and NaN weights in its checkpoints and final
    folder. Step 1 (lr 1e4) is finite and saved; step 2's gradients are NaN: the run stops there."""
    out = tmp_path / "run"
    rates = [f"--{name}=1e4" for name in ("projector_lr", "language_model_lr")]  # stage 2 trains these two
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=4", *rates), monkeypatch, capsys)
    assert status == 1
    assert message == (f"run stopped: training diverged at step 2: non-finite grad_norm nan; that step was not "
                       f"applied and nothing was saved; the newest checkpoint is {out / 'checkpoint-1'} (rerunning "
                       "the same command resumes from it). Lower the learning rates, or let such steps be skipped "
                       "with --max_nonfinite_steps=N")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert checkpoint_problem(out / "checkpoint-1") is None and _all_finite(weights(out / "checkpoint-1"))
    assert not (out / "model.safetensors").exists()  # no final folder
    # The run record written at the start stays unfinished: the folder is this run's, for the rerun to resume.
    assert json.loads((out / "croc_run.json").read_text())["status"] == "running"
    assert not (out / ".croc-run.lock").exists()  # the lock went with the run


def test_a_nonfinite_gradient_with_a_finite_loss_is_caught(tiny_model, data, tmp_path, monkeypatch):
    """Only the gradient norm shows this one (pins `CrocTrainer._get_grad_norm`, the Trainer hook it rides on)."""
    load = train_module.load_model_and_processor

    def with_infinite_gradient(model_args, args):
        model, processor = load(model_args, args)
        model.model.multi_modal_projector.linear_1.weight.register_hook(lambda grad: grad * float("inf"))
        return model, processor

    monkeypatch.setattr(train_module, "load_model_and_processor", with_infinite_gradient)
    norms = []
    get_grad_norm = croc_trainer.CrocTrainer._get_grad_norm
    monkeypatch.setattr(croc_trainer.CrocTrainer, "_get_grad_norm",
                        lambda self, model, grad_norm=None: norms.append(get_grad_norm(self, model, grad_norm))
                        or norms[-1])
    with pytest.raises(TrainingDiverged, match=r"^training diverged at step 1: non-finite grad_norm (inf|nan);"):
        train_module.main(_argv(tmp_path / "run", tiny_model, data, "--max_steps=2"))
    assert len(norms) == 1 and not math.isfinite(float(norms[0]))
    assert not list((tmp_path / "run").glob("checkpoint-*"))


def test_nonfinite_steps_are_skipped_within_the_budget_and_the_budget_survives_a_resume(tiny_model, data, tmp_path,
                                                                                        monkeypatch):
    out = tmp_path / "run"
    _nan_loss_at(monkeypatch, {2})
    train_module.main(_argv(out, tiny_model, data, "--max_steps=3", "--max_nonfinite_steps=1"))
    # Step 2 changed nothing: the weights after it are the weights after step 1, bit for bit.
    assert_same_weights(weights(out / "checkpoint-2"), weights(out / "checkpoint-1"))
    assert not torch.equal(*(weights(out / f"checkpoint-{k}")["multi_modal_projector.linear_1.weight"]
                             for k in (2, 3)))
    assert _all_finite(weights(out)) and math.isfinite(curve(out)[3]["loss"])
    skipped = json.loads((out / "checkpoint-3" / NONFINITE_FILE).read_text())["skipped_steps"]
    assert skipped == [{"step": 2, "nonfinite": "loss, grad_norm nan"}]

    # The run's first two checkpoints in a folder of their own, resumed with one more NaN step: the budget was spent
    # in step 2, so the run stops at step 3.
    again = tmp_path / "again"
    for name in ("checkpoint-1", "checkpoint-2"):
        shutil.copytree(out / name, again / name)
    _nan_loss_at(monkeypatch, {3})
    with pytest.raises(TrainingDiverged, match=r"^training diverged at step 3: non-finite loss, grad_norm nan after "
                                               r"skipping 1 step\(s\) \(max_nonfinite_steps=1\);"):
        train_module.main(_argv(again, tiny_model, data, "--max_steps=3", "--max_nonfinite_steps=1"))
    assert sorted(p.name for p in again.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]


def test_nonfinite_weights_are_never_written(tiny_model, data, tmp_path, monkeypatch):
    """A weight that became NaN with finite losses and gradients (here: set by hand after step 2's forward) is refused
    at the save: checkpoint-2 is not written, nor the final folder."""
    training_step = croc_trainer.CrocTrainer.training_step

    def poison_a_weight(self, model, inputs, num_items_in_batch=None):
        loss = training_step(self, model, inputs, num_items_in_batch)
        if self.state.global_step + 1 == 2:
            with torch.no_grad():
                self.model.model.prompt_pool.weight[0, 0] = float("nan")
        return loss

    monkeypatch.setattr(croc_trainer.CrocTrainer, "training_step", poison_a_weight)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"^checkpoint-2 not written at step 2: the weights hold NaN or infinite "
                                               r"values \(first: model.prompt_pool.weight\);"):
        train_module.main(_argv(out, tiny_model, data, "--max_steps=3"))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert not (out / ".checkpoint-staging").exists() and not (out / "model.safetensors").exists()


@pytest.mark.parametrize("config", ["stage2.yaml", "stage1_5.yaml"])
def test_a_skipped_step_does_not_make_every_later_logged_loss_nan_without_the_nan_filter(tiny_model, data, tmp_path,
                                                                                        monkeypatch, config):
    """`logging_nan_inf_filter=false` logs the skipped step's window as NaN, as transformers documents; the Trainer's
    running loss, reset after each log by subtracting itself, stayed NaN, so steps 3 and 4 (finite losses, applied)
    were logged as NaN too, and the model card's final loss was NaN. They log as with the filter on."""
    _nan_loss_at(monkeypatch, {2})
    losses = {}
    for nan_filter in ("true", "false"):
        out = tmp_path / nan_filter
        train_module.main(run_argv(config, out, tiny_model, data, "--max_steps=4", "--max_nonfinite_steps=1",
                                   f"--logging_nan_inf_filter={nan_filter}"))
        losses[nan_filter] = {step: entry["loss"] for step, entry in curve(out).items()}
    assert math.isnan(losses["false"][2])
    assert [losses["false"][step] for step in (1, 3, 4)] == [losses["true"][step] for step in (1, 3, 4)]
    assert all(math.isfinite(losses["false"][step]) for step in (1, 3, 4))


def test_a_window_holding_a_skipped_step_logs_the_mean_of_its_applied_steps(tiny_model, data, tmp_path, monkeypatch):
    """The Trainer logs a skipped step with a stand-in loss (the window's running mean, added once per micro-batch):
    alone in its window it was logged as 0.0, a dip where the loss was NaN; sharing a window under gradient
    accumulation the stand-ins compounded (14% above the applied steps' mean, found by a hostile tester). Logged now:
    NaN for a window of no applied step, else the applied steps' mean."""
    _nan_loss_at(monkeypatch, {3})
    losses = {}
    def run(out, every):
        train_module.main(_argv(out, tiny_model, data, "--max_steps=4", "--max_nonfinite_steps=1",
                                "--gradient_accumulation_steps=2", f"--logging_steps={every}"))
        return {step: entry["loss"] for step, entry in curve(out).items()}

    losses = {every: run(tmp_path / f"every{every}", every) for every in (1, 4)}
    assert sorted(losses[1]) == [1, 2, 3, 4] and math.isnan(losses[1][3])
    assert sorted(losses[4]) == [4]
    assert losses[4][4] == pytest.approx((losses[1][1] + losses[1][2] + losses[1][4]) / 3, rel=1e-6)
    # Resumed inside the window, after the skipped step: the checkpoint carries where the window started.
    shutil.copytree(tmp_path / "every4" / "checkpoint-3", tmp_path / "again" / "checkpoint-3")
    assert run(tmp_path / "again", 4) == pytest.approx(losses[4], rel=1e-6)
    # The skipped step's rows were counted as seen and said nowhere to be unused: the data report counts them.
    for out in (tmp_path / "every4", tmp_path / "again"):
        report = json.loads((out / "data_report.json").read_text())
        assert report["rows_seen"] == 4 * report["rows_in_skipped_steps"] > 0, report
    # Without the filter the window logs NaN, as the option asks.
    train_module.main(_argv(tmp_path / "unfiltered", tiny_model, data, "--max_steps=4", "--max_nonfinite_steps=1",
                            "--gradient_accumulation_steps=2", "--logging_steps=4", "--logging_nan_inf_filter=false"))
    assert math.isnan(curve(tmp_path / "unfiltered")[4]["loss"])


def test_a_skipped_steps_croc_terms_leave_its_window_as_its_loss_does(tiny_model, data, tmp_path, monkeypatch):
    """Stage 1.5, step 2 of 4 not finite (its lm_loss NaN, as an overflow gives) and skipped: the window's `loss` was
    the applied steps' mean, but its `lm_loss` was NaN for the whole window (50 steps of NaN with logging_steps=50)
    and `vtr_loss` and the pool statistics counted the step (found by a hostile tester of the logged numbers). Each
    term is now the applied steps' mean, and the card takes the window."""
    import transformers

    compute_loss = transformers.Trainer.compute_loss

    def poisoned(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = compute_loss(self, model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training and self.state.global_step + 1 == 2:
            loss, outputs["lm_loss"] = loss * float("nan"), outputs["lm_loss"] * float("nan")
        return (loss, outputs) if return_outputs else loss

    monkeypatch.setattr(transformers.Trainer, "compute_loss", poisoned)
    runs = {}
    for every in (1, 4):
        out = tmp_path / f"every{every}"
        train_module.main(run_argv("stage1_5.yaml", out, tiny_model, data, "--max_steps=4", "--max_nonfinite_steps=1",
                                   f"--logging_steps={every}"))
        runs[every] = curve(out)
    applied = [runs[1][step] for step in (1, 3, 4)]
    window = runs[4][4]
    for key in ("loss", "lm_loss", "vtr_loss"):
        values = [entry[key] for entry in applied if key in entry]
        assert window[key] == pytest.approx(sum(values) / len(values), rel=1e-5), key
    assert math.isfinite(window["pool_entropy"]) and window["pool_utilisation"] > 0


class _ScaledTrainer:
    """What `RunControl` reads of a one-process Trainer under fp16 mixed precision: torch's GradScaler on its
    accelerator (accelerate makes one only on a GPU)."""

    def __init__(self, scale: float) -> None:
        from types import SimpleNamespace

        self.accelerator = SimpleNamespace(num_processes=1, scaler=torch.amp.GradScaler("cpu", init_scale=scale))
        self.args = SimpleNamespace(fp16=True)
        self.is_deepspeed_enabled = False
        self.model_wrapped = self.optimizer = torch.nn.Linear(1, 1)

    def is_world_process_zero(self) -> bool:
        return True

    def last_checkpoint_message(self) -> str:
        return "no checkpoint was written"


@pytest.mark.parametrize("scale", [2.0**16, 1.0])
def test_an_fp16_loss_scaler_overflow_is_the_scalers_skip_not_divergence(scale):
    """fp16's scaler starts at 65536 and overflows routinely in the first steps: it skips the step and halves its
    scale. The rule read the infinite gradient norm as divergence and stopped the run (with max_nonfinite_steps=0)
    or spent its budget."""
    from types import SimpleNamespace

    from trainer.run_control import RunControl

    control = RunControl(_ScaledTrainer(scale))
    control.observe_loss(torch.tensor(2.5))
    control.observe_grad_norm(float("inf"))
    control.on_pre_optimizer_step(None, SimpleNamespace(global_step=0), None)
    assert control.skipped_steps == [] and control.loss_steps == 0  # not an applied step either


def test_gradients_that_overflow_unscaled_are_divergence_under_a_loss_scaler():
    from types import SimpleNamespace

    from trainer.run_control import RunControl

    control = RunControl(_ScaledTrainer(0.5))
    control.observe_loss(torch.tensor(2.5))
    control.observe_grad_norm(float("inf"))
    with pytest.raises(TrainingDiverged, match="^training diverged at step 1: non-finite grad_norm inf"):
        control.on_pre_optimizer_step(None, SimpleNamespace(global_step=0), None)


class _DeepSpeedFp16Trainer(_ScaledTrainer):
    """The same under DeepSpeed fp16: the ZeRO optimiser's loss scaler (`cur_scale`, `min_scale`, `dynamic`), no
    GradScaler on the accelerator."""

    def __init__(self, dynamic: bool, scale: float, floor: float = 1.0) -> None:
        from types import SimpleNamespace

        super().__init__(scale)
        self.accelerator.scaler = None
        self.is_deepspeed_enabled = True
        self.model_wrapped = SimpleNamespace(optimizer=SimpleNamespace(
            loss_scaler=SimpleNamespace(dynamic=dynamic, cur_scale=scale, min_scale=floor)))


@pytest.mark.parametrize("dynamic,scale,skipped", [(True, 2.0**16, True), (True, 1.0, False), (False, 128.0, False)],
                         ids=["dynamic, above its floor", "dynamic, at its floor", "static"])
def test_deepspeed_fp16_overflow_is_the_scalers_only_above_its_floor(dynamic, scale, skipped):
    """At its floor DeepSpeed's dynamic scaler raises a traceback, and a static scale never moves: a run whose gradients
    overflow there diverged, and stops with the one line (before: skipped silently, or DeepSpeed's traceback)."""
    from types import SimpleNamespace

    from trainer.run_control import RunControl

    control = RunControl(_DeepSpeedFp16Trainer(dynamic, scale))
    control.observe_loss(torch.tensor(2.5))
    control.observe_grad_norm(float("inf"))
    if skipped:
        control.on_pre_optimizer_step(None, SimpleNamespace(global_step=0), None)
        assert control.skipped_steps == []
    else:
        with pytest.raises(TrainingDiverged, match="^training diverged at step 1: non-finite grad_norm inf"):
            control.on_pre_optimizer_step(None, SimpleNamespace(global_step=0), None)
