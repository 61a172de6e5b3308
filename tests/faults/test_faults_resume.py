"""Issue 20, one writer per output_dir and resumes that are exact or refused: the output folder's lock (live, stale,
taken over), the run record every checkpoint carries (changes refused before the model loads, or accepted and
applied), checkpoint manifests (a damaged newest checkpoint is skipped for the newest intact one), files that would
run code when unpickled, and output folders holding someone else's model."""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from run_cases import cli_exit, curve, run_argv, write_small_folder

from croc_testing.tiny import save_tiny_croc
from trainer import train as train_module
from trainer.checkpoint_io import MANIFEST, checkpoint_problem, write_manifest
from trainer.output_lock import LOCK_FILE, LockHolder, OutputDirLock, OutputDirLocked


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_small_folder(tmp_path_factory.mktemp("resume_data"))


def _argv(out, tiny_model, data, *extra):
    return run_argv("stage2.yaml", out, tiny_model, data, "--save_strategy=steps", "--save_steps=1", *extra)


@pytest.fixture(scope="module")
def two_steps(tiny_model, data, tmp_path_factory):
    """A finished 2-step run with a checkpoint at each step; tests copy it."""
    out = tmp_path_factory.mktemp("two_steps") / "run"
    train_module.main(_argv(out, tiny_model, data, "--max_steps=2"))
    return out


def _checkpoints_only(two_steps, target):
    """The run's checkpoints in a new output folder (as a killed run leaves them: no final folder)."""
    for name in ("checkpoint-1", "checkpoint-2"):
        shutil.copytree(two_steps / name, target / name)
    return target


def _listing(folder):
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


# --- the lock -------------------------------------------------------------------------------------------------


def test_a_second_run_on_a_busy_output_dir_stops_with_one_line_and_writes_nothing(tiny_model, data, tmp_path,
                                                                                   monkeypatch, capsys, no_model_load):
    out = tmp_path / "run"
    with OutputDirLock(out):  # held by this (live) process, as a first run would
        before = _listing(out)
        status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=2"), monkeypatch, capsys)
        assert status == 1 and message.startswith(f"configuration error: output_dir {out} is in use by process "
                                                  f"{os.getpid()} on {socket.gethostname()}"), message
        assert _listing(out) == before  # no rejects.jsonl reset, no staging removed, nothing
    assert not (out / LOCK_FILE).exists()


def _plant_lock(folder, **fields):
    folder.mkdir(parents=True, exist_ok=True)
    holder = {**LockHolder.here().__dict__, **fields}
    (folder / LOCK_FILE).write_text(json.dumps(holder))
    return folder / LOCK_FILE


def _dead_pid() -> int:
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    return child


def test_a_lock_left_by_a_killed_process_on_this_host_is_taken_over(tiny_model, data, tmp_path, capsys):
    out = tmp_path / "run"
    _plant_lock(out, pid=_dead_pid(), token="killed")
    train_module.main(_argv(out, tiny_model, data, "--max_steps=1"))
    log = capsys.readouterr().err  # the run's log (its handler replaces pytest's log capture)
    assert f"taking over the lock of {out}: its process" in log and "no longer exists" in log
    assert (out / "model.safetensors").exists() and not (out / LOCK_FILE).exists()


def test_a_lock_from_another_host_is_stale_only_after_its_heartbeat_stops(tmp_path):
    lock_file = _plant_lock(tmp_path, host="node-7", pid=1, token="other")
    with pytest.raises(OutputDirLocked, match="in use by process 1 on node-7"):
        OutputDirLock(tmp_path).acquire()
    old = time.time() - 3600
    os.utime(lock_file, (old, old))  # an hour without a heartbeat
    lock = OutputDirLock(tmp_path).acquire()
    try:
        assert json.loads(lock_file.read_text())["token"] == lock.holder.token
    finally:
        lock.release()
    assert not lock_file.exists()


