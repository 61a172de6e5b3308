"""Assignment of prompt-pool tokens to masked visual tokens (Croc stage 1.5).

Every image has ``M`` masked visual tokens (the *queries*, ``M = 432`` for 576 tokens at ``mask_ratio=0.75``)
and the pool has ``N`` learnable tokens (``N = 2048``). Two assignment rules are supported:

* ``"hungarian"`` (the paper): an exact one-to-one rectangular assignment per matching group (an image; or a batch
  row, as ViCToR solves it) that minimises the summed L2 distance between each query and its pool token. Pool ids
  are distinct within a group, not across groups. Groups with fewer queries are padded (see `assign_pool_tokens`).
* ``"nearest"`` (the released code): each query takes its nearest pool token (``cdist`` + ``argmin``), so
  several queries may share one pool token.

No gradient flows through the discrete choice: callers index the pool with the returned ids, so only the chosen
rows receive gradient from the language model.

Costs are computed on the inputs' device in float32 (one GEMM for the whole batch) and, for the Hungarian rule,
copied to the host and solved there (in float64 by default; the model solves float32 costs in float32). From a GPU
the copy goes into a reused pinned buffer in chunks whose copies overlap the solves of the chunks before them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from .profiling import croc_region

try:
    # `lapx` installs the module `lap`. Its batched solvers run the whole batch in native worker threads with
    # the GIL released and solve rectangular problems natively (no padding of the M x N matrix to N x N).
    # Measured on this project's 2-core CPU machine at 432 x 2048: ~0.6-0.9 ms per image against ~6-12 ms for
    # scipy's `linear_sum_assignment` called per image (see `benchmarks/bench_assignment.py`).
    import lap as _lap
except ImportError:  # pragma: no cover - exercised only on machines without lapx
    _lap = None

__all__ = [
    "ASSIGNMENT_METHODS",
    "HUNGARIAN_SOLVERS",
    "assign_pool_tokens",
    "hungarian_assignment",
    "nearest_assignment",
    "pairwise_l2_costs",
]

HUNGARIAN_SOLVERS = ("auto", "lap", "scipy")
# Working precision of the host-side solve: name -> (torch dtype, numpy dtype).
_PRECISIONS = {"float64": (torch.float64, np.float64), "float32": (torch.float32, np.float32)}


def _num_solver_threads() -> int:
    """CPU cores this process may run on (`os.cpu_count()` can report the host's count inside a container,
    and lap's `n_threads=0` would then start more workers than there are cores)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _empty_ids(batch: int, rows: int, device: torch.device) -> torch.LongTensor:
    return torch.empty((batch, rows), dtype=torch.long, device=device)


def pairwise_l2_costs(queries: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """L2 distance between every query and every pool token.

    Args:
        queries: `(B, M, D)` the masked visual tokens of B images (any float dtype).
        pool: `(N, D)` the prompt-pool tokens, on the same device as `queries`.

    Returns:
        `(B, M, N)` float32 distances on `queries.device`, without autograd history. They come from the GEMM
        form (as `torch.cdist` uses for all but tiny inputs), so their absolute error is about
        `eps_float32 * |x|^2 / d` and coincident points get about `sqrt(eps_float32) * |x|` rather than 0. On CUDA
        the GEMM follows the global TF32 setting (`torch.backends.cuda.matmul`), which coarsens the costs.
    """
    if queries.dim() != 3 or pool.dim() != 2:
        raise ValueError(
            f"pairwise_l2_costs expects queries (B, M, D) and pool (N, D); got {tuple(queries.shape)} and "
            f"{tuple(pool.shape)}"
        )
    if queries.shape[-1] != pool.shape[-1]:
        raise ValueError(f"queries and pool have different widths: {queries.shape[-1]} vs {pool.shape[-1]}")
    batch, rows, width = queries.shape
    with torch.no_grad():
        if batch * rows == 0 or pool.shape[0] == 0:
            return torch.zeros((batch, rows, pool.shape[0]), dtype=torch.float32, device=queries.device)
        # Distances are translation invariant. The GEMM form |q|^2 + |p|^2 - 2 q.p loses precision to
        # cancellation when both sets share a large common offset (projector outputs do, and the `paper` pool is
        # initialised at the visual tokens' mean), so both sides are first centred on the pool mean: O((BM+N)D)
        # work next to the O(BMND) GEMM. The subtraction also does the float32 cast of bf16/fp16 inputs in the
        # same pass (type promotion), so it costs no extra copy.
        centre = pool.detach().float().mean(dim=0)
        q = (queries.detach().reshape(batch * rows, width) - centre).float()
        p = (pool.detach() - centre).float()
        # One (B*M, D) x (D, N) GEMM for the whole batch rather than B batched ones; cdist's mm path clamps the
        # squared distances at 0 before the square root, so rounding never yields NaN.
        costs = torch.cdist(q, p, compute_mode="use_mm_for_euclid_dist")
    return costs.view(batch, rows, pool.shape[0])


def _check_costs(costs: torch.Tensor) -> None:
    if costs.dim() != 3:
        raise ValueError(f"costs must be (B, M, N); got shape {tuple(costs.shape)}")
    if costs.is_complex() or costs.dtype == torch.bool:
        raise ValueError(f"costs must be real numbers; got dtype {costs.dtype}")


_NOT_FINITE = ("costs contain NaN or infinite values; the assignment solvers' results are undefined for them "
               "(check the visual tokens and the prompt pool for NaN/inf, or for values so large that their squared "
               "distances overflow float32)")


def _check_finite(costs: torch.Tensor) -> None:
    """NaN or +-inf anywhere in the costs: the solvers' results are undefined for them. On the CPU one sum, in which
    NaN and +-inf propagate, with the elementwise check only when it is not finite (a real NaN/inf, or an overflow);
    elsewhere one reduction on the device, whose result is read at once (it waits for the costs' GEMM, which the
    first copy would wait for anyway)."""
    if costs.device.type == "cpu":
        host = costs.numpy() if costs.dtype in (torch.float32, torch.float64) else costs.float().numpy()
        with np.errstate(over="ignore", invalid="ignore"):
            finite = np.isfinite(host.sum()) or np.isfinite(host).all()
    else:
        finite = bool(torch.isfinite(costs).all())
    if not finite:
        raise ValueError(_NOT_FINITE)


def _host_costs(costs: torch.Tensor, precision: str = "float64") -> np.ndarray:
    """`(B, M, N)` costs as one C-contiguous host array of dtype `precision`, checked finite.

    Off the CPU, the conversion happens on the device before the copy: nearly free there, and the copy stays a
    single transfer. On the CPU it is done by numpy: torch's CPU dtype conversion measured ~8x slower here
    (2.6 ms vs 0.3 ms for one 432 x 2048 matrix, worse right after a multi-threaded GEMM). float32 CPU costs
    with `precision="float32"` are not copied at all (lap borrows contiguous arrays).
    """
    torch_dtype, numpy_dtype = _PRECISIONS[precision]
    costs = costs.detach()
    _check_finite(costs)
    if costs.device.type != "cpu" or costs.dtype == torch.bfloat16:  # numpy has no bfloat16
        costs = costs.to(torch_dtype)
    return np.ascontiguousarray(costs.cpu().numpy(), dtype=numpy_dtype)


class _PinnedCosts(threading.local):
    """A page-locked host buffer reused from batch to batch: a device-to-host copy into it runs at the link's speed
    and asynchronously (a fresh pageable array is both slower to fill and allocated on every call). One per thread:
    lap releases the GIL while it solves, and a forward in another thread (`nn.DataParallel` replicas, a threaded
    evaluation loop) would otherwise refill the buffer under the chunks still to be solved."""

    def __init__(self) -> None:
        self.buffer: torch.Tensor | None = None

    def take(self, numel: int) -> torch.Tensor:
        if self.buffer is None or self.buffer.numel() < numel:
            self.buffer = _page_locked_floats(numel)
        return self.buffer[:numel]


def _page_locked_floats(numel: int) -> torch.Tensor:
    return torch.empty(numel, dtype=torch.float32, pin_memory=True)


_PINNED = _PinnedCosts()
# Images per copy on the GPU path: the copy of the next chunk runs while lap solves this one.
_OVERLAP_CHUNK = 4


def _solve_from_device(costs: torch.Tensor, solve: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Solve `(B, M, N)` float32 device costs on the host without a full-array pass on the critical path: no dtype
    conversion (lap solves float32 costs in float32), a reused pinned buffer (one per thread), each chunk's copy queued
    asynchronously and waited for only when its solve starts, so later copies overlap earlier solves (lap releases
    the GIL)."""
    batch, rows, cols = costs.shape
    # Read before the copies are queued: reading a device value waits for everything queued before it, copies too.
    _check_finite(costs)
    host = _PINNED.take(batch * rows * cols).view(batch, rows, cols)
    stream = torch.cuda.current_stream(costs.device)
    ready = []
    for start in range(0, batch, _OVERLAP_CHUNK):
        stop = min(start + _OVERLAP_CHUNK, batch)
        host[start:stop].copy_(costs[start:stop], non_blocking=True)
        event = torch.cuda.Event()
        event.record(stream)
        ready.append((start, stop, event))
    ids = np.empty((batch, rows), dtype=np.int64)
    for start, stop, event in ready:
        event.synchronize()
        ids[start:stop] = solve(host[start:stop].numpy())
    return ids


def _solve_lap(costs: np.ndarray) -> np.ndarray:
    """`(B, M, N)` float64/float32 -> `(B, M)` int64 column ids, all images in one native multi-threaded call
    (working precision = the array's dtype)."""
    batch, rows, _ = costs.shape
    row_list, col_list = _lap.lapjvh_batch(
        costs, extend_cost=True, return_cost=False, n_threads=_num_solver_threads()
    )
    ids = np.empty((batch, rows), dtype=np.int64)
    for b in range(batch):
        # With cost_limit=inf every row is matched (M <= N); rows come back sorted but scatter anyway.
        ids[b, row_list[b]] = col_list[b]
    return ids


def _solve_scipy(costs: np.ndarray) -> np.ndarray:
    """`(B, M, N)` -> `(B, M)` int64 column ids, one `linear_sum_assignment` call per image (always float64)."""
    from scipy.optimize import linear_sum_assignment

    batch, rows, _ = costs.shape
    ids = np.empty((batch, rows), dtype=np.int64)
    for b in range(batch):
        row_ind, col_ind = linear_sum_assignment(costs[b])
        ids[b, row_ind] = col_ind
    return ids


_SOLVERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"lap": _solve_lap, "scipy": _solve_scipy}


def _resolve_solver(solver: str) -> str:
    if solver not in HUNGARIAN_SOLVERS:
        raise ValueError(f"unknown Hungarian solver {solver!r}; expected one of {HUNGARIAN_SOLVERS}")
    if solver == "auto":
        return "lap" if _lap is not None else "scipy"
    if solver == "lap" and _lap is None:
        raise ImportError("solver='lap' needs the `lapx` package (`pip install lapx`), which provides `lap`")
    return solver


def hungarian_assignment(
    costs: torch.Tensor, solver: str = "auto", *, precision: str = "float64"
) -> torch.LongTensor:
    """Exact one-to-one minimum-cost assignment of each image's rows to distinct columns.

    Args:
        costs: `(B, M, N)` with `M <= N`, any real dtype, any device; finite values only.
        solver: `"lap"` (`lap.lapjvh_batch`, batched and multi-threaded), `"scipy"`
            (`scipy.optimize.linear_sum_assignment` per image) or `"auto"` (lap when importable, else scipy).
        precision: `"float64"` (default) or `"float32"`, the dtype of the host copy and of lap's working
            precision (scipy always works in float64). The costs are float32 GEMM results whose own error
            (~1e-5 at D = 4096) dwarfs float32 solver rounding, and on random 432 x 2048 batches both
            precisions returned identical ids; float32 skips the host conversion, which on a CPU costs more
            than the solve (see `benchmarks/bench_assignment.py`). On adversarial costs spanning many decades a
            float32 solve can exceed the float64 optimum, by about 1e-8 of the total: less than the float32
            rounding of the costs themselves.

    Returns:
        `(B, M)` long pool ids on `costs.device`: distinct within each row `b`, minimising
        `sum_m costs[b, m, ids[b, m]]`. The problem is solved on the CPU; equal-cost optima may be
        broken differently by the two solvers.

    Raises:
        ValueError: `M > N` (no one-to-one assignment exists: the pool must hold at least as many tokens as are
            masked per image), NaN/inf costs, a wrong shape, an unknown solver or precision.
    """
    _check_costs(costs)
    batch, rows, cols = costs.shape
    if rows > cols:
        raise ValueError(
            f"Hungarian assignment is one-to-one, so it needs at least as many pool tokens as masked tokens per "
            f"matching group (an image, or a row with matching_scope='row'); got {rows} masked tokens in a group "
            f"and a pool of {cols}. Enlarge the pool, lower mask_ratio, or use token_matching='nearest'."
        )
    name = _resolve_solver(solver)
    if precision not in _PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {sorted(_PRECISIONS)}")
    if batch == 0 or rows == 0:
        return _empty_ids(batch, rows, costs.device)
    if costs.is_cuda and name == "lap" and precision == "float32" and costs.dtype == torch.float32:
        ids = _solve_from_device(costs.detach().contiguous(), _SOLVERS[name])
    else:
        ids = _SOLVERS[name](_host_costs(costs, precision))
    return torch.from_numpy(ids).to(costs.device)


def nearest_assignment(costs: torch.Tensor) -> torch.LongTensor:
    """Nearest pool token for each row (many-to-one), computed on `costs.device` without a host sync.

    Args:
        costs: `(B, M, N)` with `N >= 1` when `M >= 1`.

    Returns:
        `(B, M)` long ids, `costs.argmin(-1)`. Unlike `hungarian_assignment`, NaN costs are not checked here
        (that would force a device sync); torch's argmin then points at a NaN entry.
    """
    _check_costs(costs)
    batch, rows, cols = costs.shape
    if batch == 0 or rows == 0:
        return _empty_ids(batch, rows, costs.device)
    if cols == 0:
        raise ValueError("nearest assignment needs a non-empty pool (N >= 1)")
    return costs.detach().argmin(dim=-1)


# Assignment rule name (`CrocConfig.token_matching`) -> `(B, M, N)` costs to `(B, M)` pool ids.
# The model solves in float32: the costs are float32 GEMM results already, float32 solves gave scipy's optimum on
# every benchmarked 432 x 2048 batch, and the float64 host conversion alone costs more than the solve on a CPU.
ASSIGNMENT_METHODS: dict[str, Callable[[torch.Tensor], torch.LongTensor]] = {
    "hungarian": partial(hungarian_assignment, precision="float32"),
    "nearest": nearest_assignment,
}


def assign_pool_tokens(
    queries: torch.Tensor, pool: torch.Tensor, method: str, valid: torch.BoolTensor | None = None
) -> torch.LongTensor:
    """Pool token ids for the masked visual tokens of every matching group (an image, or a batch row).

    Args:
        queries: `(G, M, D)` masked visual tokens of G groups, padded to the largest group's M.
        pool: `(N, D)` prompt pool on the same device.
        method: a key of `ASSIGNMENT_METHODS` (`"hungarian"` or `"nearest"`).
        valid: `(G, M)` bool, False on padded query rows (None: every row is real).

    Returns:
        `(G, M)` long ids on `queries.device`, -1 on padded rows, with no autograd history (no gradient through
        the choice).

    Padding and the Hungarian optimum: a padded row costs 0 against every pool token. Any one-to-one assignment then
    costs (sum over the real rows) + 0, and since N >= M, whatever distinct columns the real rows take, enough
    columns remain for the padded rows. So the real rows' part of an optimum is an optimum of the unpadded problem,
    and the groups of a batch, padded to one shape, are still solved in one batched call.
    """
    try:
        assign = ASSIGNMENT_METHODS[method]
    except KeyError:
        raise ValueError(
            f"unknown assignment method {method!r}; expected one of {sorted(ASSIGNMENT_METHODS)}"
        ) from None
    with torch.no_grad():
        with croc_region("costs"):
            costs = pairwise_l2_costs(queries, pool)
            if valid is not None:
                costs = costs.masked_fill(~valid.unsqueeze(-1), 0.0)
        with croc_region("assignment"):
            ids = assign(costs)
        return ids if valid is None else ids.masked_fill(~valid, -1)
