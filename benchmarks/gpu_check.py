"""The GPU check: every GPU-only test and measurement of this project in one call, under a time budget, written to
`benchmarks/RESULTS-gpu.md`. `benchmarks/gpu_check.sh` prepares the Python environment and runs this.

    python -m benchmarks.gpu_check [--budget SECONDS] [--out benchmarks/RESULTS-gpu.md]
    python -m benchmarks.gpu_check --dry-run      # no GPU needed: the plan, and every step's options checked
    python -m benchmarks.gpu_check --steps packing  # rerun some steps; the others' earlier results are kept
    python -m benchmarks.gpu_check --goals-only   # no GPU needed: rewrite only RESULTS-gpu.md's goals table

Steps, in order (each a subprocess with its own time limit, cut to what is left of the budget; a step that fails
or runs out of time is reported and the next one still runs):

1. CUDA tests: the tests that skip without CUDA (flex_attention mixed-mask parity and backward against sdpa; a
   packed batch on flex_attention against the padded batch on sdpa; the `croc_split` varlen kernels against the
   sdpa mask path in bf16, four language models, both spans, padded and packed), by `-k cuda`.
2. Assignment with the cost matrices on the GPU at 432 x 2048 x D 4096 (`bench_assignment --device cuda`).
3. Attention: flex_attention and croc_split with the mixed pattern against sdpa's `is_causal` path (FlashAttention
   kernel in bf16) at 2K / 4K / 8K tokens on the TinyLlama-1.1B shape (`bench_attention --device cuda`).
4. A stage-1.5 step against a stage-2 step on the 1B-class Croc model in bf16, time and peak memory
   (`bench_step --device cuda --model 1b`), on sdpa and on croc_split.
5. Packed against padded on the 1B-class model in bf16 (`bench_packing --device cuda`).

The budget defaults to 500 s of steps so that the whole call, environment check included, stays within 9 minutes
on one H200-class GPU; the per-step limits below were sized for that GPU; the croc_split steps have not run on one
yet.

RESULTS-gpu.md opens with the goals of issue 21 (`GOALS`): each goal's measured value is read from the steps' JSON
results, so the verdicts (met / missed / unmeasured) cannot disagree with the tables below them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.__main__ import RESULTS_DIR, Run, help_text, machine_info, render_results_md
from benchmarks.rendering import markdown_table

REPO = Path(__file__).resolve().parents[1]
RESULTS_GPU_MD = Path(__file__).resolve().parent / "RESULTS-gpu.md"
DEFAULT_BUDGET_S = 500
TESTS_JSON = RESULTS_DIR / "gpu_tests_cuda.json"


@dataclass(frozen=True)
class Step:
    """One GPU step: a `python -m` module with its arguments, a time limit, and the JSON it writes."""

    label: str
    module: str
    args: tuple[str, ...]
    limit_s: int
    json_path: Path


# The JSON files the steps write, by name inside the results folder: the goals below read the same names.
TESTS_FILE = TESTS_JSON.name
ASSIGNMENT_FILE = "assignment_cuda.json"
ATTENTION_FILE = "attention_cuda.json"
STEP_FILE = "step_cuda.json"
STEP_SPLIT_FILE = "step_split_cuda.json"
PACKING_FILE = "packing_cuda.json"


def plan(results_dir: Path = RESULTS_DIR) -> list[Step]:
    """The steps, writing their JSON under `results_dir` (a parameter so that tests never touch the real one)."""
    junit = results_dir / "gpu_tests_cuda.xml"
    return [
        Step("CUDA tests (cuda)", "pytest",
             ("-q", "-p", "no:cacheprovider", "-k", "cuda", f"--junitxml={junit}",
              "tests/test_modeling_croc.py", "tests/test_packing.py", "tests/test_split_attention.py",
              "tests/test_matching.py", "tests/test_losses.py"), 100,
             results_dir / TESTS_FILE),
        Step("assignment (cuda)", "benchmarks.bench_assignment",
             ("--device", "cuda", "--quick", "--out", str(results_dir / ASSIGNMENT_FILE)), 40,
             results_dir / ASSIGNMENT_FILE),
        Step("attention (cuda)", "benchmarks.bench_attention",
             ("--device", "cuda", "--lengths", "2048", "4096", "8192", "--backends", "sdpa", "flex_attention",
              "croc_split", "--reps", "5", "--no-mask-building", "--out", str(results_dir / ATTENTION_FILE)),
             130, results_dir / ATTENTION_FILE),
        Step("step (cuda)", "benchmarks.bench_step",
             ("--device", "cuda", "--model", "1b", "--dtype", "bfloat16", "--out",
              str(results_dir / STEP_FILE)), 70, results_dir / STEP_FILE),
        Step("step, croc_split (cuda)", "benchmarks.bench_step",
             ("--device", "cuda", "--model", "1b", "--dtype", "bfloat16", "--attn", "croc_split", "--out",
              str(results_dir / STEP_SPLIT_FILE)), 70, results_dir / STEP_SPLIT_FILE),
        Step("packing (cuda)", "benchmarks.bench_packing",
             ("--device", "cuda", "--quick", "--out", str(results_dir / PACKING_FILE)), 90,
             results_dir / PACKING_FILE),
    ]


def _env() -> dict[str, str]:
    # Offline like the suite; the tests' deprecation guards stay on.
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def run_step(step: Step, limit_s: float, python: str) -> str:
    """Run one step; its one-line status. The tests' outcome is turned into a JSON table next to the others."""
    command = [python, "-m", step.module, *step.args]
    started = time.perf_counter()
    try:
        result = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=limit_s)
    except subprocess.TimeoutExpired as expired:
        tail = (expired.stderr or b"")[-2000:]
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        print(f"{step.label}: timed out after {limit_s:.0f} s\n{tail}", file=sys.stderr)
        return f"timed out after {limit_s:.0f} s (limit of this step within the budget)"
    elapsed = time.perf_counter() - started
    sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
    if step.module == "pytest":
        return _record_tests(step, result, elapsed)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return f"failed (status {result.returncode}) after {elapsed:.0f} s: {last}"
    return f"ok ({elapsed:.0f} s)"