def test_a_requeued_slurm_job_takes_over_its_own_lock_but_not_a_live_run_of_its_allocation(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # requeued once: the lock of incarnation 0 is stale
    _plant_lock(tmp_path, host="node-7", pid=1, token="first-incarnation", slurm_job="4242", slurm_restart=0)
    OutputDirLock(tmp_path).acquire().release()
    # The same incarnation (another run inside the same allocation, e.g. a second srun task): live, refused.
    _plant_lock(tmp_path, host="node-7", pid=1, token="sibling", slurm_job="4242", slurm_restart=1)
    with pytest.raises(OutputDirLocked):
        OutputDirLock(tmp_path).acquire()
    monkeypatch.setenv("SLURM_JOB_ID", "4243")  # another job: it waits like anyone else
    _plant_lock(tmp_path, host="node-7", pid=1, token="other-job", slurm_job="4242", slurm_restart=0)
    with pytest.raises(OutputDirLocked):
        OutputDirLock(tmp_path).acquire()


def _live_process():
    """Another process of this host, alive until killed (a PID that is not this process's own)."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


def test_a_suspended_run_on_this_host_keeps_its_lock_whatever_its_heartbeats_age(tmp_path):
    """Ctrl-Z or a Slurm suspend stops the heartbeat; the process still exists, so the lock is still its own."""
    suspended = _live_process()
    try:
        os.kill(suspended.pid, signal.SIGSTOP)
        lock_file = _plant_lock(tmp_path, pid=suspended.pid, token="suspended")
        old = time.time() - 3600
        os.utime(lock_file, (old, old))
        with pytest.raises(OutputDirLocked, match=f"in use by process {suspended.pid}"):
            OutputDirLock(tmp_path).acquire()
    finally:
        suspended.kill()
        suspended.wait()


def test_a_slurm_job_requeued_onto_its_node_takes_over_its_lock_whoever_has_its_pid_now(tmp_path, monkeypatch):
    """SIGKILLed at the end of the grace period, the run left its lock; the requeued job lands on the same node,
    where the old PID belongs to another process by now. Slurm runs one incarnation at a time: the lock is stale."""
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    reused = _live_process()
    try:
        _plant_lock(tmp_path, pid=reused.pid, token="first-incarnation", slurm_job="4242", slurm_restart=0)
        OutputDirLock(tmp_path).acquire().release()
        # The same incarnation, alive on this host (a second run inside the allocation): still refused.
        _plant_lock(tmp_path, pid=reused.pid, token="sibling", slurm_job="4242", slurm_restart=1)
        with pytest.raises(OutputDirLocked, match=f"in use by process {reused.pid}"):
            OutputDirLock(tmp_path).acquire()
    finally:
        reused.kill()
        reused.wait()


def test_a_lock_naming_this_processs_pid_but_not_held_here_is_a_dead_runs(tmp_path):
    """A container restarted in place numbers its processes from 1 again (and its PID namespace can get the freed
    one's id): the run gets the PID of the run it replaces, which died holding the lock. That PID "exists" (it is
    this process), but this process does not hold the lock: taken over, not refused forever. A lock this process
    does hold (another run started in it) is still refused."""
    namespace = LockHolder.here().pid_namespace
    _plant_lock(tmp_path, pid=os.getpid(), token=f"previous-container@{namespace}")
    OutputDirLock(tmp_path).acquire().release()
    with OutputDirLock(tmp_path):
        with pytest.raises(OutputDirLocked, match=f"in use by process {os.getpid()}"):
            OutputDirLock(tmp_path).acquire()


def test_a_live_lock_naming_this_processs_pid_and_no_namespace_waits_for_its_heartbeat(tmp_path):
    """Two containers sharing the host name (docker --network host), each run PID 1 of its own, one output folder:
    the live run's lock names no PID namespace (an earlier version of this trainer wrote it). That PID being this
    process's own says nothing then; it was taken over at once (two writers). A fresh heartbeat keeps it; a stale
    one is taken over."""
    lock_file = _plant_lock(tmp_path, pid=os.getpid(), token="other-container")
    with pytest.raises(OutputDirLocked, match=f"in use by process {os.getpid()}"):
        OutputDirLock(tmp_path).acquire()
    assert json.loads(lock_file.read_text())["token"] == "other-container"
    old = time.time() - 3600
    os.utime(lock_file, (old, old))
    OutputDirLock(tmp_path).acquire().release()


def test_a_live_lock_is_kept_when_no_file_can_be_made_beside_it(tmp_path, monkeypatch):
    """Another host's live run holds the folder; a second start finds the filesystem out of inodes (a quota) or
    space, so the file that reads the filesystem's clock cannot be made. Its age is unknown, not old: the start is
    refused and the live lock stays (it was read as "the lock disappeared", renamed away and deleted)."""
    lock_file = _plant_lock(tmp_path, host="node-7", pid=1, token="live")
    opened = os.open

    def no_new_files(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and not (flags & os.O_EXCL and os.path.exists(path)):
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), str(path))
        return opened(path, flags, *args, **kwargs)

    def no_new_file(self, data):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), str(self))

    monkeypatch.setattr(os, "open", no_new_files)
    monkeypatch.setattr(Path, "write_bytes", no_new_file)
    with pytest.raises(OutputDirLocked, match="in use by process 1 on node-7"):
        OutputDirLock(tmp_path).acquire()
    assert json.loads(lock_file.read_text())["token"] == "live"


def test_a_lock_whose_age_cannot_be_read_is_refused_with_the_reason(tmp_path, monkeypatch):
    """Another host's run died an hour ago; no file can be made beside its lock (an inode quota), so its age is
    unknown and the lock is kept. The refusal promised a takeover "after 300 s without a heartbeat": a retry after
    that got the same line, and nothing named the obstacle."""
    lock_file = _plant_lock(tmp_path, host="node-7", pid=1, token="dead")
    old = time.time() - 3600
    os.utime(lock_file, (old, old))

    def no_new_file(self, data):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), str(self))

    monkeypatch.setattr(Path, "write_bytes", no_new_file)
    with pytest.raises(OutputDirLocked, match="age cannot be read now, as no file can be made in") as refused:
        OutputDirLock(tmp_path).acquire()
    assert "\n" not in str(refused.value)
    assert json.loads(lock_file.read_text())["token"] == "dead"


@pytest.mark.parametrize("pid", ["abc", None, 99999999999999, True])
def test_a_lock_file_with_a_malformed_holder_is_unreadable_not_a_crash(tmp_path, pid):
    lock_file = _plant_lock(tmp_path, pid=pid, token="garbage")
    with pytest.raises(OutputDirLocked):  # fresh: a writer may be filling it in
        OutputDirLock(tmp_path).acquire()
    old = time.time() - 3600
    os.utime(lock_file, (old, old))
    OutputDirLock(tmp_path).acquire().release()  # old and unreadable: taken over


def test_a_live_lock_is_refreshed_by_its_heartbeat(tmp_path):
    lock = OutputDirLock(tmp_path, heartbeat=0.05).acquire()
    try:
        old = time.time() - 3600
        os.utime(tmp_path / LOCK_FILE, (old, old))
        time.sleep(0.3)
        assert time.time() - (tmp_path / LOCK_FILE).stat().st_mtime < 60
    finally:
        lock.release()


def _take_over(folder) -> tuple[str, os.stat_result]:
    """What a requeued run on another host does to a lock whose heartbeat stopped for STALE_AFTER_SECONDS (rename
    the old file away, create its own); returns the new holder's file content and stat, to compare later."""
    lock_file = folder / LOCK_FILE
    lock_file.unlink()
    _plant_lock(folder, host="node-9", pid=4321, token="new-holder")
    taken = time.time() - 100  # a past mtime: any touch of the new holder's file shows
    os.utime(lock_file, (taken, taken))
    return lock_file.read_text(), lock_file.stat()


def _mtimes(folder):
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in folder.rglob("*") if p.is_file() and p.name != LOCK_FILE)


def test_a_lock_taken_over_is_not_refreshed_by_its_old_holder_and_its_loss_is_noticed(tmp_path):
    """The old holder's heartbeat comes back after a takeover: it must not keep the new holder's lock fresh (nor
    remove it on release), and it records who holds the folder now."""
    lock = OutputDirLock(tmp_path, heartbeat=0.05).acquire()
    try:
        content, taken = _take_over(tmp_path)
        time.sleep(0.3)
        assert lock.lost and lock.lost_to is not None and lock.lost_to.token == "new-holder"
        assert lock.lost_message().startswith(f"the lock of output_dir {tmp_path} was taken over by process 4321 on "
                                              "node-9")
        assert not lock.verify()
    finally:
        lock.release()
    lock_file = tmp_path / LOCK_FILE
    assert lock_file.read_text() == content and lock_file.stat().st_mtime == taken.st_mtime


@pytest.mark.parametrize("when", ["between steps", "before a checkpoint's rename", "staging emptied by the new holder",
                                  "before the final save"])
