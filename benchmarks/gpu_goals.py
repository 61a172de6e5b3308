"""The goals of issue 21 (GPU stage 1.5) as code: each goal's target, its value before (the 2026-11-29 H200 run) and
how its measured value is read from the JSON the GPU steps write, rendered as the table RESULTS-gpu.md opens with.
Verdicts are computed, never written by hand: met when every part of a goal meets its target, missed when any
measured part misses it, unmeasured while a part is missing. `benchmarks.gpu_check` runs the steps and writes
the file; `python -m benchmarks.gpu_check --goals-only` rewrites only this section.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.rendering import markdown_table

# The JSON files the GPU steps write, by name inside the results folder (`benchmarks.gpu_check.plan`).
ASSIGNMENT_FILE = "assignment_cuda.json"
ATTENTION_FILE = "attention_cuda.json"
STEP_FILE = "step_cuda.json"
STEP_SPLIT_FILE = "step_split_cuda.json"
PACKING_FILE = "packing_cuda.json"
LM_LOSS_FILE = "lm_loss_cuda.json"

GOALS_HEADING = "## Goals (issue 21)"
NOT_MEASURED = "not measured"
VERDICTS = {True: "met", False: "missed", None: "unmeasured"}
# Written under the table by `--goals-only` while nothing is measured: why, and what would measure it.
NO_GPU_NOTE = (
    "The croc_split backend, the Hungarian changes and the fused loss landed after the last GPU run (2026-11-29); "
    "no GPU was lent to the session that landed them (2026-12-05), so every goal is unmeasured until "
    "`bash benchmarks/gpu_check.sh` runs on a GPU (every environment it builds has liger-kernel, which the fused-loss "
    "goal needs: `requirements/gpu.txt`; a machine with no package index installs from `make gpu-wheels`)."
)
SPLIT = "croc_split"
ATTENTION_LENGTHS = (2048, 4096, 8192)
PRESETS = ("paper", "official")
PACKING_STAGES = ("1.5", "2")
STAGE_ESTIMATE = "stage estimate (weighted by real tokens)"
# A value exactly at its target meets it, whatever the last bit of a float ratio says.
TOLERANCE = 1e-9

Reading = tuple[str, bool | None]


@dataclass(frozen=True)
class Goal:
    """One goal of issue 21: what is measured, the 2026-11-29 H200 value, the target, which step files hold the
    measurement and how it is read from them (`read(results_dir) -> (measured text, met)`, met None when the
    files or rows are missing)."""

    name: str  # short, for the list of sources under the table
    measure: str
    before: str
    target: str
    files: tuple[str, ...]
    source: str
    read: Callable[[Path], Reading]


def _load(results_dir: Path, name: str) -> dict[str, Any] | None:
    """A step's JSON, or None when the step did not run or left something unreadable: its goals are then
    unmeasured, never failed on a file nobody wrote."""
    try:
        data = json.loads((results_dir / name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _rows(data: dict[str, Any] | None, key: str = "rows") -> list[dict[str, Any]]:
    rows = (data or {}).get(key)
    return [row for row in rows if isinstance(row, dict)] if isinstance(rows, list) else []


def _number(value: Any) -> float | None:
    # A failed measurement is written as null (or NaN): it measures nothing.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return float(value)


def _judge(values: Sequence[float | None], target: float) -> bool | None:
    """Met when every part meets the target; one measured part over it misses the goal already; otherwise a
    missing part leaves it open."""
    if any(value is not None and value > target + TOLERANCE for value in values):
        return False
    return None if any(value is None for value in values) else True


def _reading(values: Sequence[float | None], target: float, text: str) -> Reading:
    if all(value is None for value in values):
        return NOT_MEASURED, None
    return text, _judge(values, target)


def _cells(values: Sequence[float | None], fmt: str) -> str:
    return " / ".join("—" if value is None else format(value, fmt) for value in values)


def read_attention(results_dir: Path) -> Reading:
    """croc_split's mixed pattern over sdpa's is_causal (FlashAttention) step at 2K / 4K / 8K."""
    ratios = {row.get("tokens"): _number(row.get("ratio_vs_sdpa_is_causal"))
              for row in _rows(_load(results_dir, ATTENTION_FILE)) if row.get("backend") == SPLIT}
    values = [ratios.get(length) for length in ATTENTION_LENGTHS]
    return _reading(values, 1.05, f"{_cells(values, '.2f')}× ({SPLIT})")


def _step_rows(results_dir: Path) -> dict[str, dict[str, Any]]:
    return {row.get("preset"): row for row in _rows(_load(results_dir, STEP_SPLIT_FILE))}


def read_step_overhead(results_dir: Path) -> Reading:
    """The `step, croc_split` run's stage-1.5 / stage-2 step time, both presets."""
    rows = _step_rows(results_dir)
    values = [_number(rows.get(preset, {}).get("overhead ratio")) for preset in PRESETS]
    return _reading(values, 1.03, f"{_cells(values, '.2f')}× (paper / official, {SPLIT})")


