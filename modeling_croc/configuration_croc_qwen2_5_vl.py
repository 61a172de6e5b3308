"""Croc on Qwen2.5-VL: a `Qwen2_5_VLConfig` (native-resolution images, M-RoPE positions, a 2x2 patch merger) with
the Croc fields of `CrocFieldsMixin`, defined and checked there once for every Croc config class. What it declares
beyond them (`CrocQwen2_5_VLConfigMixin`) is shared with Qwen2-VL, whose images are counted the same way."""

from huggingface_hub.dataclasses import strict
from transformers import Qwen2_5_VLConfig

from .configuration_croc import CrocFieldsMixin


class CrocQwen2_5_VLConfigMixin:
    """What a Qwen2.5-VL Croc config declares beyond the Croc fields, shared with Qwen2-VL's
    (`configuration_croc_qwen2_vl.py`), whose patch merger counts an image's tokens the same way: each image has its
    own merged-token count."""

    croc_variable_token_count = True

    def visual_tokens_per_image(self) -> int:
        """The fewest visual tokens an image can have: one merged window of `spatial_merge_size**2` patches."""
        return 1


@strict
class CrocQwen2_5_VLConfig(CrocQwen2_5_VLConfigMixin, CrocFieldsMixin, Qwen2_5_VLConfig):
    r"""
    Configuration of a Croc model on `Qwen2_5_VLForConditionalGeneration`: the Qwen2.5-VL fields (vision tower,
    patch merger, M-RoPE sections, the image and vision-start tokens) plus the Croc fields of `CrocFieldsMixin`.

    An image's visual tokens are the merger's outputs: `t * h * w / spatial_merge_size**2` for its patch grid
    `image_grid_thw = (t, h, w)`, so images of one batch have different counts; stage 1.5 masks, matches and
    reconstructs each image with its own count (the pool replaces merged tokens, which are what the language model
    reads). The construction-time check of the pool size uses one merged token; larger images are checked when they
    arrive.
    """

    model_type = "croc_qwen2_5_vl"


__all__ = ["CrocQwen2_5_VLConfig", "CrocQwen2_5_VLConfigMixin"]
