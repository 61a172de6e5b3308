"""Issue 20, preemption: SIGTERM (or SIGUSR1, Slurm's `--signal`) makes the run finish its step, write a complete
checkpoint and exit with status 75; the rerun continues on the uninterrupted loss curve, to the same weights. Also:
a signal before the first step, a second signal, timed checkpoints, and the option's checks."""

from __future__ import annotations

import errno
import gc
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from run_cases import (
    REPO,
    assert_same_weights,
    cli_exit,
    curve,
    run_argv,
    signal_during_step,
    weights,
    write_small_folder,
)

from trainer import croc_trainer
from trainer import train as train_module
from trainer.checkpoint_io import checkpoint_problem
from trainer.run_control import PREEMPTED_EXIT_CODE, DetachableStream, RunPreempted


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_small_folder(tmp_path_factory.mktemp("preemption_data"))


def _argv(out, tiny_model, data, *extra):
    # Stage 1.5 (masks drawn per step, the pool, the VTR head): what a resume must continue exactly.
    return run_argv("stage1_5.yaml", out, tiny_model, data, "--max_steps=4", *extra)



@pytest.fixture(scope="module")
def reference(tiny_model, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    train_module.main(_argv(out, tiny_model, data))
    return out


@pytest.mark.parametrize("name", ["SIGTERM", "SIGUSR1", "SIGINT"])
def test_a_preempted_run_saves_exits_75_and_resumes_onto_the_same_curve(reference, tiny_model, data, tmp_path,
                                                                        monkeypatch, capsys, name):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        signal_during_step(patch, 2, signal.Signals[name])
        status, message = cli_exit(_argv(out, tiny_model, data), monkeypatch, capsys)
    assert status == PREEMPTED_EXIT_CODE == 75
    assert message == (f"run stopped: stopped by {name} after step 2: checkpoint-2 written in {out}; rerun the same "
                       "command to continue")
    # The config saves nothing by itself (save_strategy "no"): the signal's checkpoint is the only one, complete.
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert checkpoint_problem(out / "checkpoint-2") is None
    assert not (out / "model.safetensors").exists() and not (out / ".croc-run.lock").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers went with the run

    train_module.main(_argv(out, tiny_model, data))  # the same command
    expected, resumed = curve(reference), curve(out)
    assert sorted(resumed) == sorted(expected) == [1, 2, 3, 4]
    for step, entry in expected.items():
        for key in ("loss", "lm_loss", "vtr_loss", "grad_norm", "learning_rate", "pool_utilisation"):
            assert resumed[step][key] == entry[key], (step, key)
    assert_same_weights(weights(out), weights(reference))


def test_a_signal_during_a_scheduled_save_stops_on_that_checkpoint(reference, tiny_model, data, tmp_path,
                                                                   monkeypatch, capsys):
    """A signal that arrives while a checkpoint of `save_steps` is written stops the run on it: agreed at the next
    step, it trained one more step and wrote one more checkpoint inside the grace period before SIGKILL (found by a
    hostile tester)."""
    save_checkpoint = croc_trainer.CrocTrainer._save_checkpoint

    def signalled(self, model, trial):
        if self.state.global_step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return save_checkpoint(self, model, trial)

    out = tmp_path / "run"
    argv = _argv(out, tiny_model, data, "--save_strategy=steps", "--save_steps=2")
    with monkeypatch.context() as patch:
        patch.setattr(croc_trainer.CrocTrainer, "_save_checkpoint", signalled)
        status, message = cli_exit(argv, monkeypatch, capsys)
    assert status == PREEMPTED_EXIT_CODE
    assert message == (f"run stopped: stopped by SIGTERM after step 2: checkpoint-2 written in {out}; rerun the same "
                       "command to continue")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    train_module.main(argv)
    expected, resumed = curve(reference), curve(out)
    assert sorted(resumed) == sorted(expected) == [1, 2, 3, 4]
    assert all(resumed[step]["loss"] == entry["loss"] for step, entry in expected.items())


def test_a_signal_before_the_first_step_stops_with_nothing_to_save(tiny_model, data, tmp_path, monkeypatch, capsys):
    """Received while the rows are read (or the model loads): there is nothing to checkpoint; the run says so and
    exits 75 before training, and the rerun starts as if nothing happened."""
    load_rows = train_module.load_training_rows

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return load_rows(*args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(train_module, "load_training_rows", signalled)
    status, message = cli_exit(_argv(out, tiny_model, data), monkeypatch, capsys)
    assert (status, message) == (75, "run stopped: stopped by SIGTERM before training step 1; nothing new to save; "
                                     "rerun the same command to continue")
    assert not list(out.glob("checkpoint-*")) and not (out / "model.safetensors").exists()


def test_timed_checkpoints_are_written_whatever_save_steps_says(tiny_model, data, tmp_path):
    """`save_interval_minutes`: a hard kill (no signal) costs at most that much work. An interval of a few
    milliseconds is due at every step end."""
    out = tmp_path / "run"
    train_module.main(_argv(out, tiny_model, data, "--max_steps=2", "--save_interval_minutes=0.0001"))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert all(checkpoint_problem(folder) is None for folder in out.glob("checkpoint-*"))


def test_a_repeated_signal_changes_nothing(tiny_model, data, tmp_path, monkeypatch, capsys):
    """On a cluster the signal often comes twice (Slurm signals every process of the step, torchrun forwards what it
    receives): the run still finishes its step and writes its checkpoint."""
    signal_during_step(monkeypatch, 2, signal.SIGTERM, signal.SIGUSR1)
    out = tmp_path / "run"
    status, message = cli_exit(_argv(out, tiny_model, data), monkeypatch, capsys)
    assert (status, message) == (75, f"run stopped: stopped by SIGTERM after step 2: checkpoint-2 written in {out}; "
                                     "rerun the same command to continue")
    assert checkpoint_problem(out / "checkpoint-2") is None


def test_saving_and_logging_asked_for_on_the_resume_are_what_the_resumed_run_does(reference, tiny_model, data,
                                                                                   tmp_path, monkeypatch, capsys):
    """A run of a config that saves nothing, stopped by Ctrl-C, is resumed with `save_steps` as its start-up warning
    says: the Trainer took save and logging steps from the checkpoint's trainer_state.json (500 and 1), so the resumed
    run wrote no checkpoint and logged at the old interval, and a kill would again lose everything since step 2."""
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        signal_during_step(patch, 2, signal.SIGINT)
        assert cli_exit(_argv(out, tiny_model, data), monkeypatch, capsys)[0] == 75
    train_module.main(_argv(out, tiny_model, data, "--save_strategy=steps", "--save_steps=1", "--logging_steps=2"))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3", "checkpoint-4"]
    resumed, expected = curve(out), curve(reference)
    assert sorted(resumed) == [1, 2, 4]  # steps 3 and 4 logged as one entry, at step 4
    assert resumed[4]["loss"] == pytest.approx((expected[3]["loss"] + expected[4]["loss"]) / 2, rel=1e-6)


def test_a_run_preempted_between_two_logs_keeps_its_open_window_for_the_resume(reference, tiny_model, data, tmp_path,
                                                                                monkeypatch, capsys):
    """logging_steps=2, stopped at step 3: the open window (step 3) was not in the checkpoint, so step 3's loss was
    lost and the resumed entry at step 4 was step 4's alone; then the stop logged it early (an entry at step 3 the
    uninterrupted run has not). The checkpoint carries the window: the resumed run logs at steps 2 and 4, as
    uninterrupted, step 4's entry averaging steps 3 and 4 (tests/faults/test_faults_curve.py checks whole curves)."""
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        signal_during_step(patch, 3, signal.SIGTERM)
        assert cli_exit(_argv(out, tiny_model, data, "--logging_steps=2"), monkeypatch, capsys)[0] == 75
    train_module.main(_argv(out, tiny_model, data, "--logging_steps=2"))
    resumed, expected = curve(out), curve(reference)  # the reference logs every step
    assert sorted(resumed) == [2, 4]
    for step in (2, 4):
        for key in ("loss", "lm_loss", "vtr_loss"):
            mean = (expected[step - 1][key] + expected[step][key]) / 2
            assert resumed[step][key] == pytest.approx(mean, rel=1e-6), (step, key)


@pytest.mark.parametrize(("value", "fragment"), [
    ("[SIGKILL]", "preemption_signals: SIGKILL cannot be caught by any process"),
    ("[SIGFOO]", "preemption_signals: unknown signal 'SIGFOO'"),
    ("[SIGCHLD]", "preemption_signals: SIGCHLD does not ask a process to end"),
    ("[SIGSEGV]", "preemption_signals: SIGSEGV does not ask a process to end"),
])
def test_preemption_signals_are_checked_before_anything_loads(tiny_model, data, tmp_path, monkeypatch, capsys,
                                                              no_model_load, value, fragment):
    status, message = cli_exit(_argv(tmp_path / "run", tiny_model, data, f"--preemption_signals={value}"),
                               monkeypatch, capsys)
    assert status == 1 and message.startswith("configuration error: ") and fragment in message, message
    assert not (tmp_path / "run").exists()


def test_transformers_jit_checkpointing_is_refused_before_anything_loads(tiny_model, data, tmp_path, monkeypatch,
                                                                         capsys, no_model_load):
    # Its SIGTERM handler, installed when the Trainer is built, replaced the run's: a SIGTERM in step 2 of 4 let the
    # run train step 3, write its final model, record itself finished and exit 0 instead of 75.
    status, message = cli_exit(_argv(tmp_path / "run", tiny_model, data, "--enable_jit_checkpoint=true"),
                               monkeypatch, capsys)
    assert status == 1 and message.startswith("configuration error: enable_jit_checkpoint=true"), message
    assert not (tmp_path / "run").exists()


def test_preemption_is_reported_to_callers_of_main(tiny_model, data, tmp_path, monkeypatch):
    signal_during_step(monkeypatch, 1, signal.SIGTERM)
    with pytest.raises(RunPreempted) as stopped:
        train_module.main(_argv(tmp_path / "run", tiny_model, data, "--max_steps=2"))
    assert stopped.value.exit_code == 75


def test_a_preempted_run_whose_report_cannot_be_written_still_asks_to_be_requeued(tiny_model, data, tmp_path,
                                                                                    monkeypatch, capsys):
    """The disk filling at the preemption checkpoint's end: data_report.json (the checkpoint holds its copy) failed
    with a traceback and exit status 1, so the scheduler took the run for failed rather than requeued it."""
    from trainer.data_report import DataReport

    write = DataReport.write

    def full_disk(self, folder):
        if "checkpoint" not in str(folder):
            raise OSError(28, "No space left on device")
        return write(self, folder)

    monkeypatch.setattr(DataReport, "write", full_disk)
    signal_during_step(monkeypatch, 1, signal.SIGTERM)
    status, message = cli_exit(_argv(tmp_path / "run", tiny_model, data, "--max_steps=2"), monkeypatch, capsys)
    assert status == 75 and message.startswith("run stopped: stopped by SIGTERM after step 1"), message


def test_ctrl_c_twice_interrupts_at_once_and_says_how_to_resume(tiny_model, data, tmp_path, monkeypatch, capsys):
    signal_during_step(monkeypatch, 2, signal.SIGINT, signal.SIGINT)
    out = tmp_path / "run"
    status, message = cli_exit(_argv(out, tiny_model, data, "--save_strategy=steps", "--save_steps=1"), monkeypatch,
                               capsys)
    assert (status, message) == (130, "interrupted (Ctrl-C twice): the step in progress was not saved; rerunning the "
                                      "same command resumes from checkpoint-1, the newest checkpoint in output_dir")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert not (out / ".croc-run.lock").exists()


def test_ctrl_c_twice_before_any_checkpoint_says_the_rerun_starts_over(tiny_model, data, tmp_path, monkeypatch,
                                                                       capsys):
    """It promised a resume from the newest checkpoint where there was none (a newcomer's first run)."""
    signal_during_step(monkeypatch, 2, signal.SIGINT, signal.SIGINT)
    out = tmp_path / "run"
    status, message = cli_exit(_argv(out, tiny_model, data), monkeypatch, capsys)
    assert (status, message) == (130, "interrupted (Ctrl-C twice): the step in progress was not saved; no checkpoint "
                                      "was written yet, so rerunning the same command starts the run over")
    assert not list(out.glob("checkpoint-*"))


def test_ctrl_c_twice_with_auto_resume_off_says_how_to_continue(tiny_model, data, tmp_path, monkeypatch, capsys):
    """With auto_resume=false the same command starts over (the checkpoints set aside): the line promised it
    resumed from the newest checkpoint."""
    signal_during_step(monkeypatch, 2, signal.SIGINT, signal.SIGINT)
    out = tmp_path / "run"
    status, message = cli_exit(_argv(out, tiny_model, data, "--save_strategy=steps", "--save_steps=1",
                                     "--auto_resume=false"), monkeypatch, capsys)
    assert (status, message) == (130, "interrupted (Ctrl-C twice): the step in progress was not saved; checkpoint-1 "
                                      "is the newest checkpoint in output_dir: continue with --resume_from_checkpoint="
                                      f"{out / 'checkpoint-1'} (with auto_resume=false the same command would start "
                                      "over)")


def test_a_log_file_on_a_disk_full_for_a_moment_loses_lines_not_the_stream():
    """A log file (`> train.log`) on a disk a checkpoint filled: a write fails with ENOSPC, then the disk has room
    again. Only a reader that is gone (EPIPE, EIO) is gone for good: the stream went to /dev/null at the first failed
    write, and the run's last line (why it stopped) never reached the log."""
    class FullForAMoment(io.StringIO):
        full = True

        def write(self, text: str) -> int:
            if self.full:
                self.full = False
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return super().write(text)

    log = FullForAMoment()
    stream = DetachableStream(log)
    assert stream.write("lost\n") == len("lost\n")
    stream.write("run stopped: kept\n")
    stream.flush()
    assert log.getvalue() == "run stopped: kept\n"


@pytest.mark.slow
@pytest.mark.parametrize("fault", [None, "sigterm-self:2"])
def test_a_detached_run_whose_output_reader_is_gone_still_trains_and_exits_as_it_should(tiny_model, data, tmp_path,
                                                                                      fault):
    """A job detached from its terminal, or piped into a `tee` that died with it: every write to stdout and stderr
    fails (EPIPE; a hung-up terminal gives EIO). The Trainer prints every log entry: the run ended at its first log
    with a BrokenPipeError traceback, status 1, and a preempted one did not exit 75, so it was not requeued."""
    driver = Path(__file__).with_name("fault_driver.py")
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]))
    env.pop("CROC_FAULT", None)
    if fault:
        env["CROC_FAULT"] = fault
    out = tmp_path / "run"
    argv = _argv(out, tiny_model, data, "--save_strategy=steps", "--save_steps=2")
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the run writes anything
    try:
        done = subprocess.run([sys.executable, str(driver), *argv], cwd=repo, env=env, stdout=write, stderr=write,
                              timeout=600)
    finally:
        os.close(write)
    if fault:
        assert done.returncode == PREEMPTED_EXIT_CODE
        assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
        assert checkpoint_problem(out / "checkpoint-2") is None
    else:
        assert done.returncode == 0
        assert (out / "model.safetensors").exists() and checkpoint_problem(out / "checkpoint-4") is None


