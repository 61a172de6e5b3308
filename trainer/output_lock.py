"""One writer per `output_dir`: a lock file that a crashed run does not leave stuck.

Two runs writing one folder interleave their checkpoints, rotate each other's files away and resume from each
other's state. The first run takes `<output_dir>/.croc-run.lock` (created with O_EXCL, so two starts cannot both
win) and holds it until it ends; a second run stops before it writes anything, with one line naming the holder.

A lock outlives its run only when the run could not remove it (SIGKILL, a node lost). Such a lock is stale, and is
taken over with a warning, when
* it was taken on this host, in this boot and PID namespace, by a process that no longer exists (a process that
  exists, even suspended, keeps it, unless that PID is this process's own in this very PID namespace and this process
  does not hold the lock: a container restarted in place numbers its processes from 1 again, so its run often gets
  the PID of the run it replaces; a lock naming no namespace and this PID waits for the heartbeat rule); a
  container sharing the host name (docker --network host) has its own process table, so there only the heartbeat
  rule below applies;
* it was taken, on any host, by an earlier incarnation of this Slurm job (the same `SLURM_JOB_ID` with a lower
  `SLURM_RESTART_COUNT`: Slurm runs one incarnation of a job at a time, so a requeued job never waits on itself,
  not even on the node it ran on, where its PID may belong to another process by now; two runs inside one
  allocation share the job id but not a lower restart count);
* it was taken on another host and its holder stopped refreshing it: a live holder touches the file every
  `HEARTBEAT_SECONDS` from a background thread, and a lock untouched for `STALE_AFTER_SECONDS` is abandoned. Its
  age is measured against a file written now in the same folder, so clocks that disagree between machines (a
  shared filesystem) do not matter.

A holder whose heartbeat stopped that long (a suspended process, a node cut off from the filesystem) may come back
to find its lock taken over. Its heartbeat touches the file only while it still holds this run's token (never the
new holder's lock), and otherwise records the loss (`lost`, `lost_message`); the trainer then stops before it writes
anything more (`trainer.run_control.OutputDirTakenOver`). `verify()` reads the file now, for the moment before a
checkpoint's rename.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

LOCK_FILE = ".croc-run.lock"
HEARTBEAT_SECONDS = 30.0
# Ten missed heartbeats: long enough for a filesystem hiccup, short enough for a requeue on another node.
STALE_AFTER_SECONDS = 300.0
# How long a run that finds its lock file gone looks for the one a takeover creates after renaming it away.
TAKEOVER_GRACE_SECONDS = 1.0
# The tokens of the locks this process holds: a lock naming this process's PID with another token is a dead one's.
_HELD_HERE: set[str] = set()


class OutputDirLocked(RuntimeError):  # noqa: N818
    """Another live run holds the output folder; the message is one line naming it."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock, as written in the file."""

    host: str
    pid: int
    # A random id, then `@` and whose process table `pid` belongs to (`_pid_namespace`: the boot and the PID
    # namespace) where the system tells. Containers that share the host name (docker --network host, Kubernetes
    # hostNetwork) do not share one, and neither do two boots. It rides in the token, not in a field of its own,
    # because earlier versions of this trainer read a file with an unknown field as garbage (stale after 30 s) and
    # compare tokens only for equality.
    token: str
    started: str
    slurm_job: str | None = None
    slurm_restart: int = 0

    @classmethod
    def here(cls) -> LockHolder:
        restart = os.environ.get("SLURM_RESTART_COUNT", "0")
        namespace = _pid_namespace()
        return cls(host=socket.gethostname(), pid=os.getpid(),
                   token=uuid.uuid4().hex + (f"@{namespace}" if namespace else ""),
                   started=time.strftime("%Y-%m-%d %H:%M:%S %Z"), slurm_job=os.environ.get("SLURM_JOB_ID"),
                   slurm_restart=int(restart) if restart.isdigit() else 0)

    @property
    def pid_namespace(self) -> str | None:
        return self.token.partition("@")[2] or None

    def describe(self) -> str:
        job = f", Slurm job {self.slurm_job}" if self.slurm_job else ""
        return f"process {self.pid} on {self.host}{job}, since {self.started}"