def test_a_run_whose_lock_was_taken_over_stops_and_writes_nothing_more(tiny_model, data, tmp_path, monkeypatch,
                                                                       capsys, when):
    """The run was suspended (or its node cut off from the filesystem) past STALE_AFTER_SECONDS and a requeued run
    on another host took output_dir over. Back, it stops, with one line naming the new holder and status 1 (not 75:
    a requeue would only meet the other run's lock), writing nothing more: no checkpoint (nor a rename of one staged
    already), no final model, no card; the new holder's lock file is left as it is."""
    from trainer import croc_trainer
    from trainer import resume as resume_module

    out = tmp_path / "run"
    seen: dict = {}

    def take_over() -> None:
        seen["lock"] = _take_over(out)
        seen["files"] = _mtimes(out)

    if when == "between steps":
        # The heartbeat notices (a fast one here): every process stops at the end of the step in progress.
        monkeypatch.setattr(resume_module, "OutputDirLock", lambda folder: OutputDirLock(folder, heartbeat=0.05))
        compute_loss = croc_trainer.CrocTrainer.compute_loss

        def taken_over_during_step_2(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.state.global_step + 1 == 2 and "lock" not in seen:
                take_over()
                time.sleep(0.5)
            return compute_loss(self, model, inputs, return_outputs=return_outputs,
                                num_items_in_batch=num_items_in_batch)

        monkeypatch.setattr(croc_trainer.CrocTrainer, "compute_loss", taken_over_during_step_2)
        stopped_after = 1
    elif when == "staging emptied by the new holder":
        # The new holder's first save emptied the staging folder under this run's checkpoint-2 (whose next write
        # fails) and stages its own: the failed save must not clean it up.
        write_manifest = croc_trainer.write_manifest

        def staging_taken(folder):
            if Path(folder).name == "checkpoint-2":
                take_over()
                shutil.rmtree(Path(folder).parent)
                (Path(folder).parent / "checkpoint-9").mkdir(parents=True)
                (Path(folder).parent / "checkpoint-9" / "model.safetensors").write_bytes(b"the new holder's")
                seen["files"] = _mtimes(out)
            return write_manifest(folder)

        monkeypatch.setattr(croc_trainer, "write_manifest", staging_taken)
        stopped_after = 2
    elif when == "before a checkpoint's rename":
        # Taken over while checkpoint-2 is being written (its heartbeat, every 30 s, has not seen it yet): the lock
        # is read again before the rename, which does not happen.
        write_manifest = croc_trainer.write_manifest

        def taken_over_while_saving(folder):
            result = write_manifest(folder)
            if Path(folder).name == "checkpoint-2":
                take_over()
            return result

        monkeypatch.setattr(croc_trainer, "write_manifest", taken_over_while_saving)
        stopped_after = 2
    else:
        # Taken over once training ended: the final folder, card and run record are not written.
        train = croc_trainer.CrocTrainer.train

        def taken_over_after_training(self, *args, **kwargs):
            output = train(self, *args, **kwargs)
            take_over()
            return output

        monkeypatch.setattr(croc_trainer.CrocTrainer, "train", taken_over_after_training)
        stopped_after = 3
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=3"), monkeypatch, capsys)
    assert status == 1
    assert message == (f"run stopped: the lock of output_dir {out} was taken over by process 4321 on node-9, since "
                       f"{json.loads(seen['lock'][0])['started']}: this run's heartbeat had stopped for over 300 s (a "
                       "suspended process, or a node cut off from the filesystem), and the other run owns the folder "
                       f"now; this run stopped after step {stopped_after} and wrote nothing more into the folder")
    assert _mtimes(out) == seen["files"]  # nothing written, renamed or removed since the takeover
    checkpoints = [f"checkpoint-{step}" for step in range(1, stopped_after + 1)]
    if when in ("before a checkpoint's rename", "staging emptied by the new holder"):
        checkpoints.pop()  # checkpoint-2 stays staged, never renamed into place
    assert sorted(p.name for p in out.glob("checkpoint-*")) == checkpoints
    assert not (out / "model.safetensors").exists() and not (out / "README.md").exists()
    assert (out / LOCK_FILE).read_text() == seen["lock"][0]
    assert (out / LOCK_FILE).stat().st_mtime == seen["lock"][1].st_mtime


# --- the run record -------------------------------------------------------------------------------------------


def test_a_changed_learning_rate_is_refused_not_silently_ignored(two_steps, tiny_model, data, tmp_path, monkeypatch,
                                                                 capsys, no_model_load):
    out = _checkpoints_only(two_steps, tmp_path / "run")
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=4", "--language_model_lr=1e-3"),
                               monkeypatch, capsys)
    assert status == 1
    assert message.startswith("configuration error: checkpoint-2 was saved with other optimiser / schedule values: "
                              "language_model_lr 2e-05 -> 0.001; max_steps 2 -> 4. Resuming would silently keep the "
                              "checkpoint's"), message
    assert "--resume_accept_changes=[language_model_lr,max_steps]" in message


def test_accepted_changes_take_effect_from_the_resumed_step(two_steps, tiny_model, data, tmp_path):
    out = _checkpoints_only(two_steps, tmp_path / "run")
    train_module.main(_argv(out, tiny_model, data, "--max_steps=4", "--language_model_lr=1e-3",
                            "--resume_accept_changes=[language_model_lr,max_steps]"))
    steps = curve(out)
    assert sorted(steps) == [1, 2, 3, 4]
    # Cosine without warm-up over the new 4 steps: step 3 runs at 1e-3 * (1 + cos(pi * 2 / 4)) / 2, step 4 at
    # 1e-3 * (1 + cos(pi * 3 / 4)) / 2; the projector keeps its rate, on the new schedule.
    assert steps[3]["lr_language_model"] == pytest.approx(1e-3 * 0.5, rel=1e-6)
    assert steps[4]["lr_language_model"] == pytest.approx(1e-3 * (1 - 2 ** -0.5) / 2, rel=1e-6)
    assert steps[3]["lr_projector"] == pytest.approx(steps[1]["lr_projector"] * 0.5, rel=1e-6)


def test_an_accepted_weight_decay_from_zero_reaches_the_decaying_groups(two_steps, tiny_model, data, tmp_path):
    # The run started at transformers' default weight_decay=0, so every optimiser group held 0: the accepted change
    # was logged, and the groups that decay kept 0 (no decay, silently).
    import torch

    out = _checkpoints_only(two_steps, tmp_path / "run")
    train_module.main(_argv(out, tiny_model, data, "--max_steps=3", "--weight_decay=0.1",
                            "--resume_accept_changes=[max_steps,weight_decay]"))
    groups = torch.load(out / "checkpoint-3" / "optimizer.pt", weights_only=False)["param_groups"]
    assert {(group["croc_decays"], group["weight_decay"]) for group in groups} == {(True, 0.1), (False, 0.0)}


@pytest.mark.parametrize(("override", "difference"), [
    ("--stage=1.5", "stage '2' -> '1.5'"),
    ("--croc_preset=official", "croc_config: "),
    ("--seed=1", "seed 0 -> 1"),
    ("--global_batch_size=8", "global_batch_size 4 -> 8"),
    ("--model_max_length=200", "model_max_length 256 -> 200"),
    ("--data.max_samples=5", "count 8 -> 5"),
    ("--optim=sgd", "optim ['adamw_torch"),
    ("--neftune_noise_alpha=5", "neftune_noise_alpha None -> 5.0"),
    ("--train_sampling_strategy=sequential", "train_sampling_strategy 'random' -> 'sequential'"),
])
def test_a_change_the_run_cannot_continue_from_is_refused_before_the_model_loads(two_steps, tiny_model, data,
                                                                                  tmp_path, monkeypatch, capsys,
                                                                                  no_model_load, override, difference):
    out = _checkpoints_only(two_steps, tmp_path / "run")
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=2", override), monkeypatch, capsys)
    assert status == 1 and message.startswith("configuration error: checkpoint-2 cannot continue with this "
                                              "configuration: "), message
    assert difference in message, message
    assert "--resume_accept_changes" not in message  # not something an option can accept


