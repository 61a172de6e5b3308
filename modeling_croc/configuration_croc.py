"""Croc configuration: the Croc fields (`CrocFieldsMixin`, shared by every Croc config class) and `CrocConfig`, a
`LlavaConfig` with them."""


import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from huggingface_hub.dataclasses import strict
from transformers import LlavaConfig

from .presets import CROC_PRESET_NAMES, get_preset


class CrocConfigError(ValueError):
    """A Croc field value the model cannot run with, found when a Croc config is constructed (before any weight is
    read), so callers such as the trainer can report it as a configuration mistake rather than a crash."""


# `keep_floor` rounds the kept share (1 - mask_ratio) * T to this many decimals before its floor: in binary
# 1 - 0.9 is 0.09999999999999998, so a bare floor keeps 0 of 10 tokens (every token masked) and 9 of 100, where the
# ratio as written keeps 1 and 10. The float error (~1e-16 * T) is far below the rounding, so the count is exact for
# any ratio written with up to 6 decimals, and the two paths (`num_masked_tokens`, `..._per_image`) agree.
KEPT_DECIMALS = 6


@dataclass(kw_only=True, repr=False)
class CrocFieldsMixin:
    r"""
    The Croc fields of a configuration and their checks, shared by every Croc config class (`CrocConfig` on
    `LlavaConfig`, `CrocOnevisionConfig` on `LlavaOnevisionConfig`), so each field is defined and checked once.
    Every field left at `None` is filled from `croc_preset`; fields passed explicitly win over the preset.

    Args:
        croc_preset (`str`, defaults to `"paper"`):
            Which preset of `modeling_croc.presets.CROC_PRESETS` fills the unset Croc fields: `paper`, `official`
            (the released Croc code) or `victor` (the released ViCToR code).
        croc_pretraining (`bool`, defaults to `False`):
            Turns the stage-1.5 objectives (masking, prompt pool, mixed attention, VTR loss) on in training
            forwards. Evaluation forwards and `generate` always run the plain parent model.
        prompt_pool_size (`int`):
            Number of learnable prompt tokens N (2048). Must be at least the number of masked tokens of one
            matching group (an image, or a row: `matching_scope`) when `token_matching="hungarian"` (one-to-one
            assignment).
        prompt_pool_init (`"visual_stats"` or `"normal"`):
            `normal`: N(0, 1) as the released code. `visual_stats`: drawn with the per-feature mean and std of the
            visual tokens (`calibrate_prompt_pool`); until calibrated the pool is N(0, initializer_range).
        prompt_pool_calibrated (`bool`, defaults to `False`):
            Set once `calibrate_prompt_pool` ran, so a resumed or chained run does not draw the pool again.
        mask_ratio (`float`):
            Share of each image's visual tokens replaced by pool tokens (0.75).
        mask_rounding (`"nearest"` or `"keep_floor"`):
            How `mask_ratio` of T tokens becomes a count: `round(mask_ratio * T)`, or `T - floor((1 - mask_ratio)
            * T)` as the released code (`T - T // 4`); they differ when `mask_ratio * T` ends in .5 (T = 6, 14, 30).
        token_matching (`"hungarian"` or `"nearest"`):
            Exact one-to-one minimum-L2 assignment, or nearest pool token (many-to-one).
        matching_scope (`"image"` or `"row"`):
            Which masked tokens share one Hungarian problem (pool ids distinct within it): each image's (the
            paper, read as one problem per image), or all images of a batch row together (ViCToR's per-sample
            `linear_sum_assignment`). No effect on `"nearest"`.
        bidirectional_span (`"image"`, `"prompt"` or `"none"`):
            Which tokens see each other bidirectionally in stage 1.5: each image's visual tokens (paper), everything
            before the first supervised token (released code), or nothing (plain causal; any attention backend).
        vtr_loss_weight (`float`):
            alpha in L = alpha * L_VTR + L_DCG (10).
        vtr_loss (`"l2"`, `"smooth_l1"`, `"mse"` or `"cosine"`):
            Distance between predicted and original visual tokens: per-token L2 norm (eq. 3), SmoothL1 with
            `vtr_smooth_l1_beta`, squared error, or cosine distance (1 - cosine similarity, blind to scale);
            always averaged over the selected tokens.
        vtr_prediction (`"final_norm"` or `"last_layer"`):
            Where the prediction is read: the LM's final hidden states, after its final norm (whose output has norm
            about sqrt(hidden_size) x its gain), or the last decoder layer's output, before that norm.
        vtr_head (`"none"`, `"linear"` or `"bert"`):
            What maps the prediction to the target space: nothing, one linear layer (as ViCToR), or the released
            code's BERT-layer head (`vtr_head_layers` layers).
        vtr_target_normalization (`"none"`, `"l2"` or `"standardize"`):
            Per-token normalisation of the targets: none, unit L2 norm (as the released code and ViCToR, whose
            visual tokens are L2-normalised), or zero mean and unit variance over the features (MAE's
            `norm_pix_loss`). The prediction is not normalised: the model learns the target's scale.
        vtr_smooth_l1_beta (`float`, defaults to 0.01):
            Beta of the SmoothL1 distance (released code: 0.01).
        vtr_positions (`"masked"` or `"all"`):
            Reconstruct only the replaced tokens (eq. 3) or every visual token.
        vtr_head_layers (`int`):
            BERT-style encoder layers of the `"bert"` head (a learned position embedding, these layers, a linear
            layer); the released code uses 1.
        vtr_head_dropout (`float`, defaults to 0.1):
            Dropout inside the VTR head's encoder layers (BERT's default, as in the released code).
        normalize_visual_tokens (`bool`):
            L2-normalise each projected visual token (released code), at inference too.
    """

    croc_preset: str = "paper"
    croc_pretraining: bool = False
    prompt_pool_size: int | None = None
    prompt_pool_init: Literal["visual_stats", "normal"] | None = None
    prompt_pool_calibrated: bool = False
    mask_ratio: float | None = None
    mask_rounding: Literal["nearest", "keep_floor"] | None = None
    token_matching: Literal["hungarian", "nearest"] | None = None
    matching_scope: Literal["image", "row"] | None = None
    bidirectional_span: Literal["image", "prompt", "none"] | None = None
    vtr_loss_weight: float | None = None
    vtr_loss: Literal["l2", "smooth_l1", "mse", "cosine"] | None = None
    vtr_smooth_l1_beta: float = 0.01
    vtr_positions: Literal["masked", "all"] | None = None
    vtr_prediction: Literal["final_norm", "last_layer"] | None = None
    vtr_head: Literal["none", "linear", "bert"] | None = None
    vtr_target_normalization: Literal["none", "l2", "standardize"] | None = None
    vtr_head_layers: int | None = None
    vtr_head_dropout: float = 0.1
    normalize_visual_tokens: bool | None = None

    def __post_init__(self, **kwargs):
        if self.croc_preset not in CROC_PRESET_NAMES:
            raise CrocConfigError(f"croc_preset must be one of {CROC_PRESET_NAMES}, got {self.croc_preset!r}")
        for name, value in get_preset(self.croc_preset).model_fields.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        super().__post_init__(**kwargs)
        self._check_croc_fields()

    # Whether images of this family have different token counts (AnyRes crops, native resolution): then the
    # construction-time pool check uses `visual_tokens_per_image` (the fewest), larger images are checked when they
    # arrive, and the released code's head (one position embedding per token of a fixed-size image) cannot be used.
    croc_variable_token_count: ClassVar[bool] = False

    def visual_tokens_per_image(self) -> int:
        """Visual tokens of one image as the config describes it (for a variable-count model: the fewest)."""
        raise NotImplementedError

    def _check_croc_fields(self) -> None:
        """Fail at construction, before any compute, on values the model cannot run with."""
        if self.croc_variable_token_count and self.vtr_head == "bert":
            raise CrocConfigError(
                f"vtr_head='bert' (the released Croc head) learns one position embedding per visual token of a "
                f"fixed-size image; {self.model_type} images have a different number of tokens each. Use "
                f"vtr_head='linear' (as ViCToR) or 'none'."
            )
        if self.prompt_pool_size < 1:
            raise CrocConfigError(f"prompt_pool_size must be >= 1, got {self.prompt_pool_size}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise CrocConfigError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.vtr_loss_weight < 0:
            raise CrocConfigError(f"vtr_loss_weight must be >= 0, got {self.vtr_loss_weight}")
        if self.vtr_smooth_l1_beta <= 0:
            raise CrocConfigError(f"vtr_smooth_l1_beta must be > 0, got {self.vtr_smooth_l1_beta}")
        if not 0.0 <= self.vtr_head_dropout < 1.0:
            raise CrocConfigError(f"vtr_head_dropout must be in [0, 1), got {self.vtr_head_dropout}")
        if self.vtr_head_layers < 0:
            raise CrocConfigError(f"vtr_head_layers must be >= 0, got {self.vtr_head_layers}")
        if self.vtr_head == "bert" and self.vtr_head_layers < 1:
            raise CrocConfigError("vtr_head='bert' needs vtr_head_layers >= 1")
        tokens = self.visual_tokens_per_image()
        masked = self.num_masked_tokens(tokens)
        if self.token_matching == "hungarian" and masked > self.prompt_pool_size:
            raise CrocConfigError(
                f"Hungarian matching is one-to-one: {masked} masked tokens per image (mask_ratio={self.mask_ratio} "
                f"of {tokens} visual tokens) need prompt_pool_size >= {masked}, got {self.prompt_pool_size}"
            )

    def num_masked_tokens(self, num_image_tokens: int) -> int:
        """How many of an image's `num_image_tokens` visual tokens stage 1.5 replaces (see `mask_rounding`)."""
        if self.mask_rounding == "keep_floor":
            return num_image_tokens - math.floor(round((1.0 - self.mask_ratio) * num_image_tokens, KEPT_DECIMALS))
        return int(round(self.mask_ratio * num_image_tokens))

    def num_masked_tokens_per_image(self, num_image_tokens: torch.Tensor) -> torch.LongTensor:
        """`num_masked_tokens` of every entry of the integer tensor `num_image_tokens`, without a Python loop.

        The rounding is done in float64, which is exact for any token count a model can hold; `nearest` rounds
        half to even, as Python's `round`.
        """
        counts = num_image_tokens.to(torch.float64)
        if self.mask_rounding == "keep_floor":
            masked = counts - torch.floor(torch.round((1.0 - self.mask_ratio) * counts, decimals=KEPT_DECIMALS))
        else:
            masked = torch.round(self.mask_ratio * counts)
        return masked.to(torch.long)


# The Croc fields: what a training run may set through `croc_overrides`, what a preset may fill.
CROC_FIELD_NAMES: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(CrocFieldsMixin))