def _pid_namespace() -> str | None:
    """This boot's id and this process's PID namespace (Linux), or None where the system does not tell."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        return f"{boot}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return None


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


# The fields of a lock file and their types: anything else (a hand-edited or foreign file) is unreadable.
_FIELD_TYPES = {"host": str, "pid": int, "token": str, "started": str, "slurm_job": (str, type(None)),
                "slurm_restart": int}


def lock_token(folder: str | os.PathLike) -> str | None:
    """The token of the lock file in `folder` as this machine reads it (None: no readable lock): another node's process
    reading the main process's token knows it sees the same folder."""
    holder = _read_holder(Path(folder) / LOCK_FILE)
    return None if holder is None else holder.token


def _read_holder(path: Path) -> LockHolder | None:
    try:
        return _parse_holder(path.read_text(encoding="utf-8"))
    except OSError:
        return None


def _parse_holder(text: str) -> LockHolder | None:
    try:
        data: dict[str, Any] = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or set(data) - set(_FIELD_TYPES) or not {"host", "pid", "token"} <= set(data):
        return None
    if any(not isinstance(value, _FIELD_TYPES[key]) or isinstance(value, bool) for key, value in data.items()):
        return None
    if not 0 < data["pid"] < 2**31:
        return None
    return LockHolder(**{"started": "?", **data})


def _age_seconds(path: Path) -> float | None:
    """Seconds since `path` was last touched, by the clock of the filesystem that holds it; None when no file can be
    made beside it to read that clock (an inode quota, a full disk): then the age is unknown, which is not old.
    FileNotFoundError when `path` is gone."""
    probe = path.with_name(f".croc-clock-{uuid.uuid4().hex}")
    try:
        probe.write_bytes(b"")
        now = probe.stat().st_mtime
    except OSError:
        return None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return now - path.stat().st_mtime


