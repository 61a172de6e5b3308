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
3. The LM loss alone at Qwen2.5's 151,936-token vocabulary, hidden 3584, 8192 tokens, bf16, forward + backward:
   the fused loss (Liger's kernel when liger-kernel is installed) against logits + transformers' loss, peak memory,
   time and agreement (`bench_lm_loss --device cuda`).
4. Attention: flex_attention and croc_split with the mixed pattern against sdpa's `is_causal` path (FlashAttention
   kernel in bf16) at 2K / 4K / 8K tokens on the TinyLlama-1.1B shape (`bench_attention --device cuda`).
5. A stage-1.5 step against a stage-2 step on the 1B-class Croc model in bf16, time and peak memory
   (`bench_step --device cuda --model 1b`), on sdpa and on croc_split.
6. Packed against padded on the 1B-class model in bf16 (`bench_packing --device cuda`).

The budget defaults to 500 s of steps so that the whole call, environment check included, stays within 9 minutes
on one H200-class GPU; the per-step limits below were sized for that GPU and add up to no more than the budget
(`--dry-run` checks it); the croc_split steps and the LM loss step have not run on one yet.

RESULTS-gpu.md opens with the goals of issue 21 (`benchmarks.gpu_goals.GOALS`): each goal's measured value is read from the steps' JSON
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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.__main__ import RESULTS_DIR, Run, help_text, machine_info, render_results_md
from benchmarks.gpu_goals import (
    ASSIGNMENT_FILE,
    ATTENTION_FILE,
    LM_LOSS_FILE,
    PACKING_FILE,
    STEP_FILE,
    STEP_SPLIT_FILE,
    goals_only_section,
    render_goals,
    with_goals_section,
)

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


TESTS_FILE = TESTS_JSON.name


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
             ("--device", "cuda", "--quick", "--out", str(results_dir / ASSIGNMENT_FILE)), 25,
             results_dir / ASSIGNMENT_FILE),
        Step("lm_loss (cuda)", "benchmarks.bench_lm_loss",
             ("--device", "cuda", "--out", str(results_dir / LM_LOSS_FILE)), 30, results_dir / LM_LOSS_FILE),
        Step("attention (cuda)", "benchmarks.bench_attention",
             ("--device", "cuda", "--lengths", "2048", "4096", "8192", "--backends", "sdpa", "flex_attention",
              "croc_split", "--reps", "5", "--no-mask-building", "--out", str(results_dir / ATTENTION_FILE)),
             130, results_dir / ATTENTION_FILE),
        Step("step (cuda)", "benchmarks.bench_step",
             ("--device", "cuda", "--model", "1b", "--dtype", "bfloat16", "--out",
              str(results_dir / STEP_FILE)), 55, results_dir / STEP_FILE),
        Step("step, croc_split (cuda)", "benchmarks.bench_step",
             ("--device", "cuda", "--model", "1b", "--dtype", "bfloat16", "--attn", "croc_split", "--out",
              str(results_dir / STEP_SPLIT_FILE)), 70, results_dir / STEP_SPLIT_FILE),
        Step("packing (cuda)", "benchmarks.bench_packing",
             ("--device", "cuda", "--quick", "--out", str(results_dir / PACKING_FILE)), 90,
             results_dir / PACKING_FILE),
    ]


def _env() -> dict[str, str]:
    # Offline like the suite; the tests' deprecation guards stay on. pytest loads no plugin by entry point: a CUDA
    # image holds its own (pytest-cov, -benchmark, -timeout, ...), made for its pytest rather than the project's,
    # and the CUDA tests need none.
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")


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


def dry_run(steps: Sequence[Step], python: str, budget_s: float = DEFAULT_BUDGET_S) -> int:
    """The plan, and what can be checked without a GPU: the step limits add up to no more than the budget (else a
    slow early step would cut the last ones short), every option a step passes is one its script lists in
    `--help` (read in this process), and the CUDA tests the first step selects exist (collected by `python`, not
    run). Returns the number of problems found."""
    problems = 0
    total = sum(step.limit_s for step in steps)
    print(f"GPU check plan ({len(steps)} steps, {total} s of step limits, budget {budget_s:g} s):")
    if total > budget_s:
        print(f"  the step limits add up to {total} s, over the {budget_s:g} s budget")
        problems += 1
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


def parse_arguments(argv: Sequence[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """The options, checked (argparse's usage and one line, status 2, for a wrong one); stdlib only, so
    `gpu_check.sh` checks them with any python3 before it installs anything."""
    parser = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").split("\n\n")[0])
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
    if args.steps:
        steps = plan(args.results_dir)
        unknown = [name for name in args.steps if not any(step.label.startswith(name) for step in steps)]
        if unknown:
            parser.error(f"--steps: no step starts with {unknown}; steps: {[step.label for step in steps]}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.goals_only:
        return write_goals_only(args.out, args.results_dir)
    steps = plan(args.results_dir)
    if args.dry_run:
        return 1 if dry_run(steps, args.python, args.budget) else 0

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