def _record_tests(step: Step, result: subprocess.CompletedProcess, elapsed: float) -> str:
    junit = Path(next(arg.split("=", 1)[1] for arg in step.args if arg.startswith("--junitxml=")))
    rows = []
    if junit.is_file():
        for case in ElementTree.parse(junit).getroot().iter("testcase"):
            outcome = "passed"
            for tag in ("failure", "error", "skipped"):
                element = case.find(tag)
                if element is not None:
                    outcome = f"{tag}: {(element.get('message') or '')[:200]}"
            rows.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                         "seconds": float(case.get("time") or 0)})
    summary = (result.stdout.strip().splitlines() or ["no output"])[-1]
    step.json_path.parent.mkdir(parents=True, exist_ok=True)
    step.json_path.write_text(json.dumps({"title": "CUDA tests", "goal": "all pass on the GPU", "rows": rows,
                                      "notes": [f"pytest: {summary}"]}, indent=2) + "\n", encoding="utf-8")
    passed = rows and all(row["outcome"] == "passed" for row in rows)
    word = "ok" if result.returncode == 0 and passed else "failed"
    return f"{word} ({elapsed:.0f} s): {summary}"


# --------------------------------------------------------------------------------------------------------------
# Goals (issue 21): target, measured, met or missed, read from the steps' JSON
# --------------------------------------------------------------------------------------------------------------

