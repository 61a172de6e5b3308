"""Peak-memory probes for one call of a function: on CPU the peak RSS increase of a forked child process,
on CUDA the peak allocated memory.

Apart from the timing harness because it works differently: the CPU probe forks (a fresh high-water mark per
measurement without a new interpreter), so it runs outside the timed loop and never next to a timing.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import signal
import time
import traceback
from collections.abc import Callable

import torch

MEMORY_TIMEOUT_S = 300.0


def _proc_status_kb(field: str) -> int:
    """A `/proc/self/status` field in kB (VmRSS, VmHWM): the kernel's account, allocator overhead included."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def malloc_trim() -> None:
    """Hand freed heap pages back to the OS: reusing them then counts as new RSS (the memory child), and a timed step
    does not inherit the heap a larger step before it left behind (`bench_packing`)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _fork_memory_child(fn: Callable[[], object]) -> tuple[int, int]:
    """Fork a child that runs `fn` once and writes its RSS before and high-water mark to a pipe: (pid, read fd).

    A forked child is a fresh process for the kernel's high-water mark (reset through `/proc/self/clear_refs`)
    without paying a new interpreter and `import transformers` (10+ s here) per configuration. It runs with one
    thread: libgomp's thread pool does not survive `fork`, and a multi-threaded child of a parent that already
    used it hangs (seen here). Thread count barely changes a step's memory (per-thread scratch buffers only).
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 1
        try:
            os.close(read_fd)
            torch.set_num_threads(1)
            gc.collect(1)  # young garbage only: a full collection takes ~0.3 s here and frees no tensors
            malloc_trim()
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")  # reset VmHWM to the current RSS
            before = _proc_status_kb("VmRSS")
            fn()
            peak = _proc_status_kb("VmHWM")
            os.write(write_fd, json.dumps({"before_kb": before, "peak_kb": peak}).encode())
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write_fd)
    return pid, read_fd


def _collect_memory_child(pid: int, read_fd: int, deadline: float) -> float | None:
    """The child's peak RSS increase in MB, or None if it failed or ran past `deadline` (then it is killed)."""
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return None
            time.sleep(0.02)
        payload = os.read(read_fd, 4096)
    finally:
        os.close(read_fd)
    if status != 0 or not payload:
        return None
    data = json.loads(payload)
    return (data["peak_kb"] - data["before_kb"]) / 1024


def cpu_peak_rss_mb(
    fns: dict[str, Callable[[], object]], jobs: int, timeout_s: float = MEMORY_TIMEOUT_S
) -> dict[str, float | None]:
    """Peak RSS increase (MB) of one call of each function, each in its own forked child, `jobs` at a time.

    Children run side by side only to save wall time: each one's RSS is its own, so that does not change the
    numbers (nothing is timed meanwhile). None where a child failed or timed out, or without Linux `/proc`.
    """
    if not hasattr(os, "fork") or not os.path.exists("/proc/self/clear_refs"):
        return dict.fromkeys(fns)
    results: dict[str, float | None] = {}
    pending = list(fns.items())
    running: list[tuple[str, int, int]] = []
    deadline = time.monotonic() + timeout_s
    while pending or running:
        while pending and len(running) < max(1, jobs):
            name, fn = pending.pop(0)
            running.append((name, *_fork_memory_child(fn)))
        name, pid, read_fd = running.pop(0)
        results[name] = _collect_memory_child(pid, read_fd, deadline)
    return results


def cuda_peak_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Peak allocated CUDA memory above what was allocated before `fn` (MB)."""
    gc.collect(1)
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20
