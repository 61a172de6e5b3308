"""Croc on Qwen2-VL: a `Qwen2VLConfig` (native-resolution images, M-RoPE positions, a 2x2 patch merger) with the
Croc fields of `CrocFieldsMixin`; what it declares beyond them is Qwen2.5-VL's (`CrocQwen2_5_VLConfigMixin`)."""

from huggingface_hub.dataclasses import strict
from transformers import Qwen2VLConfig

from .configuration_croc import CrocFieldsMixin
from .configuration_croc_qwen2_5_vl import CrocQwen2_5_VLConfigMixin


@strict
class CrocQwen2VLConfig(CrocQwen2_5_VLConfigMixin, CrocFieldsMixin, Qwen2VLConfig):
    r"""
    Configuration of a Croc model on `Qwen2VLForConditionalGeneration` (Qwen2-VL-2B / 7B / 72B): the Qwen2-VL fields
    (vision tower, patch merger, M-RoPE sections, the image and vision-start tokens) plus the Croc fields of
    `CrocFieldsMixin`. Images are counted as Qwen2.5-VL's (`CrocQwen2_5_VLConfig`): `t * h * w /
    spatial_merge_size**2` merged tokens for the patch grid `image_grid_thw = (t, h, w)`. Qwen2-VL's vision config
    names its widths otherwise (`embed_dim` the tower's, `hidden_size` the merger's output, the language model's),
    read by the parent as it reads them.
    """

    model_type = "croc_qwen2_vl"


__all__ = ["CrocQwen2VLConfig"]
