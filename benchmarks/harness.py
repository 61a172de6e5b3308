"""Timing harness shared by the benchmarks: interleaved wall-clock timing, medians and ratios, and a count of
the Python calls a function makes.

Kept apart from any one benchmark so that every question is timed the same way (same synchronisation, same
rotation of the order, same GC handling) and the numbers of different tables stay comparable.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a CUDA timing covers the kernels, not just their launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    fns: dict[str, Callable[[], object]], reps: int, warmup: int, device: torch.device
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Seconds per call of each function: all functions once per repetition, order rotated every repetition
    so that none always runs first or last (next to another engineer's burst).

    The cyclic GC is off meanwhile: a collection costs ~0.3 s with transformers loaded and would land in whichever
    call crossed its threshold (tensors are freed by reference counting anyway).

    Returns the times, and per function the float values it returned (the steps return their mask-build time).
    """
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    returned: dict[str, list[float]] = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for rep in range(warmup + reps):
            shift = rep % len(names)
            for name in names[shift:] + names[:shift]:
                sync(device)
                start = time.perf_counter()
                value = fns[name]()
                sync(device)
                if rep >= warmup:
                    times[name].append(time.perf_counter() - start)
                    if isinstance(value, float):
                        returned[name].append(value)
    finally:
        if gc_was_enabled:
            gc.enable()
    return times, returned


def median_ms(values: list[float]) -> float:
    """Median of durations in seconds, in milliseconds: medians resist the bursts of a shared machine."""
    return statistics.median(values) * 1e3


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0 (tables show '—')."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def count_python_calls(fn: Callable[[], object]) -> int:
    """Python and builtin function calls made by one `fn()` (a measure of interpreter work, not of tensor work)."""
    calls = 0

    def profiler(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(profiler)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls
