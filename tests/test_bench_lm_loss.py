"""`benchmarks/bench_lm_loss.py` at a tiny shape on the CPU (the 152K vocabulary kept): both variants measured and
written, the agreement check failing loudly on a wrong fused kernel, and the GPU goal read from its JSON."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from benchmarks import bench_lm_loss, gpu_goals

# A chunk's logits of 37 MiB: above glibc's largest mmap threshold (32 MiB), each is mapped afresh and the CPU peak
# is steady; smaller ones are recycled from the heap and the fused peak moves by tens of MiB from run to run.
TINY = bench_lm_loss.Settings(device="cpu", hidden_size=16, tokens=256, dtype="float32", reps=1, warmup=0,
                              chunk_tokens=64, threads=1)
# Where no memory is compared: smaller, faster.
SMALLER = dataclasses.replace(TINY, tokens=64, chunk_tokens=16)


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("lm_loss") / "lm_loss.json"
    bench_lm_loss.run(TINY, out)
    return json.loads(out.read_text(encoding="utf-8"))


def test_both_variants_measured_and_in_agreement(tiny_result: dict[str, Any]) -> None:
    rows = {row["variant"]: row for row in tiny_result["rows"]}
    assert set(rows) == {"unfused", "fused"}
    assert tiny_result["fused_kernel"] == "chunked stand-in (64 tokens per chunk)"  # no Liger on the CPU
    assert tiny_result["logits_mib"] == 256 * 151_936 * 4 / 2**20
    for row in rows.values():
        assert row["ms per call (fwd+bwd)"] > 0 and row["peak above inputs (MiB)"] > 0
    assert rows["fused"]["loss"] == pytest.approx(rows["unfused"]["loss"], rel=1e-5)
    # The unfused path holds the logits, their log-softmax and their gradient: the fused one saves more than them.
    saved = rows["unfused"]["peak above inputs (MiB)"] - rows["fused"]["peak above inputs (MiB)"]
    assert rows["fused"]["peak saved (MiB)"] == saved and saved >= tiny_result["logits_mib"]
    agreement = tiny_result["tables"][0]["rows"]
    assert [row["quantity"] for row in agreement] == ["loss", "grad wrt hidden states", "grad wrt lm_head weight"]
    assert tiny_result["agree"] and all(row["within"] and row["max |unfused|"] > 0 for row in agreement)


def _shifted_targets(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                     ignore_index: int) -> torch.Tensor:
    # An off-by-one in the label shift: each position scored against its neighbour's target.
    return F.cross_entropy((hidden @ weight.T).float(), targets.roll(1), ignore_index=ignore_index, reduction="sum")


def _weight_not_trained(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                        ignore_index: int) -> torch.Tensor:
    # The right loss with no gradient reaching the LM head (weight cut from the graph, kept in it at zero).
    frozen = weight.detach() + 0 * weight
    return F.cross_entropy((hidden @ frozen.T).float(), targets, ignore_index=ignore_index, reduction="sum")


def test_wrong_loss_fails_loudly_and_is_recorded(tmp_path: Path) -> None:
    out = tmp_path / "lm_loss.json"
    with pytest.raises(bench_lm_loss.LossMismatchError, match="^fused LM loss disagrees.*loss: max diff"):
        bench_lm_loss.run(SMALLER, out, fused_kernel=_shifted_targets)
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written["fused_kernel"] == "_shifted_targets" and written["agree"] is False


def test_wrong_gradient_alone_fails(tmp_path: Path) -> None:
    with pytest.raises(bench_lm_loss.LossMismatchError) as raised:
        bench_lm_loss.run(SMALLER, tmp_path / "lm_loss.json", fused_kernel=_weight_not_trained)
    assert "grad wrt lm_head weight" in str(raised.value)
    assert "loss:" not in str(raised.value) and "grad wrt hidden states" not in str(raised.value)


def test_cuda_defaults_are_the_goals_shape() -> None:
    parser = bench_lm_loss.build_parser()
    cuda = bench_lm_loss.settings_from_args(parser.parse_args(["--device", "cuda"]))
    assert (cuda.hidden_size, cuda.tokens, cuda.dtype, cuda.vocab_size) == (3584, 8192, "bfloat16", 151_936)
    cpu = bench_lm_loss.settings_from_args(parser.parse_args(["--tokens", "32"]))
    assert (cpu.tokens, cpu.dtype, cpu.threads) == (32, "float32", 1)


# ---- the GPU goal, read from JSON the benchmark wrote (moved to CUDA by hand) ----


def _gpu_result(tiny_result: dict[str, Any], unfused: float | None, fused: float | None,
                **fields: Any) -> dict[str, Any]:
    data = copy.deepcopy(tiny_result)
    data.update({"device": "cuda", "cuda_device": "test GPU", "fused_kernel": "liger", "logits_mib": 2374.0,
                 **fields})
    for row, peak in zip(data["rows"], (unfused, fused), strict=True):
        row["peak above inputs (MiB)"] = peak
    return data


def _read(folder: Path, data: dict[str, Any] | None) -> gpu_goals.Reading:
    folder.mkdir(parents=True, exist_ok=True)
    if data is not None:
        (folder / gpu_goals.LM_LOSS_FILE).write_text(json.dumps(data), encoding="utf-8")
    return gpu_goals.read_fused_loss(folder)


def test_fused_loss_goal_met_when_the_logits_are_saved(tiny_result: dict[str, Any], tmp_path: Path) -> None:
    # Exactly the logits' size saved is enough.
    assert _read(tmp_path, _gpu_result(tiny_result, 9000.0, 6626.0)) == (
        "fused 6,626 vs unfused 9,000 MiB: saves 2,374 MiB, logits 2,374 MiB", True)
    rows = gpu_goals.goal_rows(tmp_path)
    assert rows[[goal.name for goal in gpu_goals.GOALS].index("fused LM loss")]["verdict"] == "met"


@pytest.mark.parametrize("fields, peaks, text", [
    ({}, (9000.0, 6627.0), "fused 6,627 vs unfused 9,000 MiB: saves 2,373 MiB, logits 2,374 MiB"),
    ({"agree": False}, (9000.0, 1000.0),
     "fused 1,000 vs unfused 9,000 MiB: saves 8,000 MiB, logits 2,374 MiB; fused loss or gradients differ from "
     "unfused"),
])
def test_fused_loss_goal_missed(tiny_result: dict[str, Any], tmp_path: Path, fields: dict[str, Any],
                                peaks: tuple[float, float], text: str) -> None:
    assert _read(tmp_path, _gpu_result(tiny_result, *peaks, **fields)) == (text, False)


@pytest.mark.parametrize("change, text", [
    (None, "not measured"),  # no GPU run
    ({"device": "cpu"}, "not measured"),  # `python -m benchmarks lm_loss` on the CPU: the stand-in, no GPU
    ({"fused_kernel": "chunked stand-in (256 tokens per chunk)"},
     "not measured: the fused loss ran chunked stand-in (256 tokens per chunk), not Liger's kernel"),
    ({"peaks": (9000.0, None)}, "not measured"),  # the fused variant's memory probe failed
])
def test_fused_loss_goal_not_measured(tiny_result: dict[str, Any], tmp_path: Path, change: dict[str, Any] | None,
                                      text: str) -> None:
    if change is None:
        data = None
    else:
        fields = dict(change)
        data = _gpu_result(tiny_result, *fields.pop("peaks", (9000.0, 1000.0)), **fields)
    assert _read(tmp_path, data) == (text, None)
