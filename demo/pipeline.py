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
from .runs import (
    CONFIG_DIR,
    POOL_FIGURE_RUNS,
    STAGE0,
    Arm,
    RunSpec,
    check_equal_budgets,
    selected_arms,
    stage_arguments,
)
from .settings import DemoSettings
from .vtr_probe import vtr_fit

logger = logging.getLogger("demo")

SCENES_DIR = "scenes"
REPORT_DIR = "report"
# Question files of the held-out splits: settings are chosen on "val"; "test" is read for the report.
SPLIT_FILES = {"val": "qa_val.json", "test": "qa_test.json"}
# Detailed captions of images no training file contains, for the reconstruction probe (`demo.vtr_probe`).
PROBE_CAPTIONS = "val_detailed_captions.json"
# What each step leaves next to its outputs, so a report can be assembled from runs made by several processes
# (`--run-seeds`, then `--report-only`).
RUN_SUMMARY = "demo_run.json"
PROBE_FILE = "vtr_probe.json"
TOWER_FILE = "tower_pretraining.json"


class MissingDemoFiles(FileNotFoundError):
    """What an earlier run (or another process of a parallel one) should have left in --out and did not: a mistake
    in the options (`--report-only` on the wrong folder, a seed nobody trained), said by `python -m demo` in one line
    rather than as a traceback."""


@dataclass(frozen=True)
class DemoOptions:
    """Command-line options of `python -m demo`."""

    out: Path = Path("demo_out")
    seed: int = 0
    seeds: int = 1
    ablations: bool = False
    threads: int = 1
    settings: DemoSettings = field(default_factory=DemoSettings)
    eval_splits: tuple[str, ...] = ("val", "test")
    ablation_arms: tuple[str, ...] | None = None
    run_seeds: tuple[int, ...] | None = None
    report_only: bool = False
    write_report: bool = True
    resume: bool = False

    @property
    def seed_list(self) -> list[int]:
        """Every seed of the report: S..S+N-1 (the data always comes from S)."""
        return [self.seed + k for k in range(self.seeds)]

    @property
    def trained_seeds(self) -> list[int]:
        """The seeds this process trains and evaluates (`--run-seeds`; default all)."""
        if self.report_only:
            return []
        return [seed for seed in self.seed_list if self.run_seeds is None or seed in self.run_seeds]


@dataclass(frozen=True)
class SplitView:
    """What the metrics read of one held-out split."""

    split: str
    arms: list[Arm]
    questions: list[evaluation.Question]
    predictions: dict[int, dict[str, list[str]]]
    accuracy: dict[int, dict[str, dict[str, dict[str, float]]]]
    chance: dict[str, dict[str, float]]


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
    split_questions: dict[str, list[evaluation.Question]] = field(default_factory=dict)  # split -> questions
    split_predictions: dict[str, dict[int, dict[str, list[str]]]] = field(default_factory=dict)  # split->seed->arm
    split_accuracy: dict[str, dict[int, dict[str, dict[str, dict[str, float]]]]] = field(default_factory=dict)
    split_chance: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    vtr_fits: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)  # seed -> run -> probe
    tower: dict[int, dict[str, float]] = field(default_factory=dict)  # seed -> stage-0 summary
    timings: dict[str, float] = field(default_factory=dict)  # step name -> seconds
    started: float = field(default_factory=time.perf_counter)

    # The report's headline split: the test split when it was evaluated, else the validation split.
    @property
    def report_split(self) -> str:
        return "test" if "test" in self.split_questions else "val"

    @property
    def questions(self) -> list[evaluation.Question]:
        return self.split_questions.get(self.report_split, [])

    @property
    def predictions(self) -> dict[int, dict[str, list[str]]]:
        return self.split_predictions.get(self.report_split, {})

    @property
    def accuracy(self) -> dict[int, dict[str, dict[str, dict[str, float]]]]:
        return self.split_accuracy.get(self.report_split, {})

    @property
    def chance(self) -> dict[str, dict[str, float]]:
        return self.split_chance.get(self.report_split, {})

    def view(self, split: str) -> SplitView:
        """The arms and one split's questions, predictions, accuracy and chance levels, for the metrics."""
        return SplitView(split, self.arms, self.split_questions.get(split, []), self.split_predictions.get(split, {}),
                         self.split_accuracy.get(split, {}), self.split_chance.get(split, {}))

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
    """Synthetic scenes (training files, held-out questions) and the baseline's caption mixture. A folder written
    by another process of the same demo (same sizes, same data seed) is reused as it is."""
    settings = state.options.settings
    counts_file = state.scenes / "demo_data.json"
    expected = {"settings": settings.name, "seed": state.options.seed}
    if counts_file.is_file() and json.loads(counts_file.read_text(encoding="utf-8"))["made_by"] == expected:
        state.data_counts = json.loads(counts_file.read_text(encoding="utf-8"))["counts"]
    elif state.options.report_only:
        raise MissingDemoFiles(f"--report-only: no demo data in {state.scenes} (for these --seed and --quick "
                               "options): run the demo on this --out first")
    else:
        if state.scenes.exists():  # a previous run's images would survive a smaller rerun
            shutil.rmtree(state.scenes)
        state.data_counts = build_data(state.scenes, settings, state.options.seed)
        counts_file.write_text(json.dumps({"made_by": expected, "counts": state.data_counts}, indent=1) + "\n",
                               encoding="utf-8")
    train_questions = evaluation.load_questions(state.scenes / "qa_train.json")
    for split in state.options.eval_splits:
        questions = evaluation.load_questions(state.scenes / SPLIT_FILES[split], settings.max_eval_questions)
        state.split_questions[split] = questions
        state.split_chance[split] = evaluation.chance_levels(train_questions, questions)


