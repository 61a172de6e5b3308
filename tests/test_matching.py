"""Tests of `modeling_croc.matching`: Hungarian optimality against scipy, nearest = argmin, L2 costs, edge cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from modeling_croc.matching import (
    ASSIGNMENT_METHODS,
    assign_pool_tokens,
    hungarian_assignment,
    nearest_assignment,
    pairwise_l2_costs,
)

try:
    import lap  # noqa: F401

    HAVE_LAP = True
except ImportError:  # pragma: no cover
    HAVE_LAP = False

SOLVERS = ["scipy", "auto"] + (["lap"] if HAVE_LAP else [])
# (B, M, N): square, rectangular, a single row, and the paper's 432 x 2048 once.
SHAPES = [(3, 7, 7), (4, 5, 9), (2, 1, 6), (5, 32, 48), (2, 64, 64), (1, 432, 2048)]


def _random_costs(shape: tuple[int, int, int], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator, dtype=torch.float64)


def _total(costs: torch.Tensor, ids: torch.Tensor) -> np.ndarray:
    """`(B,)` summed cost of an assignment, in float64."""
    return costs.double().gather(-1, ids.unsqueeze(-1)).squeeze(-1).sum(-1).numpy()


def _scipy_total(costs: torch.Tensor) -> np.ndarray:
    values = costs.double().numpy()
    totals = []
    for matrix in values:
        rows, cols = linear_sum_assignment(matrix)
        totals.append(matrix[rows, cols].sum())
    return np.array(totals)


def _assert_one_to_one(ids: torch.Tensor, num_cols: int) -> None:
    assert ids.dtype == torch.long
    assert int(ids.min()) >= 0 and int(ids.max()) < num_cols
    for row in ids:
        assert row.unique().numel() == row.numel(), "pool ids repeat within one image"


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_hungarian_one_to_one_and_optimal(shape, solver):
    costs = _random_costs(shape, seed=sum(shape))
    ids = hungarian_assignment(costs, solver=solver)
    assert ids.shape == shape[:2]
    _assert_one_to_one(ids, shape[2])
    np.testing.assert_allclose(_total(costs, ids), _scipy_total(costs), rtol=1e-6, atol=0)


def test_hungarian_brute_force_tiny():
    """Optimal against every injective assignment on a 3 x 5 problem (60 of them)."""
    costs = _random_costs((2, 3, 5), seed=1)
    ids = hungarian_assignment(costs)
    for b in range(2):
        best = min(
            sum(float(costs[b, m, n]) for m, n in enumerate(perm))
            for perm in itertools.permutations(range(5), 3)
        )
        assert _total(costs[b : b + 1], ids[b : b + 1])[0] == pytest.approx(best, rel=1e-12)


@pytest.mark.skipif(not HAVE_LAP, reason="lapx not installed")
@pytest.mark.parametrize("shape", [(4, 40, 40), (8, 30, 100)])
def test_lap_and_scipy_agree(shape):
    costs = _random_costs(shape, seed=7).float()  # float32 input: both paths solve in float64
    lap_ids = hungarian_assignment(costs, solver="lap")
    scipy_ids = hungarian_assignment(costs, solver="scipy")
    _assert_one_to_one(lap_ids, shape[2])
    np.testing.assert_allclose(_total(costs, lap_ids), _total(costs, scipy_ids), rtol=1e-9, atol=0)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("shape", [(3, 40, 40), (2, 432, 2048)], ids=lambda s: "x".join(map(str, s)))
def test_hungarian_float32_precision_is_optimal(shape, solver):
    costs = _random_costs(shape, seed=11).float()
    ids = hungarian_assignment(costs, solver=solver, precision="float32")
    _assert_one_to_one(ids, shape[2])
    np.testing.assert_allclose(_total(costs, ids), _scipy_total(costs), rtol=1e-6, atol=0)


def test_hungarian_huge_finite_costs_are_accepted():
    """The cheap finiteness check (one sum) must not refuse finite costs whose sum overflows."""
    costs = torch.full((1, 3, 4), 1e308, dtype=torch.float64)
    costs[0, torch.arange(3), torch.tensor([2, 0, 3])] = 1e307
    assert hungarian_assignment(costs).tolist() == [[2, 0, 3]]


def test_hungarian_integer_costs_and_device():
    costs = torch.randint(0, 100, (3, 6, 10))
    ids = hungarian_assignment(costs)
    assert ids.device == costs.device
    _assert_one_to_one(ids, 10)
    np.testing.assert_allclose(_total(costs, ids), _scipy_total(costs), rtol=1e-12)


def test_nearest_is_argmin():
    costs = _random_costs((4, 20, 30), seed=3).float()
    ids = nearest_assignment(costs)
    assert ids.dtype == torch.long and ids.shape == (4, 20)
    assert torch.equal(ids, costs.argmin(-1))
    tiny = _random_costs((2, 3, 4), seed=4)
    tiny_ids = nearest_assignment(tiny)
    for b, m in itertools.product(range(2), range(3)):
        best = min(range(4), key=lambda n, b=b, m=m: float(tiny[b, m, n]))
        assert int(tiny_ids[b, m]) == best


def test_nearest_may_repeat_ids():
    costs = torch.tensor([[[0.0, 5.0, 9.0], [1.0, 5.0, 9.0]]])
    assert nearest_assignment(costs).tolist() == [[0, 0]]
    assert sorted(hungarian_assignment(costs)[0].tolist()) == [0, 1]


@pytest.mark.parametrize("width", [1, 16, 300])
def test_pairwise_l2_costs_matches_direct(width):
    generator = torch.Generator().manual_seed(width)
    queries = (
        torch.randn(3, 11, width, generator=generator) * 2 + 5
    )  # a common offset, as projector outputs have
    pool = torch.randn(37, width, generator=generator) + 5
    costs = pairwise_l2_costs(queries, pool)
    direct = torch.linalg.vector_norm(queries[:, :, None] - pool[None, None], dim=-1)
    assert costs.dtype == torch.float32 and costs.shape == (3, 11, 37)
    torch.testing.assert_close(costs, direct, rtol=1e-5, atol=1e-5)
    assert bool((costs >= 0).all())


def test_pairwise_l2_costs_low_precision_inputs():
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(2, 9, 64, generator=generator).bfloat16()
    pool = torch.randn(50, 64, generator=generator)
    costs = pairwise_l2_costs(queries, pool)
    direct = torch.linalg.vector_norm(queries.float()[:, :, None] - pool[None, None], dim=-1)
    assert costs.dtype == torch.float32
    torch.testing.assert_close(costs, direct, rtol=1e-5, atol=1e-5)


def test_pairwise_l2_costs_coincident_points():
    pool = torch.randn(10, 32, generator=torch.Generator().manual_seed(0))
    costs = pairwise_l2_costs(pool[None, :4].clone(), pool)
    assert torch.equal(costs[0].argmin(-1), torch.arange(4))
    # The GEMM form leaves sqrt(rounding of |q|^2 + |p|^2 - 2 q.p) ~ sqrt(eps * |x|^2) ~ 2e-3 instead of 0 (as
    # torch.cdist does); never NaN, and far below the distance to any other token.
    diagonal = costs[0, torch.arange(4), torch.arange(4)]
    assert bool(torch.isfinite(costs).all()) and float(diagonal.max()) < 2e-2


@pytest.mark.parametrize("method", sorted(ASSIGNMENT_METHODS))
def test_assign_pool_tokens_no_grad(method):
    queries = torch.randn(2, 8, 16, requires_grad=True)
    pool = torch.nn.Parameter(torch.randn(24, 16))
    ids = assign_pool_tokens(queries, pool, method)
    assert ids.grad_fn is None and not ids.requires_grad
    assert ids.dtype == torch.long and ids.shape == (2, 8) and ids.device == queries.device
    expected = ASSIGNMENT_METHODS[method](
        torch.linalg.vector_norm(queries.detach()[:, :, None] - pool.detach()[None, None], dim=-1)
    )
    assert torch.equal(ids, expected)
    # The chosen pool rows still get gradient through indexing.
    pool[ids.reshape(-1)].sum().backward()
    assert pool.grad is not None and int((pool.grad.abs().sum(-1) > 0).sum()) == ids.unique().numel()
    assert queries.grad is None


def test_assign_pool_tokens_hungarian_is_one_to_one():
    ids = assign_pool_tokens(torch.randn(3, 40, 8), torch.randn(40, 8), "hungarian")
    _assert_one_to_one(ids, 40)


def test_more_rows_than_columns_raises():
    with pytest.raises(ValueError, match="at least as many pool tokens"):
        hungarian_assignment(torch.rand(2, 5, 4))
    with pytest.raises(ValueError, match="at least as many pool tokens"):
        assign_pool_tokens(torch.randn(1, 6, 4), torch.randn(5, 4), "hungarian")
    # Many-to-one nearest has no such limit.
    assert assign_pool_tokens(torch.randn(1, 6, 4), torch.randn(5, 4), "nearest").shape == (1, 6)


def test_unknown_method_and_solver_raise():
    with pytest.raises(ValueError, match="unknown assignment method"):
        assign_pool_tokens(torch.randn(1, 2, 4), torch.randn(3, 4), "sinkhorn")
    with pytest.raises(ValueError, match="unknown Hungarian solver"):
        hungarian_assignment(torch.rand(1, 2, 3), solver="munkres")
    with pytest.raises(ValueError, match="unknown precision"):
        hungarian_assignment(torch.rand(1, 2, 3), precision="float16")


@pytest.mark.parametrize("method", sorted(ASSIGNMENT_METHODS))
@pytest.mark.parametrize("batch,rows", [(0, 5), (3, 0), (0, 0)])
def test_empty_inputs(method, batch, rows):
    ids = assign_pool_tokens(torch.randn(batch, rows, 8), torch.randn(10, 8), method)
    assert ids.shape == (batch, rows) and ids.dtype == torch.long
    costs = pairwise_l2_costs(torch.randn(batch, rows, 8), torch.randn(10, 8))
    assert costs.shape == (batch, rows, 10)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_costs_raise(solver, bad):
    costs = torch.rand(2, 3, 5)
    costs[1, 2, 4] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        hungarian_assignment(costs, solver=solver)


def test_non_finite_queries_raise():
    queries = torch.randn(1, 3, 4)
    queries[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        assign_pool_tokens(queries, torch.randn(5, 4), "hungarian")


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        hungarian_assignment(torch.rand(3, 4))
    with pytest.raises(ValueError):
        pairwise_l2_costs(torch.randn(2, 3, 4), torch.randn(5, 6))
    with pytest.raises(ValueError):
        pairwise_l2_costs(torch.randn(3, 4), torch.randn(5, 4))


@pytest.mark.skipif(not (torch.cuda.is_available() and HAVE_LAP), reason="the pinned, overlapped path runs from CUDA")
def test_hungarian_from_cuda_costs_is_optimal_and_refuses_nan_on_cuda():
    """The GPU path (pinned buffer, chunked copies overlapping the solves): every image of a batch that spans several
    chunks gets scipy's optimum; a NaN is found on the device."""
    costs = _random_costs((9, 432, 2048), seed=5).float()
    ids = hungarian_assignment(costs.cuda(), precision="float32")
    assert ids.is_cuda
    _assert_one_to_one(ids.cpu(), 2048)
    np.testing.assert_allclose(_total(costs, ids.cpu()), _scipy_total(costs), rtol=1e-6, atol=0)
    costs[4, 3, 7] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        hungarian_assignment(costs.cuda(), precision="float32")


@pytest.mark.skipif(not HAVE_LAP, reason="the overlapped device path solves with lap")
def test_concurrent_device_solves_never_share_the_host_buffer(monkeypatch):
    """Two forwards in two threads (`nn.DataParallel` replicas): while one waits between its chunks (lap releases the
    GIL), the other fills the reused host buffer. Each thread has a buffer of its own, so both get their own optimum.
    CUDA's stream and events are stand-ins here (the buffer logic is the one a GPU runs); pinned memory, plain."""
    import threading

    from modeling_croc import matching

    class ImmediateEvent:
        def record(self, stream) -> None:
            pass

        def synchronize(self) -> None:
            pass

    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "Event", ImmediateEvent)
    monkeypatch.setattr(matching, "_page_locked_floats", lambda numel: torch.empty(numel, dtype=torch.float32))
    monkeypatch.setattr(matching, "_PINNED", matching._PinnedCosts())
    first, second = _random_costs((8, 40, 100), seed=11).float(), _random_costs((8, 40, 100), seed=12).float()
    first_chunk_solved, second_done = threading.Event(), threading.Event()

    def solve_then_yield(host: np.ndarray) -> np.ndarray:
        ids = matching._solve_lap(host)
        if not first_chunk_solved.is_set():  # the second forward runs between this thread's chunks
            first_chunk_solved.set()
            second_done.wait(timeout=30)
        return ids

    results = {}

    def run_first() -> None:
        results["first"] = matching._solve_from_device(first, solve_then_yield)

    def run_second() -> None:
        first_chunk_solved.wait(timeout=30)
        results["second"] = matching._solve_from_device(second, matching._solve_lap)
        second_done.set()

    threads = [threading.Thread(target=run_first), threading.Thread(target=run_second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert matching._OVERLAP_CHUNK < 8  # the batch spans several chunks
    for name, costs in (("first", first), ("second", second)):
        ids = torch.from_numpy(results[name])
        _assert_one_to_one(ids, 100)
        np.testing.assert_allclose(_total(costs, ids), _scipy_total(costs), rtol=1e-6, atol=0, err_msg=name)
