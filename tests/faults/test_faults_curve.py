"""Issue 20's curve with `logging_steps` > 1: a checkpoint written between two logs (`save_steps` not a multiple of
`logging_steps`, a preemption signal, a timed save) carries the open logging window (`trainer.logging_window`), so
the resumed run's log_history is the uninterrupted run's entry for entry: the same steps logged, the same values, no
extra entry. Before, the resumed run's first entry averaged only the steps after the resume (a hard kill after such
a save lost the window's steps from the curve), and a signal logged the window early (one entry more)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from run_cases import cli_exit, run_argv, signal_during_step, torchrun, write_small_folder

from trainer import croc_trainer
from trainer import train as train_module
from trainer.checkpoint_io import write_manifest
from trainer.logging_window import WINDOW_FILE

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_small_folder(tmp_path_factory.mktemp("curve_data"))


def _argv(out, tiny_model, data, *extra):
    # Stage 1.5 (the Croc terms and the pool histogram are logged beside the loss), 2 micro-batches a step: saves at
    # 2, 4, 6 and logs at 3, 6, so checkpoints 2 and 4 are written with a window open (steps 1-2 and 4).
    return run_argv("stage1_5.yaml", out, tiny_model, data, "--max_steps=6", "--save_strategy=steps",
                    "--save_steps=2", "--logging_steps=3", *extra)


def _history(folder: Path) -> list[dict]:
    return json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))["log_history"]


def assert_same_history(resumed: Path, reference: Path) -> None:
    """The resumed run's log_history is the reference's: as many entries, each training entry equal (float
    tolerance; NaN where the reference logged NaN)."""
    got, want = _history(resumed), _history(reference)
    assert len(got) == len(want), ([e["step"] for e in got], [e["step"] for e in want])
    got, want = [e for e in got if "loss" in e], [e for e in want if "loss" in e]
    assert [e["step"] for e in got] == [e["step"] for e in want]
    for entry, expected in zip(got, want):
        assert sorted(entry) == sorted(expected), entry["step"]
        assert entry == pytest.approx(expected, rel=1e-6, nan_ok=True), entry["step"]


@pytest.fixture(scope="module")
def reference(tiny_model, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    train_module.main(_argv(out, tiny_model, data))
    assert [e["step"] for e in _history(out) if "loss" in e] == [3, 6]
    return out


@pytest.mark.parametrize("step", [2, 4])
def test_a_run_resumed_from_a_save_between_two_logs_logs_the_uninterrupted_entries(reference, tiny_model, data,
                                                                                    tmp_path, step):
    """The checkpoint alone (what a kill leaves): its window (steps 1-2, or step 4) is logged with the resumed steps,
    as the uninterrupted run logged it."""
    out = tmp_path / "run"
    shutil.copytree(reference / f"checkpoint-{step}", out / f"checkpoint-{step}")
    window = json.loads((out / f"checkpoint-{step}" / WINDOW_FILE).read_text(encoding="utf-8"))
    assert (window["step"], window["last_logged_step"], len(window["processes"])) == (step, 0 if step == 2 else 3, 1)
    train_module.main(_argv(out, tiny_model, data))
    assert_same_history(out, reference)



def test_a_run_preempted_between_two_logs_resumes_onto_the_same_entries(reference, tiny_model, data, tmp_path,
                                                                        monkeypatch, capsys):
    """Stopped at step 5 (window: steps 4-5): the stop logs nothing early (an entry at step 5 the uninterrupted run
    has not), the checkpoint carries the window, the resumed entry at step 6 averages steps 4-6."""
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        signal_during_step(patch, 5)
        assert cli_exit(_argv(out, tiny_model, data), monkeypatch, capsys)[0] == 75
    assert [e["step"] for e in _history(out / "checkpoint-5") if "loss" in e] == [3]
    train_module.main(_argv(out, tiny_model, data))
    assert_same_history(out, reference)


def _nan_loss_at(monkeypatch, step: int) -> None:
    compute_loss = croc_trainer.CrocTrainer.compute_loss

    def poisoned(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = compute_loss(self, model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if self.state.global_step + 1 != step:
            return result
        loss, outputs = result if return_outputs else (result, None)
        loss = loss * float("nan")
        return (loss, outputs) if return_outputs else loss

    monkeypatch.setattr(croc_trainer.CrocTrainer, "compute_loss", poisoned)


@pytest.mark.parametrize("nan_filter", ["true", "false"])
def test_a_skipped_step_after_the_resume_is_logged_as_the_uninterrupted_run_logs_it(tiny_model, data, tmp_path,
                                                                                   monkeypatch, nan_filter):
    """Step 5 is not finite and skipped (`max_nonfinite_steps`), in the window the resume reopened (steps 4-6): the
    Trainer's stand-in for it (logging_nan_inf_filter=true) is the window's mean so far, which needs the window's
    loss and first step; with the filter off the entry is NaN, as uninterrupted."""
    _nan_loss_at(monkeypatch, 5)
    extra = ("--max_nonfinite_steps=1", f"--logging_nan_inf_filter={nan_filter}")
    uninterrupted, out = tmp_path / "uninterrupted", tmp_path / "run"
    train_module.main(_argv(uninterrupted, tiny_model, data, *extra))
    shutil.copytree(uninterrupted / "checkpoint-4", out / "checkpoint-4")
    train_module.main(_argv(out, tiny_model, data, *extra))
    assert_same_history(out, uninterrupted)


def test_a_checkpoint_without_the_window_resumes_as_before_with_one_line(reference, tiny_model, data, tmp_path,
                                                                         capsys):
    """An earlier version's checkpoint (no window file, its manifest without it) resumes; the one line says the
    first entry averages only the steps trained from the resume."""
    out = tmp_path / "run"
    shutil.copytree(reference / "checkpoint-4", out / "checkpoint-4")
    (out / "checkpoint-4" / WINDOW_FILE).unlink()
    write_manifest(out / "checkpoint-4")
    capsys.readouterr()
    train_module.main(_argv(out, tiny_model, data))
    lines = [line for line in capsys.readouterr().err.splitlines() if WINDOW_FILE in line]
    assert len(lines) == 1 and lines[0].endswith(
        f"{out / 'checkpoint-4'} holds no {WINDOW_FILE} (an earlier version's checkpoint): the first loss logged "
        "after the resume averages only the steps trained from here"), lines
    resumed = {e["step"]: e for e in _history(out) if "loss" in e}
    assert sorted(resumed) == [3, 6]
    assert resumed[6]["loss"] != pytest.approx(_history(reference)[1]["loss"], rel=1e-6)  # steps 5-6 only


def test_the_trainer_keeps_its_window_where_logging_window_reads_it(tiny_model, data, tmp_path):
    """Pins the Trainer's private logging state `trainer.logging_window` reads and restores: `_tr_loss` (the summed
    loss since the last log, a tensor on the device), `_globalstep_last_logged` and `_total_loss_scalar`, opened
    before `on_train_begin` and read when a step is logged."""
    from transformers import TrainerCallback

    seen = {}

    class Probe(TrainerCallback):
        def __init__(self, trainer):
            self.trainer = trainer

        def on_train_begin(self, args, state, control, **kwargs):
            trainer = self.trainer
            seen["begin"] = (type(trainer._tr_loss), float(trainer._tr_loss), trainer._globalstep_last_logged,
                             trainer._total_loss_scalar)

        def on_step_end(self, args, state, control, **kwargs):
            seen.setdefault("steps", []).append((state.global_step, float(self.trainer._tr_loss),
                                                 self.trainer._globalstep_last_logged))

    build = train_module.CrocTrainer

    def with_probe(*args, **kwargs):
        trainer = build(*args, **kwargs)
        trainer.add_callback(Probe(trainer))
        return trainer

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "CrocTrainer", with_probe)
        train_module.main(run_argv("stage1_5.yaml", tmp_path / "run", tiny_model, data, "--max_steps=2",
                                   "--logging_steps=2"))
    assert seen["begin"] == (torch.Tensor, 0.0, 0, 0.0)
    (_, after_one, last_one), (_, _, last_two) = seen["steps"]
    logged = _history(tmp_path / "run")[0]
    assert last_one == last_two == 0  # on_step_end runs before the step's log
    assert after_one > 0 and logged["step"] == 2


@pytest.mark.slow
def test_a_kill_after_a_save_between_two_logs_resumes_onto_the_same_entries(tiny_model, data, tmp_path):
    """SIGKILL (no signal handler runs) right after checkpoint-4 is complete, or right before, so the rerun
    resumes from checkpoint-2 (tests/faults/kill_driver.py)."""
    argv = _argv(tmp_path / "unused", tiny_model, data)
    argv = [arg for arg in argv if not arg.startswith("--output_dir=")]
    scenarios = [{"name": f"rename-{moment}", "out": str(tmp_path / moment), "file": "rename", "moment": moment,
                  "step": 4} for moment in ("before", "after")]
    spec = {"argv": argv, "reference": str(tmp_path / "reference"), "scenarios": scenarios,
            "results": str(tmp_path / "results.json")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("kill_driver.py")), str(tmp_path / "spec.json")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    results = json.loads((tmp_path / "results.json").read_text())
    for moment, resumed_from in (("before", "checkpoint-2"), ("after", "checkpoint-4")):
        result = results[f"rename-{moment}"]
        assert result["first"]["killed"], result["first"]["log"][-3000:]
        assert result["second"]["exit_code"] == 0, result["second"]["log"][-4000:]
        assert f"resuming from {tmp_path / moment / resumed_from}" in result["second"]["log"]
        assert_same_history(tmp_path / moment, tmp_path / "reference")


def test_every_window_logs_the_croc_terms_of_the_loss_it_is_logged_beside(reference):
    """`loss = lm_loss + vtr_loss_weight * vtr_loss` holds for each step, so for each window's mean: the run's first
    window (from step 0) logged the sums of its three steps' terms beside their mean loss."""
    weight = json.loads((reference / "config.json").read_text(encoding="utf-8"))["vtr_loss_weight"]
    for entry in (e for e in _history(reference) if "loss" in e):
        assert entry["lm_loss"] + weight * entry["vtr_loss"] == pytest.approx(entry["loss"], rel=1e-5), entry["step"]


def test_steps_of_text_only_rows_log_no_vtr_terms_and_leave_them_out_of_their_window(tiny_model, data, tmp_path,
                                                                                     capsys):
    """`group_by_modality_length` (the shipped stage-1.5 YAML's) makes whole steps of text-only rows: each logged
    `vtr_loss`, `pool_utilisation` and `pool_entropy` 0 (a pool collapse to read), averaged those zeros into its
    window (half the VTR loss of every step that had one), and the model card published 0 as the final VTR loss
    (found by a hostile tester of the logged numbers). Such a step logs none of them; a window averages the steps
    that reconstruct; the card names the step each final value was logged at."""
    runs = {}
    for every in (1, 3):
        out = tmp_path / f"every{every}"
        # 6 image rows and 2 text rows, 4 a step by modality: two image steps and one text step an epoch.
        train_module.main(run_argv("stage1_5.yaml", out, tiny_model, data, "--max_steps=3",
                                   "--per_device_train_batch_size=4", "--group_by_modality_length=true",
                                   f"--logging_steps={every}"))
        runs[every] = {e["step"]: e for e in _history(out) if "loss" in e}
    # The sampler fills each modality's last batch with its own rows again, on one process too: said once a run.
    said = [line for line in capsys.readouterr().err.splitlines() if "each epoch trains 12 rows for the 8 kept" in line]
    assert len(said) == 2 and said[0].endswith(
        "group_by_modality_length fills each modality's last round of 1 process(es) x 4 rows with 4 of its own rows "
        "again, so that no batch is short or mixed; the data report counts them as seen"), said
    text_steps = [step for step, entry in runs[1].items() if "vtr_loss" not in entry]
    assert len(text_steps) == 1, runs[1]
    text = runs[1][text_steps[0]]
    assert not {"pool_utilisation", "pool_entropy", "vtr_prediction_norm"} & set(text) and text["vtr_share"] == 0
    assert text["loss"] == pytest.approx(text["lm_loss"], rel=1e-6)
    image_vtr = [entry["vtr_loss"] for entry in runs[1].values() if "vtr_loss" in entry]
    window = runs[3][3]
    assert window["vtr_loss"] == pytest.approx(sum(image_vtr) / 2, rel=1e-5)
    assert window["lm_loss"] == pytest.approx(sum(e["lm_loss"] for e in runs[1].values()) / 3, rel=1e-5)
    weight = json.loads((tmp_path / "every1" / "config.json").read_text(encoding="utf-8"))["vtr_loss_weight"]
    assert window["vtr_share"] == pytest.approx(weight * sum(image_vtr) / 3 / window["loss"], rel=1e-5)
    card = (tmp_path / "every1" / "README.md").read_text(encoding="utf-8")
    last_image_step = max(step for step, entry in runs[1].items() if "vtr_loss" in entry)
    assert f"| vtr_loss | {round(runs[1][last_image_step]['vtr_loss'], 6)} | {last_image_step} |" in card
    assert "vtr_loss: 0.0" not in card and "pool_entropy: 0.0" not in card