@pytest.mark.parametrize("persistent", [False, True])
def test_a_sigterm_to_every_process_of_the_run_reaches_its_dataloader_workers_too(reference, tiny_model, data,
                                                                                 tmp_path, monkeypatch, capsys,
                                                                                 persistent):
    """Slurm signals every process of a step, torchrun the process group of each rank: the DataLoader workers get
    the SIGTERM too. Before: torch's worker died on it and the run ended with `RuntimeError: DataLoader worker (pid
    N) is killed by signal: Terminated`, no checkpoint."""
    import multiprocessing

    compute_loss = croc_trainer.CrocTrainer.compute_loss

    # In step 1: the loader reads one batch ahead, so the last step of an epoch runs with its workers gone.
    def signalled(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.state.global_step == 0 and not getattr(self, "_signalled", False):
            self._signalled = True
            workers = [int(pid) for task in Path("/proc/self/task").iterdir()
                       for pid in (task / "children").read_text().split()]
            assert len(workers) == 2, workers
            # From another process, as the scheduler's: torch's workers take their parent's SIGTERM as an order.
            subprocess.run(["kill", "-TERM", *map(str, [*workers, os.getpid()])], check=True)
        return compute_loss(self, model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    out = tmp_path / "run"
    workers = ["--dataloader_num_workers=2", f"--dataloader_persistent_workers={str(persistent).lower()}"]
    with monkeypatch.context() as patch:
        patch.setattr(croc_trainer.CrocTrainer, "compute_loss", signalled)
        status, message = cli_exit(_argv(out, tiny_model, data, *workers), monkeypatch, capsys)
    assert (status, message) == (75, f"run stopped: stopped by SIGTERM after step 1: checkpoint-1 written in {out}; "
                                     "rerun the same command to continue")
    train_module.main(_argv(out, tiny_model, data, *workers))
    assert curve(out) == curve(reference)
    # The training process still ends its workers (with a SIGTERM of its own, which they obey).
    gc.collect()
    for worker in multiprocessing.active_children():
        worker.join(timeout=15)
        assert not worker.is_alive()


class _Rows(torch.utils.data.Dataset):
    """Rows read slowly; row 0 also starts a process, as an image decoder would, and says whether SIGTERM ends it."""

    def __len__(self) -> int:
        return 10_000

    def __getitem__(self, index: int):
        import time

        if index == 0:
            child = subprocess.Popen(["sleep", "30"])
            child.terminate()
            try:
                return child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                return child.wait()
        time.sleep(0.05)
        return index


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_ignore_a_strangers_sigterm_under_every_start_method_and_pass_no_mask_on(context):
    """Before: SIGTERM was blocked in the worker's main thread only. A spawned worker's imports had started threads
    already; the kernel gave Slurm's SIGTERM to one of them and torch's handler ended the worker. And a process the
    worker started inherited the blocked SIGTERM: terminate() no longer ended it (an image decoder)."""
    import time

    from trainer.run_control import StopSignals, workers_ended_by_sigkill

    loader = torch.utils.data.DataLoader(_Rows(), num_workers=2, multiprocessing_context=context,
                                         worker_init_fn=StopSignals().ignored_in_data_workers(None))
    workers_ended_by_sigkill(loader)
    batches = iter(loader)
    assert next(batches).item() == -signal.SIGTERM  # the worker's own child obeyed its SIGTERM
    next(batches)  # one batch from each worker: both are past their worker_init_fn
    subprocess.run(["kill", "-TERM", *(str(worker.pid) for worker in batches._workers)], check=True)
    time.sleep(1)
    assert all(worker.is_alive() for worker in batches._workers)
    for _ in range(20):
        next(batches)
    workers = batches._workers
    del batches
    gc.collect()
    assert not any(worker.is_alive() for worker in workers)


# ---- a signal before the run's handler is in place, or after it gave the handlers back ----


def _catches(pid: int, number: signal.Signals) -> bool:
    """Whether process `pid` has a handler of its own for `number` (its `SigCgt` mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (number - 1) & 1)
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the signal mask from Linux's /proc")
def test_a_sigterm_while_the_command_still_imports_stops_the_run_with_status_75(tiny_model, data, tmp_path):
    """Slurm's SIGTERM in the command's first seconds (importing torch and transformers, ten on a loaded node) ended
    it with the default action, status 143, which a job script requeueing on 75 takes for a failure. Sent as soon as
    the command catches it, before torch is loaded: the run stops before its first step and asks to be requeued."""
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "trainer.train", *_argv(out, tiny_model, data)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        while process.poll() is None and not _catches(process.pid, signal.SIGTERM):
            pass
        assert process.poll() is None, process.communicate()[1]
        torch_loaded = "libtorch" in Path(f"/proc/{process.pid}/maps").read_text()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=600)
    finally:
        process.kill()
    assert not torch_loaded, "the command caught SIGTERM only once torch was loaded"
    assert process.returncode == PREEMPTED_EXIT_CODE, stderr
    assert stderr.strip().splitlines()[-1] == ("run stopped: stopped by SIGTERM before training step 1; nothing new "
                                               "to save; rerun the same command to continue")
    assert not list(out.glob("checkpoint-*")) and not (out / "model.safetensors").exists()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the signal mask from Linux's /proc")
def test_ctrl_c_while_the_command_still_imports_is_one_line(tiny_model, data, tmp_path):
    """It was the traceback of whichever import torch or transformers was in."""
    process = subprocess.Popen([sys.executable, "-m", "trainer.train", *_argv(tmp_path / "run", tiny_model, data)],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        while process.poll() is None and not _catches(process.pid, signal.SIGTERM):
            pass  # held from the command's first line, Ctrl-C with it
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=600)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["interrupted (Ctrl-C) while the command started or ended; no training "
                                           "step was in progress"]


_HELD = """
import os, signal, sys
from trainer.early_signals import hold_preemption_signals
from trainer.run_control import StopSignals

hold_preemption_signals()
os.kill(os.getpid(), signal.{early})
signals = StopSignals({names}).install()
print("taken over:", signals.received.name if signals.received else None, flush=True)
# A signal the run does not name does what it does by default while the run trains (Ctrl-\\ still quits).
assert signal.getsignal(signal.SIGQUIT) is signal.SIG_DFL and signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
signals.restore()
# The run is over: the default actions are back, so a process stuck in its teardown can be ended.
assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
print("after the run: the defaults", flush=True)
"""


@pytest.mark.parametrize(("early", "names", "status", "lines"), [
    ("SIGTERM", ["SIGTERM"], 0, ["taken over: SIGTERM", "after the run: the defaults"]),
    ("SIGUSR1", ["SIGTERM", "SIGUSR1"], 0, ["taken over: SIGUSR1", "after the run: the defaults"]),
    # Not one of this run's preemption signals: it does what it would have done had it come a moment later.
    ("SIGHUP", ["SIGTERM"], -signal.SIGHUP, []),
])
def test_a_signal_held_before_the_run_handles_signals_is_the_run_s_or_its_default(early, names, status, lines):
    result = subprocess.run([sys.executable, "-c", _HELD.format(early=early, names=names)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert (result.returncode, result.stdout.splitlines()) == (status, lines), result.stderr