@strict
class CrocConfig(CrocFieldsMixin, LlavaConfig):
    r"""
    Configuration of a Croc model: LLaVA-1.5 (vision tower -> 2-layer MLP projector -> causal LM) with the
    stage-1.5 objectives of Croc. The Croc fields are those of `CrocFieldsMixin`; the rest is `LlavaConfig`.
    `image_seq_length` is derived from the vision tower.
    """

    model_type = "croc"

    def _check_croc_fields(self) -> None:
        self.image_seq_length = self._derived_image_seq_length()
        super()._check_croc_fields()

    def visual_tokens_per_image(self) -> int:
        return self.image_seq_length

    def _derived_image_seq_length(self) -> int:
        # LLaVA's token count follows from the vision tower; deriving it keeps the VTR head and the masking
        # consistent with any tower instead of trusting a hard-coded 576.
        image_size = getattr(self.vision_config, "image_size", None)
        patch_size = getattr(self.vision_config, "patch_size", None)
        if not image_size or not patch_size:
            return self.image_seq_length
        num_patches = (image_size // patch_size) ** 2
        return num_patches + (1 if self.vision_feature_select_strategy == "full" and _has_cls_token(self.vision_config)
                              else 0)


def _has_cls_token(vision_config) -> bool:
    """Whether the tower prepends a class token to its patch tokens (CLIP does; SigLIP and SigLIP2 do not)."""
    return "siglip" not in str(getattr(vision_config, "model_type", ""))


__all__ = ["CROC_FIELD_NAMES", "CrocConfig", "CrocConfigError", "CrocFieldsMixin"]