@pytest.mark.slow
@pytest.mark.parametrize("across", ["true", "false"])
def test_a_process_with_text_rows_only_adds_its_zero_to_a_steps_vtr_term(tiny_model, data, tmp_path, across):
    """2 processes, rows in order: step 2 gives process 0 two image rows and process 1 the two text rows. The step
    reconstructs (on process 0), so it is a VTR step on both, and its logged terms are the optimised ones: with
    tokens not averaged across devices each process's VTR term is its own mean, and process 1's 0 is half the step's;
    counted a VTR step on process 0 only, the logged vtr_loss doubled (found by a hostile tester of today's changes)."""
    out = tmp_path / "run"
    done = torchrun(run_argv("stage1_5.yaml", out, tiny_model, data, "--max_steps=2",
                             "--train_sampling_strategy=sequential", f"--average_tokens_across_devices={across}"))
    assert done.returncode == 0, done.stderr[-4000:]
    weight = json.loads((out / "config.json").read_text(encoding="utf-8"))["vtr_loss_weight"]
    entries = [e for e in _history(out) if "loss" in e]
    assert [e["step"] for e in entries] == [1, 2]
    for entry in entries:
        assert entry["lm_loss"] + weight * entry["vtr_loss"] == pytest.approx(entry["loss"], rel=1e-5), entry


