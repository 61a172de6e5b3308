"""The demo, end to end: a list of named steps (data, stage-0 model, every training run, evaluation, figures,
report), built from the arms in `demo.runs` and executed in order with their wall times recorded.

Training goes through `trainer.train.main` with the demo YAMLs and `--key=value` overrides only (paths, seed, and
for `--quick` the sizes): the same entry point and code path as `python -m trainer.train` on a real run.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainer import train as train_module

from . import evaluate as evaluation
from .data import build_data
from .model_spec import build_stage0
from .plots import make_figures
from .report import write_report, write_timings
from .runs import CONFIG_DIR, POOL_FIGURE_RUNS, STAGE0, Arm, RunSpec, check_equal_budgets, selected_arms
from .settings import DemoSettings

logger = logging.getLogger("demo")

SCENES_DIR = "scenes"
REPORT_DIR = "report"


@dataclass(frozen=True)
class DemoOptions:
    """Command-line options of `python -m demo`."""

    out: Path = Path("demo_out")
    seed: int = 0
    seeds: int = 1
    ablations: bool = False
    threads: int = 1
    settings: DemoSettings = field(default_factory=DemoSettings)

    @property
    def seed_list(self) -> list[int]:
        return [self.seed + k for k in range(self.seeds)]


@dataclass
class DemoState:
    """What the steps produce for the later ones (and for the report)."""

    options: DemoOptions
    arms: list[Arm]
    data_counts: dict[str, int] = field(default_factory=dict)
    model_parameters: int = 0
    histories: dict[int, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)  # seed -> run -> logs
    run_seconds: dict[str, list[float]] = field(default_factory=dict)  # run name -> wall time per seed
    run_settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # run name -> settings as resolved
    predictions: dict[int, dict[str, list[str]]] = field(default_factory=dict)  # seed -> arm -> answers
    accuracy: dict[int, dict[str, dict[str, dict[str, float]]]] = field(default_factory=dict)  # seed -> arm -> type
    chance: dict[str, dict[str, float]] = field(default_factory=dict)
    questions: list[evaluation.Question] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # step name -> seconds
    started: float = field(default_factory=time.perf_counter)

    @property
    def out(self) -> Path:
        return self.options.out

    @property
    def scenes(self) -> Path:
        return self.out / SCENES_DIR

    @property
    def report_dir(self) -> Path:
        return self.out / REPORT_DIR

    def run_dir(self, seed: int, name: str) -> Path:
        """Folder of run `name` (or of `STAGE0`) for `seed`."""
        return self.out / f"seed{seed}" / name


@dataclass(frozen=True)
class Step:
    """One unit of the demo: a name for logs and timings, and what it does."""

    name: str
    action: Callable[[DemoState], None]


# ---- steps ----------------------------------------------------------------------------------------------------

def step_data(state: DemoState) -> None:
    """Synthetic scenes (training files, held-out questions) and the baseline's caption mixture."""
    settings = state.options.settings
    if state.scenes.exists():  # a previous run's images would survive a smaller rerun
        shutil.rmtree(state.scenes)
    state.data_counts = build_data(state.scenes, settings, state.options.seed)
    state.questions = evaluation.load_questions(state.scenes / "qa_test.json", settings.max_eval_questions)
    state.chance = evaluation.chance_levels(evaluation.load_questions(state.scenes / "qa_train.json"),
                                            state.questions)


def step_stage0(seed: int) -> Callable[[DemoState], None]:
    def action(state: DemoState) -> None:
        folder = build_stage0(state.options.settings.model, state.scenes, state.run_dir(seed, STAGE0), seed)
        state.model_parameters = _count_parameters(folder)
    return action


def training_argv(state: DemoState, run: RunSpec, seed: int) -> list[str]:
    """`trainer.train` arguments of `run`: its demo YAML plus the paths, the seed and the quick overrides."""
    settings = state.options.settings
    argv = [
        str(CONFIG_DIR / f"{run.config}.yaml"),
        f"--output_dir={state.run_dir(seed, run.name)}",
        f"--model.name_or_path={state.run_dir(seed, run.init)}",
        f"--data.path={state.scenes / run.data}",
        f"--seed={seed}",
    ]
    if settings.max_steps and run.config in settings.max_steps:
        argv.append(f"--max_steps={settings.max_steps[run.config]}")
    return argv + list(settings.extra_overrides)


