"""Croc on Qwen3-VL: a `Qwen3VLConfig` (native-resolution images, M-RoPE positions, a 2x2 patch merger and the
DeepStack mergers) with the Croc fields of `CrocFieldsMixin`, defined and checked there once for every Croc config
class."""

from huggingface_hub.dataclasses import strict
from transformers import Qwen3VLConfig

from .configuration_croc import CrocFieldsMixin


class CrocQwen3VLConfigMixin:
    """What a Qwen3-VL Croc config declares beyond the Croc fields, shared by the dense and the MoE families (their
    vision side is the same): each image has its own merged-token count."""

    croc_variable_token_count = True

    def visual_tokens_per_image(self) -> int:
        """The fewest visual tokens an image can have: one merged window of `spatial_merge_size**2` patches."""
        return 1


@strict
class CrocQwen3VLConfig(CrocQwen3VLConfigMixin, CrocFieldsMixin, Qwen3VLConfig):
    r"""
    Configuration of a Croc model on `Qwen3VLForConditionalGeneration`: the Qwen3-VL fields (vision tower, patch
    merger, DeepStack layers `deepstack_visual_indexes`, M-RoPE sections, the image and vision-start tokens) plus the
    Croc fields of `CrocFieldsMixin`.

    An image's visual tokens are the final merger's outputs (what the language model reads at the `<|image_pad|>`
    positions): `t * h * w / spatial_merge_size**2` for its patch grid `image_grid_thw = (t, h, w)`, so images of
    one batch have different counts; stage 1.5 masks, matches and reconstructs each image with its own count. The
    DeepStack features (one per `deepstack_visual_indexes` entry, added to the first decoder layers' outputs at the
    visual positions) are not visual tokens: they are neither replaced nor reconstructed, and a replaced token's are
    withheld from the language model (zeros). The construction-time check of the pool size uses one merged token;
    larger images are checked when they arrive.
    """

    model_type = "croc_qwen3_vl"


__all__ = ["CrocQwen3VLConfig", "CrocQwen3VLConfigMixin"]