def read_step_memory(results_dir: Path) -> Reading:
    """The `step, croc_split` run's stage-1.5 peak over stage 2's, both presets, as a rise."""
    rows = _step_rows(results_dir)
    values = []
    for preset in PRESETS:
        row = rows.get(preset, {})
        peak_15, peak_2 = _number(row.get("peak 1.5 (MiB)")), _number(row.get("peak 2 (MiB)"))
        values.append(peak_15 / peak_2 - 1 if peak_15 is not None and peak_2 else None)
    return _reading(values, 0.03, f"{_cells(values, '+.1%')} (paper / official, {SPLIT})")


def read_hungarian(results_dir: Path) -> Reading:
    """The Hungarian path (costs + `hungarian_assignment`) per image at 432 x 2048 x 4096 in a batch of 16, and
    whether its optimum was scipy's; a fast path with another optimum misses the goal."""
    row = next((row for row in _rows(_load(results_dir, ASSIGNMENT_FILE), "results")
                if (row.get("M"), row.get("N"), row.get("D"), row.get("batch")) == (432, 2048, 4096, 16)), None)
    path_ms = _number((row or {}).get("path_ms"))
    if path_ms is None:
        return NOT_MEASURED, None
    same = bool(row.get("costs_equal")) and bool(row.get("one_to_one"))
    text = f"{path_ms:.2f} ms, optimum {'= scipy' if same else 'differs from scipy'}"
    return text, path_ms <= 0.5 + TOLERANCE and same


def read_packing(results_dir: Path) -> Reading:
    """Per stage, the packed layout with the least time per real token against padded (the stage estimate, the
    modalities weighted by their real tokens): the budget and backend are a choice of the stage's config."""
    data = _load(results_dir, PACKING_FILE)
    best: dict[str, tuple[float, str]] = {}
    for table in [data or {}, *_rows(data, "tables")]:
        for row in _rows(table):
            ratio = _number(row.get("time vs padded"))
            stage, layout = row.get("stage"), row.get("layout")
            if (row.get("micro-batch") != STAGE_ESTIMATE or stage not in PACKING_STAGES or layout == "padded"
                    or ratio is None):
                continue
            if stage not in best or ratio < best[stage][0]:
                best[stage] = (ratio, str(layout))
    values = [best[stage][0] if stage in best else None for stage in PACKING_STAGES]
    text = ", ".join(f"stage {stage} " + (f"{best[stage][0]:.2f}× ({best[stage][1]})" if stage in best else "—")
                     for stage in PACKING_STAGES)
    return _reading(values, 0.85, text)


def read_fused_loss(results_dir: Path) -> Reading:
    """`bench_lm_loss --device cuda`: met when the fused loss's peak is below the unfused one's by at least the
    logits' size (tokens x vocabulary x bytes of the dtype), both computing the same loss and gradients. Only a
    CUDA run of the project's own fused path (Liger's kernel) counts: a CPU result, or the benchmark's chunked
    stand-in where Liger was not installed, measures something else and leaves the goal open."""
    data = _load(results_dir, LM_LOSS_FILE)
    if data is None or data.get("device") != "cuda":
        return NOT_MEASURED, None
    if data.get("fused_kernel") != "liger":
        return f"{NOT_MEASURED}: the fused loss ran {data.get('fused_kernel')}, not Liger's kernel", None
    peaks = {row.get("variant"): _number(row.get("peak above inputs (MiB)")) for row in _rows(data)}
    unfused, fused, logits = peaks.get("unfused"), peaks.get("fused"), _number(data.get("logits_mib"))
    if unfused is None or fused is None or logits is None:
        return NOT_MEASURED, None
    text = (f"fused {fused:,.0f} vs unfused {unfused:,.0f} MiB: saves {unfused - fused:,.0f} MiB, logits "
            f"{logits:,.0f} MiB")
    if data.get("agree") is not True:
        return text + "; fused loss or gradients differ from unfused", False
    return text, unfused - fused >= logits - TOLERANCE


