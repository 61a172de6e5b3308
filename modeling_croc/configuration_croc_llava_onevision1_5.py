"""Croc on LLaVA-OneVision-1.5: a `LlavaOnevision15Config` (a RICE-ViT vision tower at native resolution with a 2x2
patch merger, a Qwen3 text model on plain 1D positions) with the Croc fields of `CrocFieldsMixin`; what it declares
beyond them is Qwen2.5-VL's (`CrocQwen2_5_VLConfigMixin`), whose merger counts an image's tokens the same way."""

from huggingface_hub.dataclasses import strict
from transformers import LlavaOnevision15Config

from .configuration_croc import CrocFieldsMixin
from .configuration_croc_qwen2_5_vl import CrocQwen2_5_VLConfigMixin


@strict
class CrocLlavaOnevision15Config(CrocQwen2_5_VLConfigMixin, CrocFieldsMixin, LlavaOnevision15Config):
    r"""
    Configuration of a Croc model on `LlavaOnevision15ForConditionalGeneration` (LLaVA-OneVision-1.5-4B / 8B): the
    LLaVA-OneVision-1.5 fields (vision tower, patch merger, the image and vision-start tokens, a Qwen3 text config)
    plus the Croc fields of `CrocFieldsMixin`. Images are counted as Qwen2.5-VL's (`CrocQwen2_5_VLConfig`):
    `t * h * w / spatial_merge_size**2` merged tokens for the patch grid `image_grid_thw = (t, h, w)` (the tower's
    per-frame class token is dropped before the merger).
    """

    model_type = "croc_llava_onevision1_5"


__all__ = ["CrocLlavaOnevision15Config"]
