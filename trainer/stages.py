"""The Croc training stages as data: what trains, with which template and objectives.

Every stage-dependent default lives in `STAGES`; the rest of the trainer looks a stage up instead of branching on
its name, so a new stage (or an ablation) is one `register_stage` call. The learning rate of each part in each
stage belongs to the preset (`modeling_croc.presets`), since the paper and the released code disagree on them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from modeling_croc.constants import PROMPT_POOL_MODULE, VTR_HEAD_MODULE
from modeling_croc.presets import CROC_PRESETS

# Parameter groups of a Croc model. Each has its own learning rate and is trained or frozen as a whole.
PARAMETER_GROUPS: tuple[str, ...] = ("projector", "prompt_pool", "vtr_head", "language_model", "vision_tower")

# Name fragments that place a parameter in a group. They are matched anywhere in the name, so they also find the
# parameters under PEFT's `base_model.model.` prefix and inside `modules_to_save` / LoRA wrappers.
GROUP_MARKERS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        # OneVision's newline token is part of the vision-to-LM interface: it trains with the projector, as the
        # patch mergers of Qwen2.5-VL / Qwen3-VL (`visual.merger`, `visual.deepstack_merger_list`), SmolVLM's
        # connector and Gemma 4's vision embedder (`embed_vision`: norm and projection to the text width) do.
        # GLM-4.1V merges each 2x2 window by a strided convolution (`visual.downsample`) before its merger MLP: the
        # step Qwen's merger does inside itself, so it trains with it.
        "projector": ("multi_modal_projector.", "image_newline", "visual.merger.", "visual.deepstack_merger_list.",
                      "visual.downsample.", "connector.", "embed_vision."),
        "prompt_pool": (f"{PROMPT_POOL_MODULE}.",),
        "vtr_head": (f"{VTR_HEAD_MODULE}.",),
        # SmolVLM calls its language model `text_model`.
        "language_model": ("language_model.", "text_model.", "lm_head."),
        # Qwen2.5-VL / Qwen3-VL call their vision tower `visual` (its merger matched above first), SmolVLM
        # `vision_model`. Gemma 4's audio tower and its embedder (E2B / E4B) are an encoder side Croc does not train
        # on: they sit with the vision tower, frozen wherever it is.
        "vision_tower": ("vision_tower.", "visual.", "vision_model.", "audio_tower.", "embed_audio."),
    }
)


# The path segments PEFT's `modules_to_save` wrapper puts inside a module's path (the trained copy, the original):
# `visual.modules_to_save.default.merger.` is still the projector of a LoRA run that trains the vision tower whole.
_PEFT_WRAPPER_SEGMENT = re.compile(r"\.(?:modules_to_save\.[^.]+|original_module)\.")


def parameter_group(name: str) -> str | None:
    """The group (`PARAMETER_GROUPS`) a parameter named `name` belongs to, or None for a parameter of no group."""
    name = _PEFT_WRAPPER_SEGMENT.sub(".", name)
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
        trainable_parts: parameter groups that train; every other group is frozen. The VTR head trains with the
            prompt pool wherever the model has one.
        template: conversation template of the data (`modeling_croc.conversation.TEMPLATES`).
        croc_pretraining: whether the stage-1.5 objectives (masking, pool, mixed attention, VTR) are on.
        image_aspect_ratio: "square" (resize) or "pad" (pad to square with the mean colour), as the released scripts
            (`modeling_croc.processing_croc.IMAGE_ASPECT_RATIOS`).
        model_max_length: default token budget of a sample.
    """

    name: str
    description: str
    trainable_parts: tuple[str, ...]
    template: str
    croc_pretraining: bool
    image_aspect_ratio: str
    model_max_length: int

    def __post_init__(self) -> None:
        unknown = set(self.trainable_parts) - set(PARAMETER_GROUPS)
        if unknown:
            raise ValueError(f"stage {self.name}: unknown parameter groups {sorted(unknown)}")
        for preset in CROC_PRESETS.values():
            missing = set(self.trainable_parts) - set(preset.stage_learning_rates(self.name))
            if missing:
                raise ValueError(f"stage {self.name}: preset {preset.name!r} has no learning rate for {sorted(missing)}")

    def default_learning_rate(self, preset: str, group: str) -> float | None:
        """The learning rate `preset` gives `group` in this stage, or None if it has none for it."""
        return CROC_PRESETS[preset].stage_learning_rates(self.name).get(group)


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


register_stage(
    StageSpec(
        name="1",
        description="cross-modal alignment: train the projector on image-caption pairs",
        trainable_parts=("projector",),
        template="plain",
        croc_pretraining=False,
        image_aspect_ratio="square",
        model_max_length=2048,
    )
)
register_stage(
    StageSpec(
        name="1.5",
        description="cross-modal comprehension: prompt pool, mixed attention, VTR + detailed-caption losses",
        trainable_parts=("projector", "prompt_pool", "vtr_head", "language_model"),
        template="vicuna_v1",
        croc_pretraining=True,
        image_aspect_ratio="pad",
        model_max_length=8192,
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
    )
)