def step_stage0(seed: int) -> Callable[[DemoState], None]:
    def action(state: DemoState) -> None:
        folder = state.run_dir(seed, STAGE0)
        if state.options.resume and (folder / TOWER_FILE).is_file():
            state.tower[seed] = json.loads((folder / TOWER_FILE).read_text(encoding="utf-8"))
        else:
            state.tower[seed] = build_stage0(state.options.settings.model, state.scenes, folder, seed)
            (folder / TOWER_FILE).write_text(json.dumps(state.tower[seed], indent=1) + "\n", encoding="utf-8")
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
        argv = training_argv(state, run, seed)
        finished = _finished_run(output_dir, _portable(state, argv)) if state.options.resume else None
        if finished is not None:
            _record_run(state, run.name, seed, finished)
            return
        if output_dir.exists():  # a fresh run every time: the trainer would otherwise resume from a checkpoint
            shutil.rmtree(output_dir)
        started = time.perf_counter()
        trainer = train_module.main(argv)
        seconds = time.perf_counter() - started
        args = trainer.args  # after the YAML, the overrides and the stage defaults: what the report states
        summary = {"seconds": seconds, "argv": _portable(state, argv), "log_history": list(trainer.state.log_history),
                   "settings": {"max_steps": args.max_steps, "global_batch_size": args.global_batch_size,
                                "learning_rates": args.group_learning_rates}}
        (output_dir / RUN_SUMMARY).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
        _record_run(state, run.name, seed, summary)
        del trainer
        gc.collect()
    return action


def step_evaluate(arm: Arm, seed: int) -> Callable[[DemoState], None]:
    def action(state: DemoState) -> None:
        settings = state.options.settings
        if state.options.resume and all(_prediction_file(state, arm, seed, split).is_file()
                                        for split in state.split_questions):
            _load_predictions(state, arm, seed)
            return
        model, processor = evaluation.load_model(state.run_dir(seed, arm.final.name))
        for split, questions in state.split_questions.items():
            answers = evaluation.generate_answers(
                model, processor, questions, state.scenes, batch_size=settings.eval_batch_size,
                max_new_tokens=settings.max_new_tokens, desc=f"evaluate {arm.name} on {split} (seed {seed})",
            )
            _record_evaluation(state, arm, seed, split, answers)
            _prediction_file(state, arm, seed, split).write_text(json.dumps([
                {"id": q.id, "question_type": q.question_type, "question": q.text, "answer": q.answer,
                 "prediction": a}
                for q, a in zip(questions, answers, strict=True)
            ], indent=1) + "\n", encoding="utf-8")
    return action


def step_vtr_probe(run: RunSpec, seed: int) -> Callable[[DemoState], None]:
    """The reconstruction probe of a stage-1.5 run on the validation images' detailed captions."""
    def action(state: DemoState) -> None:
        probe_file = state.run_dir(seed, run.name) / PROBE_FILE
        if state.options.resume and probe_file.is_file():
            state.vtr_fits.setdefault(seed, {})[run.name] = json.loads(probe_file.read_text(encoding="utf-8"))
            return
        captions = state.scenes / PROBE_CAPTIONS
        if not captions.is_file():  # no validation split: the probe reads training captions instead
            captions = state.scenes / run.data
        args = stage_arguments(run.config)
        fit = vtr_fit(state.run_dir(seed, run.name), captions, args.template, args.model_max_length, seed)
        (state.run_dir(seed, run.name) / PROBE_FILE).write_text(json.dumps(fit, indent=1) + "\n", encoding="utf-8")
        state.vtr_fits.setdefault(seed, {})[run.name] = fit
    return action


def _portable(state: DemoState, argv: list[str]) -> list[str]:
    """`argv` with the output folder and the config folder named by placeholders: a demo folder moved or resumed
    from another checkout still matches."""
    return [arg.replace(str(state.out), "<out>").replace(str(CONFIG_DIR), "<configs>") for arg in argv]


def _finished_run(output_dir: Path, argv: list[str]) -> dict[str, Any] | None:
    """The summary of a run that finished in `output_dir` (for `--resume`), or None when it did not finish. A run
    finished with other arguments is an error, not something to train over silently."""
    summary_file = output_dir / RUN_SUMMARY
    if not summary_file.is_file():
        return None
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    recorded = summary.get("argv", argv)  # summaries written before the arguments were recorded
    if recorded != argv:
        raise ValueError(f"--resume: {output_dir} was trained with {recorded}, not {argv}; "
                         "use another --out or run without --resume")
    return summary