@pytest.mark.parametrize(("config", "extra"), [
    ("stage1_5.yaml", ("--group_by_modality_length=true",)),  # the sampler deals a step's images by the split
    ("stage2.yaml", ("--neftune_noise_alpha=5",)),  # noise drawn per micro-batch, in its shape
], ids=["stage1_5_grouped", "neftune"])
def test_another_per_device_batch_is_refused_where_the_step_depends_on_the_split(tiny_model, data, tmp_path,
                                                                                 monkeypatch, capsys, config, extra):
    """The same global batch split into other per-device batches: stage 1.5's masks follow each image's position in
    the step, which the modality sampler's length-balanced deal sets by the split, so the resumed curve was another
    (accepted silently); refused before the model loads, as every change of the computation."""
    finished, out = tmp_path / "finished", tmp_path / "run"
    train_module.main(run_argv(config, finished, tiny_model, data, "--save_strategy=steps", "--save_steps=1",
                               "--max_steps=1", *extra))
    shutil.copytree(finished / "checkpoint-1", out / "checkpoint-1")  # as a run killed after step 1 leaves it

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the error")

    monkeypatch.setattr(train_module, "load_model_and_processor", refuse)
    argv = run_argv(config, out, tiny_model, data, "--save_strategy=steps", "--save_steps=1", "--max_steps=1", *extra)
    status, message = cli_exit([*argv, "--per_device_train_batch_size=1"], monkeypatch, capsys)
    assert status == 1 and "cannot continue with this configuration: per_device_split 2 -> 1" in message, message


def test_a_lora_resume_on_other_base_weights_is_refused_and_on_a_copy_of_them_resumes(tiny_model, data, tmp_path,
                                                                                       monkeypatch, capsys):
    """A LoRA checkpoint holds the adapters and the parts trained whole; the weights they adapt load from
    model.name_or_path again. Another folder of the same config.json (a retrained stage 1, another seed) resumed
    on another curve, silently: refused before the model loads. A copy of the same folder elsewhere resumes."""
    lora = ("--model.use_peft=true", "--model.lora_r=4", "--model.lora_dropout=0")
    finished, out = tmp_path / "finished", tmp_path / "run"
    train_module.main(_argv(finished, tiny_model, data, "--max_steps=2", *lora))
    shutil.copytree(finished / "checkpoint-1", out / "checkpoint-1")  # as a run killed after step 1 leaves it
    other = save_tiny_croc(tmp_path / "other_weights", seed=1)
    with monkeypatch.context() as patch:
        patch.setattr(train_module, "load_model_and_processor", _refuse_model_load)
        status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=2", *lora,
                                         f"--model.name_or_path={other}"), monkeypatch, capsys)
    assert status == 1 and message.startswith("configuration error: checkpoint-1 cannot continue with this "
                                              "configuration: lora_base_weights "), message
    copy = shutil.copytree(tiny_model, tmp_path / "moved_model")
    train_module.main(_argv(out, tiny_model, data, "--max_steps=2", *lora, f"--model.name_or_path={copy}"))
    assert curve(out)[2]["loss"] == curve(finished)[2]["loss"]


def _refuse_model_load(*args, **kwargs):
    raise AssertionError("the model was loaded before the error")


def test_a_record_written_before_a_key_was_recorded_is_compared_on_the_keys_it_has():
    """A checkpoint of an earlier version of this package has no entry for a key recorded since
    (`train_sampling_strategy`): the run still resumes after the upgrade, and the keys it has are still compared."""
    from trainer.run_record import record_differences

    current = {"seed": 0, "train_sampling_strategy": "random"}
    assert record_differences({"seed": 0}, current) == []
    assert [d.key for d in record_differences({"seed": 1}, current)] == ["seed"]


def test_learning_rate_is_compared_only_through_the_rates_the_parts_train_at():
    """Every part's rate is recorded as its `*_lr`; `learning_rate` itself (a value no part used, as a run started
    with `--learning_rate=2e-5` before such values were refused recorded it) does not block the resume."""
    from trainer.run_record import record_differences

    rates = {"projector_lr": 1.5e-4, "language_model_lr": 2e-5}
    assert record_differences({"learning_rate": 2e-5, **rates}, {"learning_rate": 5e-5, **rates}) == []
    changed = {**rates, "language_model_lr": 1e-5}
    assert [d.key for d in record_differences({"learning_rate": 2e-5, **rates}, changed)] == ["language_model_lr"]


def test_a_finished_run_is_not_overwritten_by_another_configuration(two_steps, tiny_model, data, tmp_path,
                                                                     monkeypatch, capsys, no_model_load):
    out = tmp_path / "run"
    shutil.copytree(two_steps, out)
    for folder in out.glob("checkpoint-*"):
        shutil.rmtree(folder)
    before = _listing(out)
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=2", "--seed=3"), monkeypatch, capsys)
    assert status == 1 and "the run recorded in" in message and "(finished)" in message and "its files would be overwritten" in message
    assert _listing(out) == before


def test_an_output_dir_holding_a_model_this_trainer_did_not_write_is_refused(tiny_model, data, tmp_path, monkeypatch,
                                                                             capsys, no_model_load):
    out = tmp_path / "run"
    shutil.copytree(tiny_model, out)  # e.g. the previous stage's folder given as output_dir by mistake
    before = _listing(out)
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=1"), monkeypatch, capsys)
    assert status == 1 and "which this trainer's run did not write (no croc_run.json)" in message, message
    assert _listing(out) == before


@pytest.mark.parametrize("holds", ["another model", "another run"])
def test_a_named_checkpoint_is_not_resumed_into_a_folder_holding_another_model_or_run(two_steps, tiny_model, data,
                                                                                     tmp_path, holds, monkeypatch,
                                                                                     capsys, no_model_load):
    # `--resume_from_checkpoint=ELSEWHERE/checkpoint-N` skipped the output folder's check: the run overwrote it.
    out = tmp_path / "run"
    if holds == "another model":
        shutil.copytree(tiny_model, out)
    else:  # a run of another seed finished there
        shutil.copytree(two_steps, out, ignore=shutil.ignore_patterns("checkpoint-*"))
        record = json.loads((out / "croc_run.json").read_text())
        (out / "croc_run.json").write_text(json.dumps({**record, "seed": record["seed"] + 1}))
    before = _listing(out)
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=2",
                                     f"--resume_from_checkpoint={two_steps / 'checkpoint-1'}"), monkeypatch, capsys)
    expected = "did not write (no croc_run.json)" if holds == "another model" else "its files would be overwritten"
    assert status == 1 and expected in message, message
    assert _listing(out) == before