def step_train(run: RunSpec, seed: int) -> Callable[[DemoState], None]:
    def action(state: DemoState) -> None:
        output_dir = state.run_dir(seed, run.name)
        if output_dir.exists():  # a fresh run every time: the trainer would otherwise resume from a checkpoint
            shutil.rmtree(output_dir)
        started = time.perf_counter()
        trainer = train_module.main(training_argv(state, run, seed))
        state.run_seconds.setdefault(run.name, []).append(time.perf_counter() - started)
        state.histories.setdefault(seed, {})[run.name] = list(trainer.state.log_history)
        args = trainer.args  # after the YAML, the overrides and the stage defaults: what the report states
        state.run_settings[run.name] = {"max_steps": args.max_steps, "global_batch_size": args.global_batch_size,
                                        "learning_rates": args.group_learning_rates}
        del trainer
        gc.collect()
    return action


def step_evaluate(arm: Arm, seed: int) -> Callable[[DemoState], None]:
    def action(state: DemoState) -> None:
        settings = state.options.settings
        model, processor = evaluation.load_model(state.run_dir(seed, arm.final.name))
        answers = evaluation.generate_answers(
            model, processor, state.questions, state.scenes, batch_size=settings.eval_batch_size,
            max_new_tokens=settings.max_new_tokens, desc=f"evaluate {arm.name} (seed {seed})",
        )
        state.predictions.setdefault(seed, {})[arm.name] = answers
        state.accuracy.setdefault(seed, {})[arm.name] = evaluation.accuracy_by_type(state.questions, answers)
        path = state.run_dir(seed, arm.name) / "predictions.json"
        path.write_text(json.dumps([
            {"id": q.id, "question_type": q.question_type, "question": q.text, "answer": q.answer, "prediction": a}
            for q, a in zip(state.questions, answers, strict=True)
        ], indent=1) + "\n", encoding="utf-8")
    return action


def step_figures(state: DemoState) -> None:
    state.report_dir.mkdir(parents=True, exist_ok=True)
    make_figures(state)


def step_report(state: DemoState) -> None:
    state.timings["total"] = time.perf_counter() - state.started  # the report states the time until it is written
    write_report(state)


def build_steps(options: DemoOptions, arms: list[Arm]) -> list[Step]:
    """Every step of the demo, in execution order. Runs shared by several arms (the Croc stage 1 that the
    ablations start from) are trained once per seed; the pool figure's extra runs once, on the first seed."""
    steps = [Step("data", step_data)]
    for seed in options.seed_list:
        steps.append(Step(f"seed{seed}/stage0", step_stage0(seed)))
        done: set[str] = set()
        for arm in arms:
            for run in arm.runs:
                if run.name not in done:
                    steps.append(Step(f"seed{seed}/{run.name}", step_train(run, seed)))
                    done.add(run.name)
            steps.append(Step(f"seed{seed}/{arm.name}/evaluate", step_evaluate(arm, seed)))
        if seed == options.seed_list[0]:
            steps += [Step(f"seed{seed}/{run.name}", step_train(run, seed)) for run in POOL_FIGURE_RUNS
                      if run.name not in done]
    steps += [Step("figures", step_figures), Step("report", step_report)]
    return steps


def run_demo(options: DemoOptions) -> DemoState:
    """Run every step; returns the state (metrics are in `<out>/report/metrics.json`)."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(options.threads)  # fixed: float reductions, hence the numbers, depend on it
    try:
        return _run_steps(options)
    finally:
        torch.set_num_threads(previous_threads)


def _run_steps(options: DemoOptions) -> DemoState:
    arms = selected_arms(options.ablations)
    check_equal_budgets([arm for arm in arms if arm.name in ("croc", "baseline")], options.settings.max_steps)
    options.out.mkdir(parents=True, exist_ok=True)
    state = DemoState(options=options, arms=arms)
    steps = build_steps(options, arms)
    for index, step in enumerate(steps, start=1):
        logger.setLevel(logging.INFO)  # each trainer.train call reconfigures logging (basicConfig(force=True))
        logger.info("[%d/%d] %s (%.0f s elapsed)", index, len(steps), step.name, time.perf_counter() - state.started)
        step_started = time.perf_counter()
        step.action(state)
        state.timings[step.name] = time.perf_counter() - step_started
    state.timings.pop("total", None)  # keep it last
    state.timings["total"] = time.perf_counter() - state.started
    write_timings(state)  # again, now with the report step and the final total
    return state


def _count_parameters(folder: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        return sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())