def _prediction_file(state: DemoState, arm: Arm, seed: int, split: str) -> Path:
    return state.run_dir(seed, arm.name) / f"predictions_{split}.json"


def _load_predictions(state: DemoState, arm: Arm, seed: int) -> None:
    for split, questions in state.split_questions.items():
        rows = json.loads(_prediction_file(state, arm, seed, split).read_text(encoding="utf-8"))
        if [row["id"] for row in rows] != [q.id for q in questions]:
            raise ValueError(f"{_prediction_file(state, arm, seed, split)} answers other questions than the "
                             f"{split} split's; run without --resume")
        _record_evaluation(state, arm, seed, split, [row["prediction"] for row in rows])


def _record_run(state: DemoState, name: str, seed: int, summary: dict[str, Any]) -> None:
    state.run_seconds.setdefault(name, []).append(summary["seconds"])
    state.histories.setdefault(seed, {})[name] = summary["log_history"]
    state.run_settings[name] = summary["settings"]


def _record_evaluation(state: DemoState, arm: Arm, seed: int, split: str, answers: list[str]) -> None:
    state.split_predictions.setdefault(split, {}).setdefault(seed, {})[arm.name] = answers
    state.split_accuracy.setdefault(split, {}).setdefault(seed, {})[arm.name] = \
        evaluation.accuracy_by_type(state.split_questions[split], answers)


def step_load_seed(seed: int) -> Callable[[DemoState], None]:
    """What another process trained and evaluated for `seed`, read back from the files its steps left."""
    def action(state: DemoState) -> None:
        stage0 = state.run_dir(seed, STAGE0)
        state.tower[seed] = json.loads(_left_by_run(stage0 / TOWER_FILE, seed).read_text(encoding="utf-8"))
        state.model_parameters = _count_parameters(stage0)
        for run in _runs_of_seed(state.options, state.arms, seed):
            folder = state.run_dir(seed, run.name)
            summary = json.loads(_left_by_run(folder / RUN_SUMMARY, seed).read_text(encoding="utf-8"))
            _record_run(state, run.name, seed, summary)
            state.timings[f"seed{seed}/{run.name} (another process)"] = summary["seconds"]
            if (folder / PROBE_FILE).is_file():
                state.vtr_fits.setdefault(seed, {})[run.name] = json.loads((folder / PROBE_FILE).read_text())
        for arm in state.arms:
            _load_predictions(state, arm, seed)
    return action


def _left_by_run(path: Path, seed: int) -> Path:
    """`path`, which the run of `seed` writes when it finishes; its absence is the options' mistake (a seed this
    process does not train and no other process has finished), said in one line."""
    if not path.is_file():
        raise MissingDemoFiles(f"seed {seed} has not been trained in this --out (no {path}): train it first "
                               f"(--run-seeds {seed}, same options) or leave out --report-only/--run-seeds")
    return path


def _runs_of_seed(options: DemoOptions, arms: list[Arm], seed: int) -> list[RunSpec]:
    """The training runs of `seed`, each once, in execution order (the pool figure's extra on the first seed)."""
    runs: dict[str, RunSpec] = {}
    for arm in arms:
        for run in arm.runs:
            runs.setdefault(run.name, run)
    if seed == options.seed_list[0]:
        for run in POOL_FIGURE_RUNS:
            runs.setdefault(run.name, run)
    return list(runs.values())


def step_figures(state: DemoState) -> None:
    state.report_dir.mkdir(parents=True, exist_ok=True)
    make_figures(state)


def step_report(state: DemoState) -> None:
    state.timings["total"] = time.perf_counter() - state.started  # the report states the time until it is written
    write_report(state)


def build_steps(options: DemoOptions, arms: list[Arm]) -> list[Step]:
    """Every step of the demo, in execution order. Runs shared by several arms (the Croc stage 1 that the
    ablations start from) are trained once per seed; the pool figure's extra runs once, on the first seed. Every
    stage-1.5 run is followed by its reconstruction probe. Seeds this process does not train (`--run-seeds`,
    `--report-only`) are read back from the files their own process left."""
    steps = [Step("data", step_data)]
    for seed in options.seed_list:
        if seed not in options.trained_seeds:
            if options.write_report:
                steps.append(Step(f"seed{seed}/load", step_load_seed(seed)))
            continue
        steps.append(Step(f"seed{seed}/stage0", step_stage0(seed)))
        for run in _runs_of_seed(options, arms, seed):
            steps.append(Step(f"seed{seed}/{run.name}", step_train(run, seed)))
            if run.stage == "1.5":
                steps.append(Step(f"seed{seed}/{run.name}/vtr_probe", step_vtr_probe(run, seed)))
        steps += [Step(f"seed{seed}/{arm.name}/evaluate", step_evaluate(arm, seed)) for arm in arms]
    if options.write_report:
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
    arms = selected_arms(options.ablations, options.ablation_arms)
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
    if options.write_report:
        write_timings(state)  # again, now with the report step and the final total
    return state


def _count_parameters(folder: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        return sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())