def test_a_roll_back_keeps_the_abandoned_checkpoints_and_a_plain_rerun_continues_it(tiny_model, data, tmp_path,
                                                                                   capsys):
    """Rolled back past a loss spike (`--resume_from_checkpoint` an older checkpoint, another learning rate), the run
    replaced the abandoned run's checkpoints of the same steps unsaid, and a plain rerun resumed the abandoned run's
    newest: off the curve the user chose, its final folder and card the abandoned run's."""
    out = tmp_path / "run"
    train_module.main(_argv(out, tiny_model, data, "--max_steps=3"))  # the abandoned run
    abandoned = {name: _listing(out / name) for name in ("checkpoint-2", "checkpoint-3")}
    abandoned_curve = curve(out)
    changes = ["--language_model_lr=1e-3", "--resume_accept_changes=[language_model_lr,max_steps]"]
    capsys.readouterr()
    train_module.main(_argv(out, tiny_model, data, "--max_steps=2", "--save_total_limit=2", *changes,
                            f"--resume_from_checkpoint={out / 'checkpoint-1'}"))
    log = capsys.readouterr().err
    assert sorted(path.name for path in out.glob("checkpoint-*")) == [
        "checkpoint-1", "checkpoint-2", "checkpoint-2-abandoned", "checkpoint-3-abandoned"]
    assert "checkpoint-2 -> checkpoint-2-abandoned, checkpoint-3 -> checkpoint-3-abandoned" in log
    for name, listing in abandoned.items():  # kept whole, neither replaced nor rotated away
        assert _listing(out / f"{name}-abandoned") == listing
    rolled_back = curve(out / "checkpoint-2")
    train_module.main(_argv(out, tiny_model, data, "--max_steps=3", *changes))  # the plain rerun
    steps = curve(out)
    assert sorted(steps) == [1, 2, 3]
    assert steps[2]["lr_language_model"] == rolled_back[2]["lr_language_model"] != abandoned_curve[2][
        "lr_language_model"]
    assert steps[3]["loss"] != abandoned_curve[3]["loss"]  # trained on from the rolled-back run's weights
    report = json.loads((out / "data_report.json").read_text())
    assert report["rows_seen"] == json.loads((out / "checkpoint-3-abandoned" / "data_report.json").read_text())[
        "rows_seen"]  # every row counted once


# --- manifests and unpickling ---------------------------------------------------------------------------------