@pytest.mark.slow
def test_two_processes_preempted_between_two_logs_resume_onto_the_same_entries(tiny_model, data, tmp_path):
    """torchrun, 2 processes (gloo), 2 rows each a step: SIGTERM in step 5 (window: steps 4-5, each process's sums
    its own); the checkpoint holds both processes' windows, each process gets its own back, and the rerun logs the
    uninterrupted run's entries."""
    reference, out = tmp_path / "reference", tmp_path / "run"
    done = torchrun(_argv(reference, tiny_model, data))
    assert done.returncode == 0, done.stderr[-4000:]
    first = torchrun(_argv(out, tiny_model, data), fault="sigterm-launcher:5")
    assert first.returncode != 0 and (out / "checkpoint-5").is_dir(), first.stderr[-4000:]
    window = json.loads((out / "checkpoint-5" / WINDOW_FILE).read_text(encoding="utf-8"))
    assert (window["last_logged_step"], len(window["processes"])) == (3, 2)
    assert window["processes"][0]["loss_sum"] != window["processes"][1]["loss_sum"]  # each process's own rows
    again = torchrun(_argv(out, tiny_model, data))
    assert again.returncode == 0, again.stderr[-4000:]
    assert_same_history(out, reference)


def test_windows_saved_by_other_processes_reduce_to_the_same_logged_values():
    """Resumed on another number of processes: each gets a share that the log's reductions (losses averaged over
    processes, histogram and norms summed) turn into the values the saved processes would have logged."""
    from types import SimpleNamespace

    from trainer.logging_window import LoggingWindow

    saved = [{"loss_sum": 4.0, "croc": {"window_start_step": 3, "losses": [2.0, 0.5], "histogram": [1.0, 0.0],
                                        "norms": [2.0, 4.0, 2.0], "steps": 2, "vtr_steps": 1.0}},
             {"loss_sum": 6.0, "croc": {"window_start_step": 3, "losses": [4.0, 1.5], "histogram": [0.0, 3.0],
                                        "norms": [6.0, 8.0, 4.0], "steps": 2, "vtr_steps": 2.0}}]

    def share(world, rank):
        return LoggingWindow(SimpleNamespace(args=SimpleNamespace(world_size=world, process_index=rank)))._share(saved)

    assert share(2, 1)["loss_sum"] == 6.0 and share(2, 1)["croc"] == saved[1]["croc"]  # its own
    one = share(1, 0)
    assert (one["loss_sum"], one["loss_mean"]) == (5.0, 5.0)
    # The VTR-step counts are averaged like the loss sums they divide: 2.0 / 1.5, the saved processes' 0.5 + 1.5
    # over their 1 + 2 VTR steps.
    assert one["croc"] == {"window_start_step": 3, "losses": [3.0, 1.0], "histogram": [1.0, 3.0],
                           "norms": [8.0, 12.0, 6.0], "steps": 2, "vtr_steps": 1.5}
    four = [share(4, rank) for rank in range(4)]
    assert sum(part["loss_sum"] for part in four) / 4 == 5.0
    assert [sum(values) for values in zip(*(part["croc"]["histogram"] for part in four))] == [1.0, 3.0]


