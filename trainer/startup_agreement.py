"""The processes of a launched run agree that each got through its own start before any of them joins torch's
process group.

A configuration check that fails on one node only (a data.path or model folder it lacks, a Hub id not in its
cache, a config file that differs) ends that node's process before the rendezvous, and the others waited for it in `init_process_group`: up
to `ddp_timeout` (4 hours) on GPUs, and on CPUs for ever (transformers passes no timeout to a CPU process group), with
nothing in their logs. Under torchrun (and `accelerate launch`, which runs it) every worker of the job reaches the
launcher's store (`TORCHELASTIC_USE_AGENT_STORE`: a TCPStore at MASTER_ADDR:MASTER_PORT, served by node 0's agent
before any worker starts). Each process records there that it arrived, or the one line it stops with; each waits for
every arrival and stops with the first line reported, so every node's log ends with the line of the node that
failed. Elsewhere (one process, another launcher) nothing is done. A process that fails once it has arrived (reading
its rows: images missing from its copy) is past this agreement: the others stop with the process group's error
(docs/SCALING.md).
"""

from __future__ import annotations

import os
import socket
import time
from datetime import timedelta

# How often a waiting process looks at the store, and how long it waits for the store itself.
POLL_SECONDS = 0.1
CONNECT_SECONDS = 60

_arrived = False


class StartupFailedElsewhere(Exception):
    """Another process of the run stopped before the run started; the message is its line."""


def _store_and_prefix():
    """A client of the launcher's store and this launch's key prefix, or (None, None) outside torchrun."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != str(True) or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None, None
    from torch.distributed import TCPStore

    store = TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                     timeout=timedelta(seconds=CONNECT_SECONDS))
    # A new store serves each restart; the run id and restart count keep keys apart where one were reused.
    prefix = (f"croc/startup/{os.environ.get('TORCHELASTIC_RUN_ID', 'run')}/"
              f"{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}")
    return store, prefix


def arrive(timeout_seconds: float) -> None:
    """Record that this process got through its start and wait, up to `timeout_seconds`, for every process of the
    run to do the same (once per process; a no-op outside torchrun). Raises `StartupFailedElsewhere` with the line
    of a process that stopped instead, or when some process neither arrived nor stopped in time."""
    global _arrived
    if _arrived:
        return
    store, prefix = _store_and_prefix()  # a store that cannot be reached raises here: report_failure still tells
    _arrived = True
    if store is None:
        return
    world_size = int(os.environ["WORLD_SIZE"])
    store.add(f"{prefix}/arrived", 1)
    deadline = time.monotonic() + timeout_seconds
    while True:
        if store.check([f"{prefix}/failed"]):
            raise StartupFailedElsewhere(store.get(f"{prefix}/failed").decode("utf-8"))
        arrived = store.add(f"{prefix}/arrived", 0)
        if arrived >= world_size:
            return
        if time.monotonic() > deadline:
            raise StartupFailedElsewhere(f"{world_size - arrived} of the run's {world_size} processes did not start "
                                         f"within {timeout_seconds:g} s (ddp_timeout), nor said why: see the logs of "
                                         "the nodes whose processes did not start")
        time.sleep(POLL_SECONDS)


def report_failure(line: str) -> None:
    """Tell the run's other processes, waiting in `arrive`, the line this process stops with before it arrived (the
    first process to fail is the one every node names); nothing once it arrived or outside torchrun, and nothing if
    the store cannot be reached (the launcher is gone)."""
    if _arrived:
        return
    try:
        store, prefix = _store_and_prefix()
        if store is not None:
            where = f"process {os.environ.get('RANK', '?')} (on {socket.gethostname()})"
            store.compare_set(f"{prefix}/failed", "", f"{where} stopped before the run started: {line}")
    except (RuntimeError, OSError, ValueError, KeyError):  # no store to tell: the launcher reports the exit
        pass


__all__ = ["StartupFailedElsewhere", "arrive", "report_failure"]