def test_a_truncated_newest_checkpoint_is_skipped_for_the_newest_intact_one(two_steps, tiny_model, data, tmp_path,
                                                                            capsys):
    out = _checkpoints_only(two_steps, tmp_path / "run")
    weights = out / "checkpoint-2" / "model.safetensors"
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[: size // 2])  # a copy cut short, a full disk
    train_module.main(_argv(out, tiny_model, data, "--max_steps=2"))
    log = capsys.readouterr().err
    assert (f"skipping checkpoint {out / 'checkpoint-2'}: model.safetensors is {size // 2:,} bytes, the manifest says "
            f"{size:,} (truncated or changed)") in log
    assert f"resuming from {out / 'checkpoint-1'}" in log
    assert curve(out)[2]["loss"] == curve(two_steps)[2]["loss"]  # step 2 trained again, to the same loss


@pytest.mark.parametrize("damage", ["changed_bytes", "added_file", "no_manifest"])
def test_a_checkpoint_that_fails_its_manifest_is_not_intact(two_steps, tmp_path, damage):
    checkpoint = tmp_path / "checkpoint-2"
    shutil.copytree(two_steps / "checkpoint-2", checkpoint)
    assert checkpoint_problem(checkpoint) is None
    if damage == "changed_bytes":
        state = checkpoint / "scheduler.pt"
        data = bytearray(state.read_bytes())
        data[-30] ^= 0xFF  # same size, one byte different
        state.write_bytes(bytes(data))
        expected = "scheduler.pt does not match its SHA-256 in the manifest (changed after the save)"
    elif damage == "added_file":
        (checkpoint / "extra.pt").write_bytes(b"")
        expected = "extra.pt is not in its manifest (added after the save)"
    else:
        (checkpoint / MANIFEST).unlink()
        expected = f"no {MANIFEST} (written by an earlier version of this project, or not by it)"
    assert checkpoint_problem(checkpoint) == expected


class _Payload:
    """Unpickling this runs code: it creates the file named below."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_that_would_run_code_is_refused_even_with_a_matching_manifest(two_steps, tmp_path, tiny_model, data,
                                                                               monkeypatch, capsys, no_model_load):
    """A DeepSpeed shard is loaded by a full unpickler: a crafted one (with the manifest rewritten to match, as an
    attacker with write access could) is refused before anything unpickles it, and its code never runs."""
    out = _checkpoints_only(two_steps, tmp_path / "run")
    marker = tmp_path / "the-payload-ran"
    shard = out / "checkpoint-2" / "global_step2" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    shard.parent.mkdir()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # torch.save's zip layout, with a code-running data.pkl
        archive.writestr("archive/data.pkl", pickle.dumps({"optimizer_state_dict": _Payload(str(marker))}))
        archive.writestr("archive/version", "3\n")
    shard.write_bytes(buffer.getvalue())
    write_manifest(out / "checkpoint-2")
    problem = checkpoint_problem(out / "checkpoint-2")
    assert problem is not None and problem.startswith(f"{shard.relative_to(out / 'checkpoint-2')} does not load as "
                                                      "plain data"), problem
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=2",
                                     f"--resume_from_checkpoint={out / 'checkpoint-2'}"), monkeypatch, capsys)
    assert status == 1 and "cannot be resumed" in message and "does not load as plain data" in message
    assert not marker.exists()


def test_checkpoints_that_all_fail_are_not_rotated_away_by_a_fresh_start(two_steps, tiny_model, data, tmp_path,
                                                                         monkeypatch, capsys, no_model_load):
    out = _checkpoints_only(two_steps, tmp_path / "run")
    for folder in out.glob("checkpoint-*"):
        (folder / MANIFEST).unlink()
    before = _listing(out)
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=2"), monkeypatch, capsys)
    assert status == 1 and message.startswith(f"configuration error: output_dir {out} holds checkpoints but none can "
                                              "be resumed (checkpoint-2: no croc_manifest.json"), message
    assert _listing(out) == before


# --- folders the run writes into ------------------------------------------------------------------------------


def test_a_final_save_cut_short_is_rewritten_by_the_rerun_not_refused(two_steps, tiny_model, data, tmp_path):
    """The run's record is written when it starts: a kill during the final save leaves a folder known as this run's,
    which the same command resumes (from its last checkpoint) and completes."""
    out = tmp_path / "run"
    shutil.copytree(two_steps, out)
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # the final save, killed half-way
    train_module.main(_argv(out, tiny_model, data, "--max_steps=2"))
    assert weights.stat().st_size == (two_steps / "model.safetensors").stat().st_size
    assert json.loads((out / "croc_run.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("which", ["build", "data_folder"])
def test_an_output_dir_holding_the_users_data_is_refused(tiny_model, data, tmp_path, monkeypatch, capsys,
                                                         no_model_load, which):
    """A build folder (its card and its own rejects.jsonl), or a data folder with a README, named as output_dir:
    the run would replace those files; it stops before writing anything."""
    from data_recipes import build_recipe

    folder = tmp_path / which
    if which == "build":
        build_recipe("llava_json", data.parent, folder, params={"annotation": "rows.json"})
        source = folder
    else:
        shutil.copytree(data.parent, folder)
        (folder / "README.md").write_text("my notes about this data\n")
        source = folder / "rows.json"
    before = _listing(folder)
    status, message = cli_exit(_argv(folder, tiny_model, source, "--max_steps=1"), monkeypatch, capsys)
    assert status == 1 and "README.md" in message and "did not write" in message, message
    assert _listing(folder) == before


def test_a_lora_runs_merge_folder_is_checked_like_the_output_dir(tiny_model, data, tmp_path, monkeypatch, capsys,
                                                                 no_model_load):
    out = tmp_path / "lora"
    merged = tmp_path / "lora-merged"
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    (merged / "NOTES.txt").write_text("someone else's model")
    before = _listing(merged)
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=1", "--model.use_peft=true"), monkeypatch,
                               capsys)
    assert status == 1 and message.startswith(f"configuration error: the LoRA merge folder {merged} already holds "
                                              "config.json"), message
    assert _listing(merged) == before


def test_an_image_gone_between_the_kill_and_the_resume_does_not_block_the_resume(tiny_model, tmp_path, capsys):
    """A run killed after step 1; before the rerun one image of its rows is deleted (a storage clean-up). The start
    check would now reject that row, and the rows would no longer be the run's: the resume keeps the interrupted
    run's start-check outcome instead (the row rejected then stays rejected, the row kept then stays in its place,
    its image replaced when training meets it), says so, and finishes."""
    data = write_small_folder(tmp_path / "data")
    rows = json.loads(data.read_text())
    rows.append({"id": "never-there", "image": "images/missing.png",
                 "conversations": rows[0]["conversations"]})  # rejected by the start check of both runs
    data.write_text(json.dumps(rows))
    first = tmp_path / "first"
    train_module.main(_argv(first, tiny_model, data, "--max_steps=2"))
    recorded = json.loads((first / "checkpoint-1" / "croc_run.json").read_text())
    assert recorded["start_rejections"] == {"missing_image": [len(rows) - 1]}
    out = _checkpoints_only(first, tmp_path / "run")
    shutil.rmtree(out / "checkpoint-2")  # killed after step 1
    (data.parent / rows[0]["image"]).unlink()
    capsys.readouterr()
    train_module.main(_argv(out, tiny_model, data, "--max_steps=2"))
    err = capsys.readouterr().err
    assert "1 row(s) the interrupted run trained with now fail the start check (first: row 0" in err
    assert f"resuming from {out / 'checkpoint-1'}" in err and sorted(curve(out)) == [1, 2]
    assert json.loads((out / "croc_run.json").read_text())["start_rejections"] == recorded["start_rejections"]


def test_a_fresh_start_keeps_its_own_start_check(tiny_model, tmp_path, monkeypatch, capsys):
    """Only a resume takes the interrupted run's start-check outcome. A run killed before its first checkpoint,
    rerun after the user restored a missing image, is a fresh start: its start check keeps that row, so its rows
    are not the recorded run's, and it says so instead of training on the recorded run's rows silently."""
    data = write_small_folder(tmp_path / "data")
    rows = json.loads(data.read_text())
    rows.append({"id": "fixed-later", "image": "images/fixed.png", "conversations": rows[0]["conversations"]})
    data.write_text(json.dumps(rows))
    out = tmp_path / "run"
    train_module.main(_argv(out, tiny_model, data, "--max_steps=1"))
    record = json.loads((out / "croc_run.json").read_text())
    assert record["start_rejections"] == {"missing_image": [len(rows) - 1]}
    for path in out.iterdir():  # killed before its first checkpoint: the record it wrote first is all there is
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    (out / "croc_run.json").write_text(json.dumps({**record, "status": "running"}))
    shutil.copy(data.parent / rows[0]["image"], data.parent / "images" / "fixed.png")
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=1"), monkeypatch, capsys)
    assert status == 1 and f"count {len(rows) - 1} -> {len(rows)}" in message, message


@pytest.mark.parametrize("recorded", [[], None, {"missing_image": 2}, {"missing_image": [True]},
                                      {"bogus_reason": [0]}, {"missing_image": [1.0]}, {"missing_image": [3]},
                                      {"missing_image": [1], "unreadable_image": [1]}, {"missing_image": [-1]}])
def test_a_record_of_start_rejections_that_is_not_one_is_not_used(recorded):
    """A damaged or hand-edited record: this start check decides (with a warning), never a traceback or a row
    dropped under a reason the report does not count."""
    from trainer.data_loading import _recorded_reasons

    assert _recorded_reasons(recorded, 3) is None
    assert _recorded_reasons({"missing_image": [2], "unreadable_image": [0]}, 3) == ["unreadable_image", None,
                                                                                      "missing_image"]


def test_a_lora_merge_cut_short_is_written_again_by_the_rerun(tiny_model, data, tmp_path, monkeypatch):
    """A LoRA run killed while it writes `<output_dir>-merged` (after the final folder): the half-written merge is
    this run's, so rerunning the same command writes it again, whole, instead of refusing it as someone else's."""
    import safetensors.torch

    from trainer import merge_lora as merge_module

    out = tmp_path / "lora"
    merged = tmp_path / "lora-merged"
    argv = _argv(out, tiny_model, data, "--max_steps=1", "--model.use_peft=true")
    merge = merge_module.merge_lora

    def killed_while_writing(adapter_dir, out_dir, dtype="float32"):
        merge(adapter_dir, out_dir, dtype)
        weights = out_dir / "model.safetensors"
        os.truncate(weights, weights.stat().st_size // 2)  # what a SIGKILL in the middle of the write leaves
        raise KeyboardInterrupt

    monkeypatch.setattr(merge_module, "merge_lora", killed_while_writing)
    with pytest.raises(KeyboardInterrupt):
        train_module.main(argv)
    assert json.loads((merged / "croc_run.json").read_text())["status"] == "merging"
    monkeypatch.setattr(merge_module, "merge_lora", merge)
    train_module.main(argv)  # no ConfigError: the folder is this run's
    assert json.loads((merged / "croc_run.json").read_text())["status"] == "merged"
    assert safetensors.torch.load_file(merged / "model.safetensors")  # whole again


@pytest.mark.parametrize("moment", ["checkpoint", "final"])
@pytest.mark.parametrize("writer", ["safetensors", "torch.save"])
def test_a_full_disk_is_one_line_and_leaves_the_checkpoints_as_they_were(tiny_model, data, tmp_path, monkeypatch,
                                                                         capsys, writer, moment):
    """Neither writer reports a full disk (or a file-size limit) as an OSError: safetensors raises its own error,
    torch.save (optimizer.pt, rng_state.pth, training_args.bin) a RuntimeError of its zip writer, which ended the run
    in a traceback with the staging folder left behind (`ulimit -f` between the model's and the optimizer's size)."""
    import torch
    import transformers.modeling_utils as modeling_utils
    from safetensors import SafetensorError

    if writer == "safetensors":
        module, name, words = modeling_utils, "safe_save_file", "No space left on device"
        error, file = SafetensorError("Error while serializing: No space left on device (os error 28)"), None
    else:
        module, name, words = torch, "save", "the disk is full or a file-size limit was reached"
        error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 8412288 vs 8412180")
        file = "optimizer.pt" if moment == "checkpoint" else "training_args.bin"
    write = getattr(module, name)

    def full_disk(obj, path, *args, **kwargs):
        path = str(path)
        in_checkpoint_2 = "checkpoint-2" in path if moment == "checkpoint" else "checkpoint" not in path
        if in_checkpoint_2 and file in (None, os.path.basename(path)):
            raise error
        return write(obj, path, *args, **kwargs)

    monkeypatch.setattr(module, name, full_disk)
    out = tmp_path / "run"
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=2"), monkeypatch, capsys)
    what = "checkpoint-2 into" if moment == "checkpoint" else "the final model folder"
    assert status == 1 and message.startswith(f"run stopped: could not write {what}"), message
    assert words in message
    assert sorted(p.name for p in out.glob("checkpoint-*")) == (
        ["checkpoint-1"] if moment == "checkpoint" else ["checkpoint-1", "checkpoint-2"])
    assert all(checkpoint_problem(folder) is None for folder in out.glob("checkpoint-*"))
    assert not (out / ".checkpoint-staging").exists()


def test_an_error_of_torch_save_that_is_not_a_write_stays_an_error(tmp_path):
    from trainer.checkpoint_io import is_write_failure

    assert is_write_failure(RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"))
    assert not is_write_failure(RuntimeError("CUDA error: an illegal memory access was encountered"))


@pytest.mark.parametrize("entry", ["size as text", "no size", "null entry", "files not a mapping"])
def test_a_malformed_manifest_entry_makes_the_checkpoint_not_intact_not_a_crash(two_steps, tmp_path, entry):
    checkpoint = tmp_path / "checkpoint-2"
    shutil.copytree(two_steps / "checkpoint-2", checkpoint)
    manifest = json.loads((checkpoint / MANIFEST).read_text())
    name = next(iter(manifest["files"]))
    if entry == "size as text":
        manifest["files"][name]["size"] = str(manifest["files"][name]["size"])
    elif entry == "no size":
        del manifest["files"][name]["size"]
    elif entry == "null entry":
        manifest["files"][name] = None
    else:
        manifest["files"] = ["not", "a", "mapping"]
    (checkpoint / MANIFEST).write_text(json.dumps(manifest))
    assert checkpoint_problem(checkpoint).startswith(f"unreadable {MANIFEST}")


def test_a_renamed_checkpoint_is_not_taken_for_a_later_step(two_steps, tmp_path):
    renamed = tmp_path / "checkpoint-5"
    shutil.copytree(two_steps / "checkpoint-1", renamed)
    assert checkpoint_problem(renamed) == "it is named checkpoint-5 but holds step 1 (renamed?)"


@pytest.mark.parametrize("kind", ["file", "link"])
def test_a_staging_path_that_is_not_a_folder_is_removed_without_following_it(tmp_path, kind):
    from trainer.checkpoint_io import STAGING_DIR, discard_staging

    kept = tmp_path / "users_folder"
    kept.mkdir()
    (kept / "precious.txt").write_text("keep me")
    staging = tmp_path / "run" / STAGING_DIR
    staging.parent.mkdir()
    staging.write_text("x") if kind == "file" else staging.symlink_to(kept)
    discard_staging(tmp_path / "run")
    assert not staging.exists() and not staging.is_symlink()
    assert (kept / "precious.txt").read_text() == "keep me"


def test_rows_edited_under_the_same_ids_are_refused(two_steps, tiny_model, data, tmp_path, monkeypatch, capsys,
                                                    no_model_load):
    """The record holds the rows' contents, not only their ids: an answer changed (or an image swapped) between the
    checkpoint and the resume is a different run."""
    out = _checkpoints_only(two_steps, tmp_path / "run")
    rows = json.loads(data.read_text())
    rows[0]["conversations"][1]["value"] = "A different answer."
    edited = data.parent / "edited.json"
    edited.write_text(json.dumps(rows))
    status, message = cli_exit(_argv(out, tiny_model, edited, "--max_steps=2", f"--data.image_root={data.parent}"),
                               monkeypatch, capsys)
    assert status == 1 and "data_rows: content_sha256" in message and "count" not in message.split("data_rows")[1][:80]


def test_what_draws_from_each_processs_random_stream_is_recorded():
    """Dropout or noise draws from each process's random stream, saved per process: the run record then holds the
    process count (a resume on another count would restore none of them). Without such draws it holds none."""
    from types import SimpleNamespace

    from trainer.run_record import _draws_per_process

    plain = SimpleNamespace(use_peft=False, lora_dropout=0.05)
    args = SimpleNamespace(neftune_noise_alpha=None, stage="1.5")
    linear = {"vtr_head": "linear", "vtr_head_dropout": 0.1, "text_config": {"attention_dropout": 0.0}}
    assert not _draws_per_process(plain, args, linear)  # the linear head has no dropout, whatever the field says
    assert _draws_per_process(plain, args, {**linear, "vtr_head": "bert"})  # `official`'s BERT-layer head
    assert not _draws_per_process(plain, SimpleNamespace(neftune_noise_alpha=None, stage="2"),
                                  {**linear, "vtr_head": "bert"})  # which stage 2 does not run
    assert _draws_per_process(plain, args, {**linear, "text_config": {"attention_dropout": 0.1}})
    assert _draws_per_process(SimpleNamespace(use_peft=True, lora_dropout=0.05), args, linear)
    assert _draws_per_process(plain, SimpleNamespace(neftune_noise_alpha=5.0, stage="2"), linear)


def _as_an_earlier_version_wrote(checkpoint):
    """The checkpoint's non-finite file as versions before the run's loss total was carried wrote it."""
    from trainer.run_control import NONFINITE_FILE

    file = checkpoint / NONFINITE_FILE
    state = json.loads(file.read_text())
    file.write_text(json.dumps({"skipped_steps": state["skipped_steps"]}))
    write_manifest(checkpoint)  # as that version's manifest lists the file


@pytest.mark.parametrize("kept", [("checkpoint-1",), ("checkpoint-1", "checkpoint-2")],
                         ids=["resumed", "finished_rerun"])
def test_an_upgraded_resume_states_the_whole_runs_mean_train_loss(two_steps, tiny_model, data, tmp_path, kept):
    """A checkpoint of an earlier version carries no loss total: the resumed run (upgraded between the kill and the
    resume) stated the mean of its last part as the run's train_loss, and a rerun of a finished run 0.0. Its logged
    losses give the total; the mean is the uninterrupted run's."""
    out = tmp_path / "run"
    for name in kept:
        shutil.copytree(two_steps / name, out / name)
        _as_an_earlier_version_wrote(out / name)
    train_module.main(_argv(out, tiny_model, data, "--max_steps=2"))
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    expected = sum(entry["loss"] for entry in curve(two_steps).values()) / 2
    assert [entry["train_loss"] for entry in history if "train_loss" in entry] == [pytest.approx(expected, rel=1e-6)]


@pytest.mark.parametrize("earlier_version", [False, True], ids=["resumed", "upgraded"])
def test_a_resumed_runs_reporters_get_the_whole_runs_mean_train_loss(two_steps, tiny_model, data, tmp_path,
                                                                      monkeypatch, earlier_version):
    """The console, TensorBoard and W&B read `train_loss` from the Trainer's last log entry, through the callbacks:
    after a resume they were told the mean of the last part while the card stated the whole run's (found in
    review)."""
    from transformers.trainer_callback import CallbackHandler

    seen, on_log = [], CallbackHandler.on_log

    def recording(self, args, state, control, logs):
        seen.append(dict(logs))
        return on_log(self, args, state, control, logs)

    monkeypatch.setattr(CallbackHandler, "on_log", recording)
    out = tmp_path / "run"
    shutil.copytree(two_steps / "checkpoint-1", out / "checkpoint-1")
    if earlier_version:
        _as_an_earlier_version_wrote(out / "checkpoint-1")
    train_module.main(_argv(out, tiny_model, data, "--max_steps=2"))
    expected = sum(entry["loss"] for entry in curve(two_steps).values()) / 2
    assert [logs["train_loss"] for logs in seen if "train_loss" in logs] == [pytest.approx(expected, rel=1e-6)]