class OutputDirLock:
    """The lock of one output folder; use as a context manager (`with OutputDirLock(folder): ...`).

    Args:
        folder: the run's `output_dir` (created if missing).
        stale_after: seconds without a heartbeat after which a lock from another host is taken over.
        heartbeat: seconds between two touches of the lock file by its holder.
    """

    def __init__(self, folder: str | os.PathLike, stale_after: float = STALE_AFTER_SECONDS,
                 heartbeat: float = HEARTBEAT_SECONDS) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.stale_after = stale_after
        self.heartbeat = heartbeat
        self.holder = LockHolder.here()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Set when the lock's age could not be read (no file can be made beside it): the refusal says so.
        self._age_unknown = False
        # Set (by the heartbeat thread or `verify`) once the file no longer holds this run's token; `lost_to` is
        # whoever it names then (None: gone, or not readable as a lock).
        self._lost = threading.Event()
        self.lost_to: LockHolder | None = None
        self._made: list[Path] = []

    # ---- taking and releasing ----
    def acquire(self) -> OutputDirLock:
        """Take the lock, taking over a stale one; `OutputDirLocked` when a live run holds it."""
        # The folders this lock makes, deepest first: a run refused before it writes anything (a model folder that
        # does not load, a processor missing) removes them again if still empty, leaving the disk as it was.
        self._made = [folder for folder in (self.folder, *self.folder.parents) if not folder.exists()]
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a stale lock removed by two starts at once: one of them creates the new lock
            if self._create():
                _HELD_HERE.add(self.holder.token)
                self._start_heartbeat()
                return self
            current = _read_holder(self.path)
            reason = self._stale_reason(current)
            if reason is None:
                raise OutputDirLocked(self._held_message(current))
            logger.warning("taking over the lock of %s: %s", self.folder, reason)
            self._remove_stale(current)
        raise OutputDirLocked(self._held_message(_read_holder(self.path)))

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still this run's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        _HELD_HERE.discard(self.holder.token)
        current = _read_holder(self.path)
        if current is not None and current.token == self.holder.token:
            with contextlib.suppress(OSError):
                self.path.unlink()
            for folder in self._made:  # rmdir removes only an empty folder: anything written in it since stays
                try:
                    folder.rmdir()
                except OSError:
                    break

    # ---- still held? ----
    @property
    def lost(self) -> bool:
        """Whether this run held the lock and another run has taken it over (or it was removed) since."""
        return self._lost.is_set()

    def lost_message(self) -> str:
        """Why this run no longer holds the folder, for its one line: taken over by another run (named), or its lock
        file (or output_dir itself) removed or overwritten by something that is no run of this trainer, such as a
        cleanup job: no heartbeat stopped then, and no other run is to be looked for."""
        if self.lost_to is not None:
            return (f"the lock of output_dir {self.folder} was taken over by {self.lost_to.describe()}: this run's "
                    f"heartbeat had stopped for over {self.stale_after:.0f} s (a suspended process, or a node cut off "
                    "from the filesystem), and the other run owns the folder now")
        if not self.folder.is_dir():
            what = f"output_dir {self.folder} was removed while this run was writing it"
        elif not self.path.exists():
            what = f"the lock file of output_dir {self.folder} ({LOCK_FILE}) was removed while this run held it"
        else:
            what = (f"the lock file of output_dir {self.folder} ({LOCK_FILE}) was overwritten with what no run of "
                    "this trainer writes")
        return (f"{what}, by something other than a run of this trainer (a cleanup job?); the run stops rather than "
                "risk two runs writing the folder")

    def verify(self) -> bool:
        """Read the lock file now: True while it still holds this run's token (and touch it, as a heartbeat does),
        False once it does not (and from then on). A file that cannot be read at all (an I/O error) says nothing
        either way and counts as held; the writes that follow would fail on it too."""
        if self._lost.is_set():
            return False
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            current = self._new_holder()
            # Its own file back: a start taking over a stale lock renamed this run's away and, seeing it was not the
            # one it found stale, put it back (`_remove_stale`); the run still holds the folder.
            return True if current is self.holder else self._lose(current)
        except OSError:
            return True
        # The descriptor, not the path: the file checked is the file touched, even if a new holder replaces it
        # meanwhile (a takeover renames the old file away and creates a new one).
        with os.fdopen(fd, encoding="utf-8") as file:
            try:
                current = _parse_holder(file.read())
            except OSError:
                return True
            if current is None or current.token != self.holder.token:
                return self._lose(current)
            with contextlib.suppress(OSError):
                os.utime(file.fileno() if os.utime in os.supports_fd else self.path)
        return True

    def _new_holder(self) -> LockHolder | None:
        """The run whose lock file replaced this run's, looked for during `TAKEOVER_GRACE_SECONDS` (`self.holder`
        when this run's own file comes back), or None: a takeover renames the old file away before it creates its
        own, and a heartbeat between the two finds no file, which said "its lock file was removed" of a folder
        another run had just taken."""
        deadline = time.monotonic() + TAKEOVER_GRACE_SECONDS
        while True:
            try:
                current = _parse_holder(self.path.read_text(encoding="utf-8"))
            except OSError:
                current = None
            if current is not None:
                return self.holder if current.token == self.holder.token else current
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def _lose(self, current: LockHolder | None) -> bool:
        if not self._lost.is_set():
            self.lost_to = current
            self._lost.set()
            logger.error("%s", self.lost_message())
        return False

    def __enter__(self) -> OutputDirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # ---- internals ----
    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(self.holder.__dict__, file)
            file.flush()
            os.fsync(file.fileno())
        return True

    def _stale_reason(self, current: LockHolder | None) -> str | None:
        """Why the lock in place can be taken over, or None while its holder may be alive."""
        self._age_unknown = False
        if current is None:
            # Unreadable: a holder killed between creating and writing it, or garbage. Give a writer a moment.
            try:
                age = _age_seconds(self.path)
            except FileNotFoundError:
                return "the lock disappeared"
            self._age_unknown = age is None
            return f"unreadable lock file, {age:.0f} s old" if age is not None and age > self.heartbeat else None
        # Before the process table: a job requeued onto the node it ran on finds its old PID reused by then.
        if current.slurm_job and current.slurm_job == self.holder.slurm_job \
                and current.slurm_restart < self.holder.slurm_restart:
            return f"it was taken by an earlier incarnation of this Slurm job ({current.describe()})"
        same_table = current.pid_namespace is None or self.holder.pid_namespace is None \
            or current.pid_namespace == self.holder.pid_namespace
        own_pid = current.pid == os.getpid() and current.token not in _HELD_HERE
        if current.host == self.holder.host and same_table and own_pid \
                and current.pid_namespace is not None and current.pid_namespace == self.holder.pid_namespace:
            # This process's PID in this very table, not its lock: an earlier process numbered alike (a container
            # restarted in place, whose PID namespace can even get the same id) died holding it.
            return f"its {current.describe()} was an earlier process with this process's PID"
        if current.host == self.holder.host and same_table and not own_pid:
            # On this host the process table is the truth: a holder that exists keeps the lock, suspended or not.
            return None if _process_exists(current.pid) else f"its {current.describe()} no longer exists"
        # Another host, or another boot or PID namespace of this one (a container sharing the host name), or this
        # process's PID in a table not known to be this one (a lock naming no namespace: the live PID 1 of another
        # container sharing the host name, taken over at once): the process table here says nothing about the
        # holder, its heartbeat does.
        try:
            age = _age_seconds(self.path)
        except FileNotFoundError:
            return "the lock disappeared"
        # Unknown is not old: a live run on an inode-full filesystem would otherwise lose its lock to a second start.
        self._age_unknown = age is None
        if age is not None and age > self.stale_after:
            return f"its {current.describe()} has not refreshed it for {age:.0f} s"
        return None

    def _remove_stale(self, seen: LockHolder | None) -> None:
        # Rename first: of two starts taking over the same stale lock, only one rename succeeds on the file seen.
        aside = self.path.with_name(f"{LOCK_FILE}.stale-{uuid.uuid4().hex}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        moved = _read_holder(aside)
        if seen is not None and moved is not None and moved.token != seen.token:
            # A new holder took it meanwhile: put it back (a link, which never replaces a lock made since), it is live.
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
            with contextlib.suppress(OSError):
                aside.unlink()
            return
        with contextlib.suppress(OSError):
            aside.unlink()

    def _held_message(self, current: LockHolder | None) -> str:
        who = current.describe() if current is not None else "another run"
        return (f"output_dir {self.folder} is in use by {who} (lock file {self.path}); two runs writing one folder "
                "would mix their checkpoints. Wait for it to end, or use another output_dir. A lock left by a "
                f"killed run is taken over once its process is gone, or after {self.stale_after:.0f} s without a "
                "heartbeat from another host" + (
                    f"; its heartbeat's age cannot be read now, as no file can be made in {self.folder} (a full disk "
                    "or an inode quota?): free some there, or remove the lock file if its run is known to be dead"
                    if self._age_unknown else ""))

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._lost.clear()
        self.lost_to = None

        def beat() -> None:
            # A beat that finds another holder's token stops for good: touching that file would keep the new
            # holder's lock fresh for a run that no longer owns the folder.
            while not self._stop.wait(self.heartbeat) and self.verify():
                pass

        self._thread = threading.Thread(target=beat, name="croc-output-lock", daemon=True)
        self._thread.start()


__all__ = ["HEARTBEAT_SECONDS", "LOCK_FILE", "STALE_AFTER_SECONDS", "LockHolder", "OutputDirLock", "OutputDirLocked",
           "lock_token"]
