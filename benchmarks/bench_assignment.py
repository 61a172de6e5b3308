"""Assignment benchmark: the project's Hungarian path (costs + host copy + `lap`) vs scipy vs nearest neighbour.

Per-image times at the paper's shape (576 visual tokens, mask 0.75 -> 432 queries, pool 2048) for D = 4096
(Vicuna-7B width) and D = 64, and at pools of 576 and 4096 (M = 432, D = 4096), for batches of 1, 16 and 64
images. Each row reports, per image:

* costs: `pairwise_l2_costs` on the chosen device (one float32 GEMM for the batch);
* to host: float64 conversion + finiteness check + device->host copy (`matching._host_costs`);
* lap solve: the batched multi-threaded solve (`matching._solve_lap`) on that float64 host array;
* hungarian(): `hungarian_assignment(costs)` end to end (to host, solve, ids back to the device);
* path: costs + hungarian(), the project's Hungarian path;
* hungarian() f32: the same with `precision="float32"` (no host conversion, lap solves in float32);
* scipy: `linear_sum_assignment` per image on the same host array, on at most `--scipy-images` images of the
  batch (it is sequential, so its per-image time does not depend on the batch);
* nearest: `costs.argmin(-1)` on the device (the released code's rule; add the costs column for its path).

lap and scipy are timed alternately in the same process on the same matrices, and their optimal totals are
compared (max relative difference over the scipy images, for both lap precisions). Timings are medians over
repetitions. The exit status is 1 if any optimum differs.

    python -m benchmarks.bench_assignment [--device cpu|cuda] [--quick] [--out benchmarks/results/assignment.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import scipy
import torch

from benchmarks.harness import sync
from modeling_croc import matching
from modeling_croc.matching import hungarian_assignment, nearest_assignment, pairwise_l2_costs

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "assignment.json"
# (M, N, D): masked tokens per image, pool size, token width.
CASES = [(432, 2048, 4096), (432, 2048, 64), (432, 576, 4096), (432, 4096, 4096)]
BATCHES = (1, 16, 64)
QUICK_BATCHES = (1, 16)


def _timed(
    device: torch.device, fn: Callable[..., object], *args: object, **kwargs: object
) -> tuple[float, object]:
    """Seconds `fn(*args, **kwargs)` takes (device work included), and its result."""
    sync(device)
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    sync(device)
    return time.perf_counter() - start, result


def _totals(costs: np.ndarray, ids: np.ndarray) -> np.ndarray:
    return np.take_along_axis(costs, ids[:, :, None], axis=2)[:, :, 0].sum(axis=1)


def _bench_case(
    rows: int,
    cols: int,
    width: int,
    batch: int,
    device: torch.device,
    reps: int,
    cost_reps: int,
    scipy_images: int,
) -> dict:
    generator = torch.Generator(device=device).manual_seed(rows * 7 + cols * 3 + width + batch)
    queries = torch.randn(batch, rows, width, generator=generator, device=device)
    pool = torch.randn(cols, width, generator=generator, device=device)

    cost_times = []
    for _ in range(cost_reps):
        seconds, costs = _timed(device, pairwise_l2_costs, queries, pool)
        cost_times.append(seconds)
    del queries

    times: dict[str, list[float]] = {
        k: [] for k in ("host", "lap", "scipy", "hungarian", "hungarian_f32", "nearest")
    }
    n_scipy = min(batch, scipy_images)
    cpu = torch.device("cpu")
    host = lap_ids = scipy_ids = f32_ids = None
    for _ in range(reps):
        seconds, host = _timed(device, matching._host_costs, costs, "float64")
        times["host"].append(seconds / batch)
        # Alternate the two solvers on the same float64 matrices so machine noise hits both alike.
        seconds, lap_ids = _timed(cpu, matching._solve_lap, host)
        times["lap"].append(seconds / batch)
        seconds, scipy_ids = _timed(cpu, matching._solve_scipy, host[:n_scipy])
        times["scipy"].append(seconds / n_scipy)
        seconds, _ = _timed(device, hungarian_assignment, costs)
        times["hungarian"].append(seconds / batch)
        seconds, f32_ids = _timed(device, hungarian_assignment, costs, precision="float32")
        times["hungarian_f32"].append(seconds / batch)
        seconds, _ = _timed(device, nearest_assignment, costs)
        times["nearest"].append(seconds / batch)

    f32_ids = f32_ids.cpu().numpy()
    scipy_totals = _totals(host[:n_scipy], scipy_ids)

    def rel_diff(ids: np.ndarray) -> float:
        totals = _totals(host[:n_scipy], ids[:n_scipy])
        return float(np.max(np.abs(totals - scipy_totals) / np.abs(scipy_totals)))

    ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    cost_ms = statistics.median(cost_times) / batch * 1e3
    diff64, diff32 = rel_diff(lap_ids), rel_diff(f32_ids)
    return {
        "M": rows,
        "N": cols,
        "D": width,
        "batch": batch,
        "costs_ms": cost_ms,
        "to_host_ms": ms["host"],
        "lap_ms": ms["lap"],
        "hungarian_ms": ms["hungarian"],
        "path_ms": cost_ms + ms["hungarian"],
        "hungarian_f32_ms": ms["hungarian_f32"],
        "scipy_ms": ms["scipy"],
        "scipy_images": n_scipy,
        "nearest_ms": ms["nearest"],
        "speedup_scipy_over_lap": ms["scipy"] / ms["lap"],
        "speedup_scipy_over_hungarian_f32": ms["scipy"] / ms["hungarian_f32"],
        "max_rel_cost_diff": diff64,
        "max_rel_cost_diff_f32": diff32,
        "costs_equal": diff64 <= 1e-9 and diff32 <= 1e-6,
        "one_to_one": all(len(np.unique(row)) == rows for ids in (lap_ids, f32_ids) for row in ids),
        "reps": reps,
        "cost_reps": cost_reps,
    }


def _machine_info(device: torch.device) -> dict:
    import lap

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_cores_available": matching._num_solver_threads(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "lapx": getattr(lap, "__version__", "unknown"),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _markdown(results: list[dict], device: torch.device) -> str:
    header = (
        "| M×N | D | batch | costs | to host | lap solve | hungarian() | **path** | hungarian() f32 | "
        "scipy solve (imgs) | nearest | scipy/lap | optimum lap = scipy |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    lines = []
    for r in results:
        verdict = "yes" if r["costs_equal"] and r["one_to_one"] else "**NO**"
        check = f"{verdict} ({r['max_rel_cost_diff']:.0e} / {r['max_rel_cost_diff_f32']:.0e})"
        lines.append(
            f"| {r['M']}×{r['N']} | {r['D']} | {r['batch']} | {r['costs_ms']:.2f} | {r['to_host_ms']:.2f} | "
            f"{r['lap_ms']:.2f} | {r['hungarian_ms']:.2f} | **{r['path_ms']:.2f}** | {r['hungarian_f32_ms']:.2f} | "
            f"{r['scipy_ms']:.2f} ({r['scipy_images']}) | {r['nearest_ms']:.3f} | "
            f"{r['speedup_scipy_over_lap']:.1f}× | {check} |"
        )
    notes = (
        f"\nMilliseconds per image, medians, costs on `{device}`. *costs*: `pairwise_l2_costs` (float32 GEMM); "
        "*to host*: float64 conversion + NaN/inf check + device->host copy; *lap solve*: `lap.lapjvh_batch` on the "
        "whole float64 batch; *hungarian()*: `hungarian_assignment(costs)` end to end (to host + solve + ids back); "
        "**path** = costs + hungarian(), the project's Hungarian path; *hungarian() f32*: the same with "
        "`precision='float32'` (no host conversion, float32 solve); *scipy solve*: `linear_sum_assignment` per "
        "image on the same float64 matrices, timed on the first *imgs* images of the batch only (it runs one image "
        "at a time); *nearest*: argmin on the device (its path is costs + nearest); *scipy/lap*: solve-time ratio, "
        "timed alternately in the same run; *optimum*: lap's optimal totals equal scipy's on the scipy images "
        "(max relative difference, float64 / float32 solve) and ids one-to-one.\n"
    )
    return header + "\n".join(lines) + "\n" + notes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="where the costs are computed: cpu or cuda[:i]")
    parser.add_argument(
        "--quick", action="store_true", help="batches 1 and 16, fewer repetitions (< 1 min on CPU)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    parser.add_argument("--scipy-images", type=int, default=8, help="images per batch timed with scipy")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    batches = QUICK_BATCHES if args.quick else BATCHES

    # Warm up kernels, lap's native worker pool and scipy on a small problem before timing anything.
    _bench_case(432, 2048, 64, 2, device, reps=1, cost_reps=1, scipy_images=1)

    started = time.perf_counter()
    results = []
    for rows, cols, width in CASES:
        for batch in batches:
            # Small batches take about a millisecond per step, where one descheduled thread on a shared machine
            # costs several: more repetitions there keep the medians honest. One float32 GEMM of a big batch at
            # D = 4096 takes seconds on a CPU: time it once.
            reps = max(3, 32 // batch) if not args.quick else max(2, 8 // batch)
            heavy = device.type == "cpu" and width * batch >= 4096 * 16
            cost_reps = 1 if heavy else min(reps, 5)
            result = _bench_case(rows, cols, width, batch, device, reps, cost_reps, args.scipy_images)
            results.append(result)
            print(
                f"  {rows}x{cols} D={width} B={batch}: path {result['path_ms']:.2f} ms/img, "
                f"hungarian() {result['hungarian_ms']:.2f} (f32 {result['hungarian_f32_ms']:.2f}), "
                f"lap solve {result['lap_ms']:.2f}, scipy solve {result['scipy_ms']:.2f}",
                file=sys.stderr,
                flush=True,
            )
    elapsed = time.perf_counter() - started

    table = _markdown(results, device)
    print(table)
    payload = {
        "benchmark": "assignment",
        "quick": args.quick,
        "elapsed_s": elapsed,
        "machine": _machine_info(device),
        "results": results,
        "all_costs_equal": all(r["costs_equal"] and r["one_to_one"] for r in results),
        "markdown": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {os.path.relpath(args.out)} ({elapsed:.0f} s)", file=sys.stderr)
    return 0 if payload["all_costs_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