def test_a_loss_total_the_logs_do_not_give_is_not_guessed(tmp_path):
    """An earlier version's checkpoint whose logs do not cover every step (a log window open at the save, a skipped
    step sharing its window with applied ones) gives no total: the card then states no train_loss, not a wrong one."""
    from trainer.run_control import logged_loss_total

    def total(log_history, step, skipped=()):
        (tmp_path / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": log_history}))
        return logged_loss_total(tmp_path, list(skipped))

    logs = [{"step": 2, "loss": 3.0}, {"step": 3, "loss": 0.0}, {"step": 4, "loss": 1.0}]
    assert total(logs, 4, [3]) == (7.0, 3)  # steps 1-2 (mean 3), step 4; step 3's stand-in left out
    assert total(logs, 5) == (None, 0)  # step 5 not logged
    assert total(logs, 4, [2]) == (None, 0)  # skipped inside a window of two
    assert total([], 0) == (0.0, 0)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "gemma3", "llava_next", "mistral3", "internvl",
                                    "smolvlm"])
def test_a_checkpoint_of_every_family_loads_back_into_its_model(family, tmp_path):
    """A resume reads a checkpoint's weights back through the model's own renames: a key they send to no parameter
    keeps its name when the model has it, as transformers' loading does. Qwen2.5-VL's legacy `^model` rename sent
    the pool's `model.prompt_pool.weight` into `model.language_model`, so every Qwen2.5-VL resume was refused
    ("does not match the model")."""
    import torch

    from croc_testing.family_specs import SPECS_BY_NAME
    from trainer.checkpoint_io import load_weights_into

    spec = SPECS_BY_NAME[family]
    spec.build(seed=0).save_pretrained(tmp_path)
    saved, model = spec.build(seed=0).state_dict(), spec.build(seed=1)
    load_weights_into(model, tmp_path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name


def test_the_lora_base_fingerprint_of_a_hub_id_is_its_cached_snapshots(tmp_path, monkeypatch):
    """A LoRA run on a Hub id resumed from a `--local-dir` copy of it (an offline cluster), or back, has the same base
    weights: refused before, when a Hub id had no fingerprint and a local folder one. With none for a Hub id, a run
    moved onto another repository's weights resumed silently (found by hostile reviewers). The fingerprint is read
    from the cached snapshot, of the files transformers loads (a `--local-dir` copy may also hold the `.bin` files);
    an uncached Hub id (a first run records before the weights are fetched) is not compared."""
    import huggingface_hub.constants

    from trainer.run_record import record_differences, weights_fingerprint

    def fingerprints(saved, current):
        return [d.key for d in record_differences({"lora_base_weights": saved}, {"lora_base_weights": current})]

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    repo = "llava-hf/llava-1.5-7b-hf"
    assert weights_fingerprint(repo) is None  # not cached yet
    snapshot = tmp_path / "cache" / "models--llava-hf--llava-1.5-7b-hf" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("a" * 40)
    (snapshot / "config.json").write_text("{}")
    (snapshot / "model.safetensors").write_bytes(b"weights" * 1000)
    copy = tmp_path / "llava-1.5-7b-hf"
    copy.mkdir()
    (copy / "model.safetensors").write_bytes(b"weights" * 1000)
    (copy / "pytorch_model.bin").write_bytes(b"the same weights, pickled" * 100)
    hub, local = weights_fingerprint(repo), weights_fingerprint(str(copy))
    assert hub == local is not None
    assert fingerprints(None, local) == fingerprints(local, None) == []  # one side unknown: not compared
    (snapshot / "model.safetensors").write_bytes(b"another model" * 1000)
    assert fingerprints(local, weights_fingerprint(repo)) == ["lora_base_weights"]


def test_the_lora_base_fingerprint_reads_no_training_args(tmp_path):
    """A finished base run rerun to push it rewrites its folder's `training_args.bin` (the pickled arguments, now with
    the push) and leaves its weights: read as a weight file, it refused the resume of the LoRA run on that base as
    other base weights. Its weights still count."""
    from trainer.run_record import weights_fingerprint

    (tmp_path / "model.safetensors").write_bytes(b"weights" * 1000)
    (tmp_path / "training_args.bin").write_bytes(b"arguments of the run")
    before = weights_fingerprint(str(tmp_path))
    (tmp_path / "training_args.bin").write_bytes(b"arguments of its rerun, with --push_to_hub")
    assert weights_fingerprint(str(tmp_path)) == before
    (tmp_path / "model.safetensors").write_bytes(b"retrained" * 1000)
    assert weights_fingerprint(str(tmp_path)) != before


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_a_checkpoint_whose_weights_do_not_fit_the_model_is_refused_in_one_line(two_steps, tiny_model, data,
                                                                                 tmp_path, monkeypatch, capsys, lora):
    """Weights of other shapes than the model's (a QLoRA checkpoint of computation 3 holds its trained projector as
    packed 4-bit tensors, which this version loads in full precision): PyTorch's size-mismatch traceback, after the
    model loaded. Now one line naming the checkpoint."""
    import safetensors.torch
    import torch

    extra = ("--model.use_peft=true", "--model.lora_r=4", "--model.lora_dropout=0") if lora else ()
    source = two_steps
    if lora:
        source = tmp_path / "lora_done"
        train_module.main(_argv(source, tiny_model, data, "--max_steps=2", *extra))
    out = tmp_path / "run"
    shutil.copytree(source / "checkpoint-1", out / "checkpoint-1")
    shutil.copy(source / "checkpoint-1" / "croc_run.json", out / "croc_run.json")
    weights = out / "checkpoint-1" / ("adapter_model.safetensors" if lora else "model.safetensors")
    state = safetensors.torch.load_file(weights)
    name = next(key for key in state if "multi_modal_projector" in key and key.endswith("linear_1.weight"))
    state[name] = torch.zeros(state[name].numel() // 2, 1, dtype=torch.uint8)  # a packed 4-bit weight's shape
    safetensors.torch.save_file(state, weights, metadata={"format": "pt"})
    write_manifest(out / "checkpoint-1")
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=2", *extra), monkeypatch, capsys)
    assert status == 1 and message.startswith(f"configuration error: {out / 'checkpoint-1'} cannot be resumed: its "
                                              "weights do not fit this model (Error(s) in loading state_dict"), message
    assert "size mismatch" in message and "\n" not in message