GOALS: tuple[Goal, ...] = (
    Goal("mixed attention",
         "mixed attention fwd+bwd vs FlashAttention causal (sdpa is_causal), 2K / 4K / 8K, one 576-token image",
         "1.12 / 1.36 / 1.65× (sdpa mixed mask)", "≤ 1.05× at each (croc_split)", (ATTENTION_FILE,),
         f"`results/{ATTENTION_FILE}`: `ratio_vs_sdpa_is_causal` of the `{SPLIT}` rows (its mixed step over the "
         "sdpa row's default causal step, same run) at 2048, 4096 and 8192 tokens",
         read_attention),
    Goal("step overhead", "stage-1.5 step / stage-2 step, 1B shape, paper and official presets",
         "1.13×", "≤ 1.03×", (STEP_SPLIT_FILE,),
         f"`results/{STEP_SPLIT_FILE}` (the `step, croc_split` step: {SPLIT} in both stages): `overhead ratio` of "
         "the paper and official rows; the sdpa run is the `step` table below",
         read_step_overhead),
    Goal("Hungarian path", "Hungarian path, 432×2048×4096, batch 16, per image",
         "6.1 ms", "≤ 0.5 ms, same optimum as scipy", (ASSIGNMENT_FILE,),
         f"`results/{ASSIGNMENT_FILE}`: `path_ms` of the M 432, N 2048, D 4096, batch 16 row, with `costs_equal` "
         "and `one_to_one` (lap's optimum is scipy's)",
         read_hungarian),
    Goal("packing", "packed vs padded, time per real token, stages 1.5 and 2",
         "not run", "≤ 0.85×", (PACKING_FILE,),
         f"`results/{PACKING_FILE}`: `time vs padded` of the stage-estimate rows of stages 1.5 and 2, the packed "
         "layout with the least time per stage",
         read_packing),
    Goal("peak memory", "peak memory, stage-1.5 vs stage-2 step",
         "+3%", "≤ +3%", (STEP_SPLIT_FILE,),
         f"`results/{STEP_SPLIT_FILE}`: `peak 1.5 (MiB)` / `peak 2 (MiB)` - 1 of the paper and official rows",
         read_step_memory),
    Goal("fused LM loss",
         "152K vocabulary: fused (Liger / fused_lm_loss) vs unfused LM loss peak memory, fwd+bwd, hidden 3584, "
         "8192 tokens, bf16",
         "not measured",
         "fused saves the logits: unfused peak − fused peak ≥ the logits' size (tokens × 151,936 × 2 B), same loss "
         "and gradients", (LM_LOSS_FILE,),
         f"`results/{LM_LOSS_FILE}` (`bench_lm_loss --device cuda`): `peak above inputs (MiB)` of the unfused and "
         "fused rows against `logits_mib`; counted only when the fused row ran Liger's kernel (`fused_kernel` "
         "`liger`, the project's path) and `agree` is true (loss and both gradients within the bf16 tolerance)",
         read_fused_loss),
)


def goal_rows(results_dir: Path, stale: Collection[str] = ()) -> list[dict[str, str]]:
    """The goals table's rows, each measured value read from `results_dir`; a value read from a file in `stale`
    (left by an earlier call of a `--steps` rerun) says so."""
    rows = []
    for goal in GOALS:
        measured, met = goal.read(results_dir)
        if met is not None and any(name in stale for name in goal.files):
            measured += " (stale: an earlier call's result)"
        rows.append({"measure": goal.measure, "before (H200, 2026-11-29)": goal.before, "target": goal.target,
                     "measured": measured, "verdict": VERDICTS[met]})
    return rows


def render_goals(results_dir: Path, stale: Collection[str] = (), note: str | None = None) -> str:
    """The goals section of RESULTS-gpu.md, from the heading to its last line (newline-terminated)."""
    parts = [
        f"{GOALS_HEADING}\n",
        "The GPU goals of issue 21 (`benchmarks.gpu_goals.GOALS`), each measured value read from the steps' JSON "
        "results, whose tables follow: met when every part of a goal meets its target, missed when any measured "
        "part misses it, unmeasured while a part is missing (the step did not run, or ran before what it measures "
        "existed).\n",
        markdown_table(goal_rows(results_dir, stale)),
    ]
    if note:
        parts.append(note + "\n")
    parts.append("Where each value is read:\n\n"
                 + "\n".join(f"- {goal.name}: {goal.source}." for goal in GOALS) + "\n")
    return "\n".join(parts)


def goals_only_section(results_dir: Path) -> str:
    """What `--goals-only` writes: the goals from whatever results exist, and why when none is measured."""
    nothing = all(row["verdict"] == VERDICTS[None] for row in goal_rows(results_dir))
    return render_goals(results_dir, note=NO_GPU_NOTE if nothing else None)


def with_goals_section(text: str, section: str) -> str:
    """`text` (a RESULTS-gpu.md) with its goals section replaced by `section`, or `section` inserted before
    "## Machine" when it has none; every other byte stays as it was."""
    lines = text.splitlines(keepends=True)
    starts = [index for index, line in enumerate(lines) if line.rstrip("\n") == GOALS_HEADING]
    if starts:
        start = starts[0]
        end = next((index for index in range(start + 1, len(lines)) if lines[index].startswith("## ")), len(lines))
        tail = "".join(lines[end:])
        return "".join(lines[:start]) + section + ("\n" if tail else "") + tail
    machine = next((index for index, line in enumerate(lines) if line.rstrip("\n") == "## Machine"), None)
    if machine is None:
        raise ValueError("not a RESULTS-gpu.md: no '## Machine' section to put the goals before")
    return "".join(lines[:machine]) + section + "\n" + "".join(lines[machine:])


def goals_section_of(text: str) -> str | None:
    """The goals section of a RESULTS-gpu.md as `render_goals` writes it, or None when it has none."""
    lines = text.splitlines(keepends=True)
    start = next((index for index, line in enumerate(lines) if line.rstrip("\n") == GOALS_HEADING), None)
    if start is None:
        return None
    end = next((index for index in range(start + 1, len(lines)) if lines[index].startswith("## ")), len(lines))
    section = "".join(lines[start:end])
    # The blank line before the next heading separates sections; it is not part of this one.
    return section[:-1] if end < len(lines) and section.endswith("\n\n") else section
