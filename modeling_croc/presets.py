"""The Croc presets: one table that owns every setting a preset decides, for the model and for the optimiser.

`paper` follows the paper (arXiv 2410.14332); `official` reproduces the released Croc training code; `victor`
reproduces the released code of ViCToR, the paper's successor (same arXiv number, v4). Every Croc config class fills
its unset Croc fields from `CrocPreset.model_fields`; the trainer takes the AdamW betas and each stage's per-part
learning rates (and so its trainable parts) from the same entry; the converters choose presets by name from it.
docs/METHOD.md explains every value, with the file and line of the released code it was read from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class CrocPreset:
    """Everything one preset sets.

    Attributes:
        name: the value of `CrocConfig.croc_preset`.
        description: one line for help texts and model cards.
        released_model_types: `model_type`s of released checkpoints trained with this preset, which their
            conversion selects by default.
        model_fields: `CrocConfig` field -> value, filled into every field a config leaves unset.
        adam_betas: AdamW (beta1, beta2).
        learning_rates: stage ("1", "1.5", "2") -> parameter group -> learning rate. A run of that stage trains
            the stage's parts plus every group named here (e.g. the vision tower in `victor`'s stages 1.5 and 2).
    """

    name: str
    description: str
    released_model_types: tuple[str, ...]
    model_fields: Mapping[str, Any]
    adam_betas: tuple[float, float]
    learning_rates: Mapping[str, Mapping[str, float]]

    def stage_learning_rates(self, stage: str) -> Mapping[str, float]:
        """Parameter group -> learning rate in `stage` (empty for a stage the preset does not know)."""
        return self.learning_rates.get(stage, MappingProxyType({}))


def _frozen(mapping: Mapping) -> Mapping:
    return MappingProxyType({key: _frozen(value) if isinstance(value, Mapping) else value
                             for key, value in mapping.items()})


PAPER = CrocPreset(
    name="paper",
    description="the paper's method and hyper-parameters",
    # Plain LLaVA-1.5 checkpoints of the original repository have no Croc stage: they start one with the paper's.
    released_model_types=("llava_llama", "llava_mistral"),
    model_fields=_frozen({
        "prompt_pool_size": 2048,
        # The paper does not say how the pool starts; drawing it at the visual tokens' scale is this project's choice.
        "prompt_pool_init": "visual_stats",
        "mask_ratio": 0.75,
        "mask_rounding": "nearest",
        "token_matching": "hungarian",
        "matching_scope": "image",
        "bidirectional_span": "image",
        "vtr_loss_weight": 10.0,
        # The paper says only "the L2 distance between T_rv and T_v" (eq. 3). Read literally (`paper_literal`), the
        # distance compares post-norm hidden states (norm ~ sqrt(d) * gain) with raw projector tokens and is mostly
        # their norm gap. The form below, a linear head regressing per-token standardised targets (MAE's
        # norm_pix_loss) with squared error, was chosen among the measured variants on the demo's validation split
        # (docs/METHOD.md, "The VTR objective"): it reconstructs, and it costs the caption loss nothing.
        "vtr_loss": "mse",
        "vtr_positions": "masked",
        "vtr_prediction": "final_norm",
        "vtr_head": "linear",
        "vtr_target_normalization": "standardize",
        "vtr_head_layers": 1,
        "normalize_visual_tokens": False,
    }),
    # Section 4: AdamW (0.9, 0.98).
    adam_betas=(0.9, 0.98),
    # Table 7 + section 4 (docs/METHOD.md resolves the section-4 sentence: pool and projector 1.5e-4, LLM 2e-5).
    # The VTR head is a new module like the projector and trains at its rate.
    learning_rates=_frozen({
        "1": {"projector": 1e-3},
        "1.5": {"projector": 1.5e-4, "prompt_pool": 1.5e-4, "vtr_head": 1.5e-4, "language_model": 2e-5},
        "2": {"projector": 2e-5, "language_model": 2e-5},
    }),
)

OFFICIAL = CrocPreset(
    name="official",
    description="the released training code",
    released_model_types=("croc_llama",),
    model_fields=_frozen({
        "prompt_pool_size": 2048,
        "prompt_pool_init": "normal",
        "mask_ratio": 0.75,
        "mask_rounding": "keep_floor",
        "token_matching": "nearest",
        # Irrelevant to nearest-neighbour matching; "image" keeps the Hungarian variant per image.
        "matching_scope": "image",
        "bidirectional_span": "prompt",
        "vtr_loss_weight": 10.0,
        "vtr_loss": "smooth_l1",
        "vtr_positions": "all",
        "vtr_prediction": "final_norm",
        "vtr_head": "bert",
        # The visual tokens themselves are L2-normalised (normalize_visual_tokens), so the targets already are.
        "vtr_target_normalization": "none",
        "vtr_head_layers": 1,
        "normalize_visual_tokens": True,
    }),
    # The released scripts keep transformers' default betas.
    adam_betas=(0.9, 0.999),
    # The released trainer hard-codes the projector at 1.5e-4 (in every stage: all stages share that trainer) and
    # trains the pool and the VTR head at the LLM's 2e-5.
    learning_rates=_frozen({
        "1": {"projector": 1.5e-4},
        "1.5": {"projector": 1.5e-4, "prompt_pool": 2e-5, "vtr_head": 2e-5, "language_model": 2e-5},
        "2": {"projector": 1.5e-4, "language_model": 2e-5},
    }),
)

# The paper's VTR objective read literally (eq. 3): the L2 distance between the LM's final hidden states (after its
# final norm) and the raw projector tokens, no head, no normalisation. Kept selectable by name (it was this
# project's `paper` default until the VTR variants were measured); docs/METHOD.md shows why it is no longer (the
# distance is mostly the norm gap between the two, and the LM does not reconstruct under it).
LITERAL_VTR: Mapping[str, Any] = _frozen({
    "vtr_loss": "l2", "vtr_prediction": "final_norm", "vtr_head": "none", "vtr_target_normalization": "none",
})
PAPER_LITERAL = replace(
    PAPER,
    name="paper_literal",
    description="the paper, with its VTR objective read literally (L2 on the LM's final hidden states)",
    released_model_types=(),
    model_fields=_frozen({**PAPER.model_fields, **LITERAL_VTR}),
)

# Every value is read from github.com/deepglint/Victor (commit ecd1a30); docs/METHOD.md section 7 gives file and line.
VICTOR = CrocPreset(
    name="victor",
    description="the released ViCToR code (the paper's successor)",
    # `llava_qwen` is the LLaVA-NeXT fork's model type of ViCToR's checkpoints (llava_qwen.py L36-37).
    released_model_types=("llava_qwen",),
    model_fields=_frozen({
        "prompt_pool_size": 2048,  # train.py L74 (mm_pool_size), not overridden by the stage-1.5 scripts
        "prompt_pool_init": "normal",  # llava_arch.py L49, L67: torch.randn
        "mask_ratio": 0.75,
        "mask_rounding": "keep_floor",  # llava_arch.py L206-207: feat_num // 4 kept, the rest masked
        "token_matching": "hungarian",  # llava_arch.py L605-609: scipy linear_sum_assignment on torch.cdist
        "matching_scope": "row",  # llava_arch.py L603-615: one problem per sample, all its masked tokens
        "bidirectional_span": "none",  # no custom mask; trains with FlashAttention-2 (train.py L169)
        "vtr_loss_weight": 10.0,  # llava_qwen.py L129
        "vtr_loss": "smooth_l1",  # llava_qwen.py L129, beta 0.01 (vtr_smooth_l1_beta's default)
        "vtr_positions": "all",  # llava_qwen.py L118, L126-129: every image position
        "vtr_prediction": "final_norm",  # llava_qwen.py L101, L115: hidden_states[-1], after the final norm
        "vtr_head": "linear",  # llava_qwen.py L59, L119: img_head = nn.Linear(hidden, hidden)
        # The visual tokens are L2-normalised (normalize_visual_tokens), so the targets already are.
        "vtr_target_normalization": "none",
        "vtr_head_layers": 1,  # unused by the linear head
        "normalize_visual_tokens": True,  # llava_arch.py L200, in encode_images: training and inference
    }),
    # Neither train.py nor the scripts set the betas: transformers' default.
    adam_betas=(0.9, 0.999),
    # stage1_pretrain_siglip.sh L28, L41; stage1.5_caption_siglip_qwen_victor.sh L29-31, L49 (the projector and the
    # img_head take --learning_rate: llava_trainer.py L405-412 maps only the tower and the pool to their own rates);
    # stage2_finetune_siglip_qwen.sh L28-29, L47.
    learning_rates=_frozen({
        "1": {"projector": 1e-3},
        "1.5": {"projector": 1e-5, "prompt_pool": 1.5e-4, "vtr_head": 1e-5, "language_model": 1e-5,
                "vision_tower": 2e-6},
        "2": {"projector": 1e-5, "language_model": 1e-5, "vision_tower": 2e-6},
    }),
)

CROC_PRESETS: Mapping[str, CrocPreset] = MappingProxyType(
    {preset.name: preset for preset in (PAPER, PAPER_LITERAL, OFFICIAL, VICTOR)}
)
CROC_PRESET_NAMES: tuple[str, ...] = tuple(CROC_PRESETS)


def get_preset(name: str) -> CrocPreset:
    """The preset called `name`."""
    try:
        return CROC_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown croc_preset {name!r}; known: {', '.join(CROC_PRESET_NAMES)}") from None


def preset_for_released_model_type(model_type: str | None) -> str:
    """The preset a released checkpoint of `model_type` was trained with (`paper` when no preset claims it)."""
    for preset in CROC_PRESETS.values():
        if model_type in preset.released_model_types:
            return preset.name
    return PAPER.name


__all__ = [
    "LITERAL_VTR",
    "PAPER_LITERAL",
    "CROC_PRESETS",
    "CROC_PRESET_NAMES",
    "OFFICIAL",
    "PAPER",
    "VICTOR",
    "CrocPreset",
    "get_preset",
    "preset_for_released_model_type",
]