def _epoch_argv(out, tiny_model, data, *extra):
    # logging_strategy=epoch: 8 rows, 4 a step, so an epoch is 2 steps, logged at its end (steps 2, 4, 6).
    return run_argv("stage1_5.yaml", out, tiny_model, data, "--max_steps=6", "--logging_strategy=epoch", *extra)


@pytest.fixture(scope="module")
def epoch_reference(tiny_model, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted_epochs") / "run"
    train_module.main(_epoch_argv(out, tiny_model, data, "--save_strategy=steps", "--save_steps=2"))
    assert [e["step"] for e in _history(out) if "loss" in e] == [2, 4, 6]
    return out


def test_a_checkpoint_at_an_epochs_end_holds_the_epochs_entry(epoch_reference, tiny_model, data, tmp_path):
    """logging_strategy=epoch logs at the epoch's end, after the last step's save: checkpoint-2 held steps 1-2 as an
    open window and no entry at step 2, so its resume lost that entry and logged steps 1-4 as one at step 4."""
    out = tmp_path / "run"
    assert [e["step"] for e in _history(epoch_reference / "checkpoint-2") if "loss" in e] == [2]
    shutil.copytree(epoch_reference / "checkpoint-2", out / "checkpoint-2")
    train_module.main(_epoch_argv(out, tiny_model, data, "--save_strategy=steps", "--save_steps=2"))
    assert_same_history(out, epoch_reference)


def test_a_signal_within_an_epoch_logs_nothing_at_the_epochs_end(epoch_reference, tiny_model, data, tmp_path,
                                                                   monkeypatch, capsys):
    """SIGTERM in step 3, within the second epoch: the loop's end logged the open window (an entry at step 3 the
    uninterrupted run has not) and save_strategy=epoch wrote checkpoint-3 again, with that entry and no window."""
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        signal_during_step(patch, 3)
        assert cli_exit(_epoch_argv(out, tiny_model, data, "--save_strategy=epoch"), monkeypatch, capsys)[0] == 75
    assert [e["step"] for e in _history(out / "checkpoint-3") if "loss" in e] == [2]
    train_module.main(_epoch_argv(out, tiny_model, data, "--save_strategy=epoch"))
    assert_same_history(out, epoch_reference)
