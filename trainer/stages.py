"""The Croc training stages as data: what trains, with which template, objectives and default learning rates.

Every stage-dependent default lives in `STAGES`; the rest of the trainer looks a stage up instead of branching on
its name, so a new stage (or an ablation) is one `register_stage` call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# Parameter groups of a Croc model. Each has its own learning rate and is trained or frozen as a whole.
PARAMETER_GROUPS: tuple[str, ...] = ("projector", "prompt_pool", "language_model", "vision_tower")

# Name fragments that place a parameter in a group. They are matched anywhere in the name, so they also find the
# parameters under PEFT's `base_model.model.` prefix and inside `modules_to_save` / LoRA wrappers.
GROUP_MARKERS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "projector": ("multi_modal_projector.",),
        "prompt_pool": ("prompt_pool.", "vtr_head."),
        "language_model": ("language_model.", "lm_head."),
        "vision_tower": ("vision_tower.",),
    }
)

CROC_PRESET_NAMES: tuple[str, ...] = ("paper", "official")

# Optimiser settings that differ between presets: the paper's section 4 uses betas (0.9, 0.98); the released scripts
# keep the transformers default (0.9, 0.999). Weight decay is 0 in both (table 7 and the scripts).
PRESET_OPTIMIZER_DEFAULTS: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {
        "paper": MappingProxyType({"adam_beta1": 0.9, "adam_beta2": 0.98}),
        "official": MappingProxyType({"adam_beta1": 0.9, "adam_beta2": 0.999}),
    }
)


def parameter_group(name: str) -> str | None:
    """The group (`PARAMETER_GROUPS`) a parameter named `name` belongs to, or None for a parameter of no group."""
    for group, markers in GROUP_MARKERS.items():
        if any(marker in name for marker in markers):
            return group
    return None


@dataclass(frozen=True)
class StageSpec:
    """Everything that changes from one stage to the next.

    Attributes:
        name: stage id used in configs ("1", "1.5", "2").
        description: one line for logs and the model card.
        trainable_parts: parameter groups that train; every other group is frozen.
        template: conversation template of the data (`trainer.templates.TEMPLATES`).
        croc_pretraining: whether the stage-1.5 objectives (masking, pool, mixed attention, VTR) are on.
        image_aspect_ratio: "square" (resize) or "pad" (pad to square with the mean colour), as the released scripts.
        model_max_length: default token budget of a sample.
        learning_rates: preset -> group -> learning rate for the trainable groups.
    """

    name: str
    description: str
    trainable_parts: tuple[str, ...]
    template: str
    croc_pretraining: bool
    image_aspect_ratio: str
    model_max_length: int
    learning_rates: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.trainable_parts) - set(PARAMETER_GROUPS)
        if unknown:
            raise ValueError(f"stage {self.name}: unknown parameter groups {sorted(unknown)}")
        for preset in CROC_PRESET_NAMES:
            missing = set(self.trainable_parts) - set(self.learning_rates.get(preset, {}))
            if missing:
                raise ValueError(f"stage {self.name}: preset {preset!r} has no learning rate for {sorted(missing)}")

    def default_learning_rate(self, preset: str, group: str) -> float | None:
        """The stage's learning rate for `group` under `preset`, or None if the stage has none for it."""
        return self.learning_rates.get(preset, {}).get(group)


STAGES: dict[str, StageSpec] = {}


def register_stage(spec: StageSpec) -> StageSpec:
    """Add (or replace) a stage in the registry."""
    STAGES[spec.name] = spec
    return spec


def get_stage(name: str | float) -> StageSpec:
    """Look a stage up by name; YAML may give 1.5 as a float, so numbers are accepted too."""
    key = str(name)
    if key not in STAGES:
        raise ValueError(f"unknown stage {name!r}; known stages: {', '.join(STAGES)}")
    return STAGES[key]


# Paper: table 7 + section 4 (METHOD.md resolves the section-4 sentence: pool and projector 1.5e-4, LLM 2e-5).
# Official: the released trainer hard-codes the projector at 1.5e-4 (overriding stage 1's 1e-3, and applying in
# every stage since all stages share that trainer) and trains the pool and VTR head at the LLM's 2e-5.
register_stage(
    StageSpec(
        name="1",
        description="cross-modal alignment: train the projector on image-caption pairs",
        trainable_parts=("projector",),
        template="plain",
        croc_pretraining=False,
        image_aspect_ratio="square",
        model_max_length=2048,
        learning_rates={"paper": {"projector": 1e-3}, "official": {"projector": 1.5e-4}},
    )
)
register_stage(
    StageSpec(
        name="1.5",
        description="cross-modal comprehension: prompt pool, mixed attention, VTR + detailed-caption losses",
        trainable_parts=("projector", "prompt_pool", "language_model"),
        template="vicuna_v1",
        croc_pretraining=True,
        image_aspect_ratio="pad",
        model_max_length=8192,
        learning_rates={
            "paper": {"projector": 1.5e-4, "prompt_pool": 1.5e-4, "language_model": 2e-5},
            "official": {"projector": 1.5e-4, "prompt_pool": 2e-5, "language_model": 2e-5},
        },
    )
)
register_stage(
    StageSpec(
        name="2",
        description="visual instruction tuning: projector and language model, Croc objectives off",
        trainable_parts=("projector", "language_model"),
        template="vicuna_v1",
        croc_pretraining=False,
        image_aspect_ratio="pad",
        model_max_length=4096,
        learning_rates={
            "paper": {"projector": 2e-5, "language_model": 2e-5},
            "official": {"projector": 1.5e-4, "language_model": 2e-5},
        },
    )
)
