"""Croc configuration: a `LlavaConfig` plus the stage-1.5 (cross-modal comprehension) settings."""


import math
from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import LlavaConfig

from .presets import CROC_PRESET_NAMES, get_preset


class CrocConfigError(ValueError):
    """A Croc field value the model cannot run with, found when a `CrocConfig` is constructed (before any weight is
    read), so callers such as the trainer can report it as a configuration mistake rather than a crash."""


@strict
class CrocConfig(LlavaConfig):
    r"""
    Configuration of a Croc model: LLaVA-1.5 (CLIP vision tower -> 2-layer MLP projector -> Llama-family LM)
    with the stage-1.5 objectives of Croc. Every Croc field left at `None` is filled from `croc_preset`;
    fields passed explicitly win over the preset.

    Args:
        croc_preset (`str`, defaults to `"paper"`):
            Which preset of `modeling_croc.presets.CROC_PRESETS` fills the unset Croc fields: `paper`, or
            `official` (the released code).
        croc_pretraining (`bool`, defaults to `False`):
            Turns the stage-1.5 objectives (masking, prompt pool, mixed attention, VTR loss) on in training
            forwards. Evaluation forwards and `generate` always run plain LLaVA-1.5.
        prompt_pool_size (`int`):
            Number of learnable prompt tokens N (2048). Must be at least the number of masked tokens per image
            when `token_matching="hungarian"` (one-to-one assignment).
        prompt_pool_init (`"visual_stats"` or `"normal"`):
            `normal`: N(0, 1) as the released code. `visual_stats`: drawn with the per-feature mean and std of the
            visual tokens (`CrocForConditionalGeneration.calibrate_prompt_pool`); until calibrated the pool is
            N(0, initializer_range).
        prompt_pool_calibrated (`bool`, defaults to `False`):
            Set once `calibrate_prompt_pool` ran, so a resumed or chained run does not draw the pool again.
        mask_ratio (`float`):
            Share of each image's visual tokens replaced by pool tokens (0.75).
        mask_rounding (`"nearest"` or `"keep_floor"`):
            How `mask_ratio` of T tokens becomes a count: `round(mask_ratio * T)`, or `T - floor((1 - mask_ratio)
            * T)` as the released code (`T - T // 4`); they differ when `mask_ratio * T` ends in .5 (T = 6, 14, 30).
        token_matching (`"hungarian"` or `"nearest"`):
            Exact one-to-one minimum-L2 assignment, or nearest pool token (many-to-one).
        bidirectional_span (`"image"`, `"prompt"` or `"none"`):
            Which tokens see each other bidirectionally in stage 1.5: each image's visual tokens (paper), everything
            before the first supervised token (released code), or nothing (plain causal).
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

    model_type = "croc"

    croc_preset: str = "paper"
    croc_pretraining: bool = False
    prompt_pool_size: int | None = None
    prompt_pool_init: Literal["visual_stats", "normal"] | None = None
    prompt_pool_calibrated: bool = False
    mask_ratio: float | None = None
    mask_rounding: Literal["nearest", "keep_floor"] | None = None
    token_matching: Literal["hungarian", "nearest"] | None = None
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
        self.image_seq_length = self._visual_tokens_per_image()
        self._check_croc_fields()

    def _visual_tokens_per_image(self) -> int:
        # LLaVA's token count follows from the vision tower; deriving it keeps the VTR head and the masking
        # consistent with any tower instead of trusting a hard-coded 576.
        image_size = getattr(self.vision_config, "image_size", None)
        patch_size = getattr(self.vision_config, "patch_size", None)
        if not image_size or not patch_size:
            return self.image_seq_length
        num_patches = (image_size // patch_size) ** 2
        return num_patches + (1 if self.vision_feature_select_strategy == "full" else 0)

    def _check_croc_fields(self) -> None:
        """Fail at construction, before any compute, on values the model cannot run with."""
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
        masked = self.num_masked_tokens(self.image_seq_length)
        if self.token_matching == "hungarian" and masked > self.prompt_pool_size:
            raise CrocConfigError(
                f"Hungarian matching is one-to-one: {masked} masked tokens per image (mask_ratio={self.mask_ratio} "
                f"of image_seq_length={self.image_seq_length}) need prompt_pool_size >= {masked}, "
                f"got {self.prompt_pool_size}"
            )

    def num_masked_tokens(self, num_image_tokens: int) -> int:
        """How many of an image's `num_image_tokens` visual tokens stage 1.5 replaces (see `mask_rounding`)."""
        if self.mask_rounding == "keep_floor":
            return num_image_tokens - math.floor((1.0 - self.mask_ratio) * num_image_tokens)
        return int(round(self.mask_ratio * num_image_tokens))


__all__ = ["CrocConfig", "CrocConfigError"]
