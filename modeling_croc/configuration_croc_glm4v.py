"""Croc on GLM-4.1V: a `Glm4vConfig` (native-resolution images in 14-px patches, M-RoPE positions, a 2x2 patch
merger) with the Croc fields of `CrocFieldsMixin`; what it declares beyond them is Qwen2.5-VL's
(`CrocQwen2_5_VLConfigMixin`: each image has its own merged-token count, counted the same way)."""

from huggingface_hub.dataclasses import strict
from transformers import Glm4vConfig

from .configuration_croc import CrocFieldsMixin
from .configuration_croc_qwen2_5_vl import CrocQwen2_5_VLConfigMixin


@strict
class CrocGlm4vConfig(CrocQwen2_5_VLConfigMixin, CrocFieldsMixin, Glm4vConfig):
    r"""
    Configuration of a Croc model on `Glm4vForConditionalGeneration` (GLM-4.1V-9B-Thinking, GLM-4.1V-9B-Base): the
    GLM-4.1V fields (vision tower, downsampling merger, M-RoPE sections, the `<|image|>` token and the
    `<|begin_of_image|>` / `<|end_of_image|>` tokens around it) plus the Croc fields of `CrocFieldsMixin`. Images are
    counted as Qwen2.5-VL's (`CrocQwen2_5_VLConfig`): `t * h * w / spatial_merge_size**2` merged tokens for the
    patch grid `image_grid_thw = (t, h, w)`.
    """

    model_type = "croc_glm4v"


__all__ = ["CrocGlm4vConfig"]