GOALS_HEADING = "## Goals (issue 21)"
NOT_MEASURED = "not measured"
NO_BENCHMARK = "not measured: no benchmark measures it yet"
VERDICTS = {True: "met", False: "missed", None: "unmeasured"}
# Written under the table by `--goals-only` while nothing is measured: why, and what would measure it.
NO_GPU_NOTE = (
    "The croc_split backend, the Hungarian changes and the fused loss landed after the last GPU run (2026-11-29); "
    "no GPU was lent to the session that landed them (2026-12-05), so every goal is unmeasured until "
    "`bash benchmarks/gpu_check.sh` runs on a GPU."
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
    """No benchmark runs the LM loss at a 152K vocabulary, fused or not (bench_step uses LLaVA's 32K vocabulary
    and the unfused loss): the goal stays open until one does, whatever the results folder holds."""
    return NO_BENCHMARK, None


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
    Goal("fused LM loss", "152K vocabulary: fused (Liger / fused_lm_loss) vs unfused LM loss peak memory",
         "not measured", "fused saves the logits", (),
         "no benchmark yet: bench_step runs LLaVA's 32K vocabulary with the unfused loss",
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
        "The GPU goals of issue 21 (`benchmarks.gpu_check.GOALS`), each measured value read from the steps' JSON "
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


def dry_run(steps: Sequence[Step], python: str) -> int:
    """The plan, and what can be checked without a GPU: every option a step passes is one its script lists in
    `--help` (read in this process), and the CUDA tests the first step selects exist (collected by `python`, not
    run). Returns the number of problems found."""
    problems = 0
    total = sum(step.limit_s for step in steps)
    print(f"GPU check plan ({len(steps)} steps, {total} s of step limits):")
    for step in steps:
        print(f"  [{step.limit_s:>3} s] {step.label}: python -m {step.module} {' '.join(step.args)}")
        if step.module == "pytest":
            collected = subprocess.run(
                [python, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                 *[arg for arg in step.args if not arg.startswith("--junitxml") and arg != "-q"]],
                cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
            tests = [line for line in collected.stdout.splitlines() if "::" in line]
            print(f"      selects {len(tests)} test(s): " + ", ".join(t.split("::", 1)[1] for t in tests))
            problems += int(collected.returncode != 0 or not tests)
            continue
        listed = help_text(importlib.import_module(step.module)).split()
        unknown = [arg for arg in step.args if arg.startswith("--") and arg not in listed]
        if unknown:
            print(f"      options not in its --help: {unknown}")
            problems += 1
    print("dry run: " + ("plan consistent" if not problems else f"{problems} problem(s)"))
    return problems


def stale_files(runs: Sequence[Run]) -> set[str]:
    """Names of the result files this call did not write: a step not run in it (`--steps`, or the budget spent)
    or one that failed before writing leaves an earlier call's file, which the goals must not pass off as new."""
    stale = set()
    for run in runs:
        path = run.json_path
        if path.is_file() and (run.fresh_since is None or path.stat().st_mtime < run.fresh_since):
            stale.add(path.name)
    return stale


def write_goals_only(out: Path, results_dir: Path) -> int:
    """`--goals-only`: the goals section of `out` rewritten from the results in `results_dir`, nothing run, so
    that a RESULTS-gpu.md from an earlier run shows the goals as they stand without a GPU."""
    if not out.is_file():
        print(f"--goals-only: {out} does not exist (run the GPU check first)", file=sys.stderr)
        return 2
    text = out.read_text(encoding="utf-8")
    try:
        updated = with_goals_section(text, goals_only_section(results_dir))
    except ValueError as error:
        print(f"--goals-only: {out}: {error}", file=sys.stderr)
        return 2
    out.write_text(updated, encoding="utf-8")
    print(f"wrote the goals of {out}" + (" (unchanged)" if updated == text else ""), file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds for all steps together")
    parser.add_argument("--out", type=Path, default=RESULTS_GPU_MD, help="Markdown output")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and check it; needs no GPU")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the steps (default: this one)")
    parser.add_argument("--steps", nargs="+", metavar="LABEL", default=None,
                        help="run only the steps whose label starts with one of these (e.g. 'packing'); the others "
                             "keep the results an earlier call left in benchmarks/results, marked stale")
    parser.add_argument("--goals-only", action="store_true",
                        help="run nothing: rewrite only the goals table of --out from the JSON results there are "
                             "(needs no GPU; every other byte of the file is kept)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                        help="where the steps write their JSON and the goals read it (default: benchmarks/results)")
    args = parser.parse_args(argv)
    if args.goals_only and (args.dry_run or args.steps):
        parser.error("--goals-only runs nothing: it takes neither --dry-run nor --steps")
    if args.goals_only:
        return write_goals_only(args.out, args.results_dir)
    steps = plan(args.results_dir)
    if args.steps:
        unknown = [name for name in args.steps if not any(step.label.startswith(name) for step in steps)]
        if unknown:
            parser.error(f"--steps: no step starts with {unknown}; steps: {[step.label for step in steps]}")
    if args.dry_run:
        return 1 if dry_run(steps, args.python) else 0

    import torch

    if not torch.cuda.is_available():
        print("no CUDA device visible: nothing to check (use --dry-run to check the plan)", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.budget
    runs = []
    for step in steps:
        if args.steps and not step.label.startswith(tuple(args.steps)):
            runs.append(Run(step.label, "not run in this call (--steps)", step.json_path, fresh_since=time.time()))
            continue
        left = deadline - time.monotonic()
        if left < 20:
            runs.append(Run(step.label, "not run: the budget was spent", step.json_path))
            continue
        started = time.time()
        status = run_step(step, min(step.limit_s, left), args.python)
        runs.append(Run(step.label, status, step.json_path, fresh_since=started))
        print(f"== {step.label}: {status}", file=sys.stderr, flush=True)
    text = render_results_md(
        runs, machine_info(), heading="# GPU check results\n",
        generated_by="Generated by `bash benchmarks/gpu_check.sh` (`python -m benchmarks.gpu_check`); methods in "
        "[README.md](README.md).\n")
    text = with_goals_section(text, render_goals(args.results_dir, stale=stale_files(runs)))
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0 if all(run.status.startswith("ok") for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
