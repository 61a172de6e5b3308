"""The demo's training runs as data: which YAML, from which model, on which data file, in which arm.

An *arm* is a chain of stages ending in an instruction-tuned model that is evaluated: Croc (1 -> 1.5 -> 2), the
LLaVA-1.5* baseline (1 with the detailed captions added -> 2), and the stage-1.5 ablations, which branch off the
Croc arm's stage-1 model. Adding an ablation is one more `Arm` entry and one YAML.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from trainer import CrocTrainingArguments, resolve_training_arguments

CONFIG_DIR = Path(__file__).resolve().parent.parent / "trainer" / "configs" / "demo"
STAGE0 = "stage0"
# The baseline's stage-1 data: both caption files as plain captioning (written by `demo.data`).
BASELINE_STAGE1_DATA = "baseline_stage1_captions.json"
# Stage-2 data: the training questions of each image as one multi-turn conversation (written by `demo.data`).
QA_MULTI_TURN_DATA = "qa_train_conversations.json"


@cache
def stage_arguments(stem: str) -> CrocTrainingArguments:
    """The training arguments the demo YAML `stem` resolves to, as `trainer.train` would use them."""
    return resolve_training_arguments([str(CONFIG_DIR / f"{stem}.yaml")])


@dataclass(frozen=True)
class RunSpec:
    """One `python -m trainer.train` call.

    Attributes:
        arm: the arm it belongs to.
        config: YAML stem in `trainer/configs/demo/`.
        init: the model it starts from: `STAGE0` or the `name` of an earlier run.
        data: training file in the synthetic-scenes folder.
    """

    arm: str
    config: str
    init: str
    data: str

    @property
    def stage(self) -> str:
        """The stage id ("1", "1.5", "2") from the YAML."""
        return stage_arguments(self.config).stage

    @property
    def name(self) -> str:
        """`<arm>/stage<id>`, also the run's folder below the seed folder."""
        return f"{self.arm}/stage{self.stage.replace('.', '_')}"


@dataclass(frozen=True)
class Arm:
    """A chain of runs; the last one's model is evaluated.

    Attributes:
        name: folder and key in the metrics.
        label: legend / table label.
        runs: the runs in order.
        ablation: run only with `--ablations`.
        vtr_variant: a stage-1.5 variant of the VTR objective (`CrocConfig`'s VTR options), compared in the report's
            VTR table; the other ablations change the pool, the attention or the data.
    """

    name: str
    label: str
    runs: tuple[RunSpec, ...]
    ablation: bool = False
    vtr_variant: bool = False

    @property
    def final(self) -> RunSpec:
        return self.runs[-1]


def _ablation(name: str, label: str, config: str, data: str = "detailed_captions.json",
              vtr_variant: bool = False) -> Arm:
    first = RunSpec(name, config, "croc/stage1", data)
    return Arm(name, label, (first, RunSpec(name, "stage2", first.name, QA_MULTI_TURN_DATA)), ablation=True,
               vtr_variant=vtr_variant)


ARMS: dict[str, Arm] = {
    arm.name: arm
    for arm in (
        Arm("croc", "Croc (1 → 1.5 → 2)", (
            RunSpec("croc", "stage1", STAGE0, "brief_captions.json"),
            RunSpec("croc", "stage1_5", "croc/stage1", "detailed_captions.json"),
            RunSpec("croc", "stage2", "croc/stage1_5", QA_MULTI_TURN_DATA),
        )),
        Arm("baseline", "LLaVA-1.5* baseline (1 + captions → 2)", (
            RunSpec("baseline", "baseline_stage1", STAGE0, BASELINE_STAGE1_DATA),
            RunSpec("baseline", "baseline_stage2", "baseline/stage1", QA_MULTI_TURN_DATA),
        )),
        _ablation("ablation_nearest", "Croc, nearest-neighbour matching", "stage1_5_nearest"),
        _ablation("ablation_causal", "Croc, causal attention in 1.5", "stage1_5_causal"),
        _ablation("ablation_brief", "Croc, brief captions in 1.5", "stage1_5_brief", "brief_captions.json"),
        _ablation("ablation_dcg", "Croc, caption loss only in 1.5 (no pool, no VTR)", "stage1_5_dcg"),
        _ablation("vtr_cosine", "VTR: cosine distance", "stage1_5_vtr_cosine", vtr_variant=True),
        _ablation("vtr_last_layer", "VTR: read before the final norm", "stage1_5_vtr_last_layer", vtr_variant=True),
        _ablation("vtr_linear_l2", "VTR: linear head, L2-normalised targets, SmoothL1 (ViCToR)",
                  "stage1_5_vtr_linear_l2", vtr_variant=True),
        _ablation("vtr_literal", "VTR: the paper read literally (L2 on the final hidden states)",
                  "stage1_5_vtr_literal", vtr_variant=True),
        _ablation("vtr_bert_l2", "VTR: BERT-layer head, L2-normalised targets, SmoothL1 (released head)",
                  "stage1_5_vtr_bert_l2", vtr_variant=True),
    )
}


# Trained in every demo (first seed only) for the pool-utilisation figure, which compares Hungarian with
# nearest-neighbour matching; the rest of that ablation arm (stage 2, evaluation) runs only with `--ablations`.
POOL_FIGURE_RUNS: tuple[RunSpec, ...] = (ARMS["ablation_nearest"].runs[0],)


def selected_arms(ablations: bool, only: tuple[str, ...] | None = None) -> list[Arm]:
    """Croc and the baseline, plus the ablations when asked for (all of them, or the ones named in `only`)."""
    unknown = set(only or ()) - {arm.name for arm in ARMS.values() if arm.ablation}
    if unknown:
        raise ValueError(f"unknown ablation arms {sorted(unknown)}; known: "
                         f"{', '.join(arm.name for arm in ARMS.values() if arm.ablation)}")
    return [arm for arm in ARMS.values()
            if not arm.ablation or (ablations and (only is None or arm.name in only))]


def arm_steps(arm: Arm, max_steps: dict[str, int] | None = None) -> int:
    """Optimiser steps of the whole arm, counting the shared Croc stage 1 for an ablation."""
    runs = list(arm.runs)
    if arm.ablation:
        runs = [ARMS["croc"].runs[0], *runs]
    return sum(steps_of(run.config, max_steps) for run in runs)


def steps_of(config: str, max_steps: dict[str, int] | None = None) -> int:
    """`max_steps` of a run: the override if there is one, else the YAML's."""
    if max_steps and config in max_steps:
        return int(max_steps[config])
    return int(stage_arguments(config).max_steps)


def check_equal_budgets(arms: list[Arm], max_steps: dict[str, int] | None = None) -> dict[str, int]:
    """Steps per arm; raises if they differ (the comparison is only fair at an equal number of optimiser steps),
    or if the arms' global batch sizes differ."""
    steps = {arm.name: arm_steps(arm, max_steps) for arm in arms}
    if len(set(steps.values())) > 1:
        raise ValueError(f"the arms must take the same number of optimiser steps; the demo YAMLs give {steps}")
    batches = {run.config: stage_arguments(run.config).global_batch_size for arm in arms for run in arm.runs}
    if len(set(batches.values())) > 1:
        raise ValueError(f"the demo YAMLs must share one global_batch_size; they give {batches}")
    return steps
