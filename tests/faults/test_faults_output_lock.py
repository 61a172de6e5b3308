"""Issue 20, one writer per output_dir: the output folder's lock. A second run on a busy folder stops with one line
and writes nothing; a lock is taken over only when its holder is gone (a killed process of this host, a heartbeat
stopped on another host, an earlier incarnation of a requeued Slurm job), never while it lives (suspended, in a
container sharing the host, or of an age that cannot be read); a malformed lock file is unreadable, not a crash;
and a run whose lock was taken over stops and writes nothing more into the folder."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from run_cases import checkpointed_argv as _argv
from run_cases import cli_exit
from run_cases import listing as _listing

from trainer import train as train_module
from trainer.output_lock import LOCK_FILE, LockHolder, OutputDirLock, OutputDirLocked


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


# --- a lock taken over ----------------------------------------------------------------------------------------


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


def test_a_heartbeat_between_a_takeovers_rename_and_create_still_names_the_new_holder(tmp_path):
    """A takeover renames the stale lock file away, then creates its own: a heartbeat in between found no file and
    said "another run (its lock file was removed)", which made the lock tests flaky on a loaded machine and told a
    user less than it knew a moment later. It looks for the new holder's file for a moment first."""
    import threading

    lock = OutputDirLock(tmp_path, heartbeat=3600).acquire()
    try:
        (tmp_path / LOCK_FILE).rename(tmp_path / "aside")
        planting = threading.Timer(0.3, _plant_lock, args=(tmp_path,),
                                   kwargs={"host": "node-9", "pid": 4321, "token": "new-holder"})
        planting.start()
        assert not lock.verify()
        planting.join()
        assert lock.lost_to is not None and lock.lost_to.token == "new-holder"
        assert "taken over by process 4321 on node-9" in lock.lost_message(), lock.lost_message()
    finally:
        lock.release()


def test_a_lock_file_put_back_within_the_grace_is_still_held(tmp_path):
    """A start taking over a stale lock renames the file it found away, and puts it back when it is not the one it
    found stale (a run took it meanwhile: this one). Before: a heartbeat in between waited for a new holder, found
    this run's own file back, and stopped the run as taken over "by another run (its lock file was removed)"."""
    import threading

    lock = OutputDirLock(tmp_path, heartbeat=3600).acquire()
    try:
        (tmp_path / LOCK_FILE).rename(tmp_path / "aside")
        putting_back = threading.Timer(0.3, os.link, args=(tmp_path / "aside", tmp_path / LOCK_FILE))
        putting_back.start()
        assert lock.verify() and not lock.lost
        putting_back.join()
        assert lock.verify() and lock.holder.token in (tmp_path / LOCK_FILE).read_text()
    finally:
        lock.release()
    assert not (tmp_path / LOCK_FILE).exists()


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


@pytest.mark.parametrize("removed", ["the lock file", "output_dir", "overwritten"])
def test_a_lock_removed_by_a_cleanup_job_is_said_as_such(tmp_path, removed):
    """A cleanup job deleted the lock file (or the whole output_dir) three seconds into a run: it stopped saying the
    lock "was taken over by another run (its lock file was removed): this run's heartbeat had stopped for over
    300 s", sending the operator after a second run and a suspended node that did not exist."""
    import shutil

    folder = tmp_path / "run"
    folder.mkdir()
    lock = OutputDirLock(folder, heartbeat=3600).acquire()
    try:
        if removed == "the lock file":
            (folder / LOCK_FILE).unlink()
            what = f"the lock file of output_dir {folder} ({LOCK_FILE}) was removed while this run held it"
        elif removed == "output_dir":
            shutil.rmtree(folder)
            what = f"output_dir {folder} was removed while this run was writing it"
        else:
            (folder / LOCK_FILE).write_text("garbage\n")
            what = f"the lock file of output_dir {folder} ({LOCK_FILE}) was overwritten with what no run of this " \
                   "trainer writes"
        assert not lock.verify()
        assert lock.lost_message() == (f"{what}, by something other than a run of this trainer (a cleanup job?); the "
                                       "run stops rather than risk two runs writing the folder")
    finally:
        lock.release()
