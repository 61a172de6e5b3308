"""Croc on Qwen3.5: a `Qwen3_5Config` (Qwen3-VL's vision side without DeepStack, M-RoPE positions, a hybrid text
model of Gated DeltaNet and full-attention layers) with the Croc fields of `CrocFieldsMixin`; what it declares
beyond them is Qwen3-VL's (`CrocQwen3VLConfigMixin`)."""

from huggingface_hub.dataclasses import strict
from transformers import Qwen3_5Config

from .configuration_croc import CrocFieldsMixin
from .configuration_croc_qwen3_vl import CrocQwen3VLConfigMixin


@strict
class CrocQwen3_5Config(CrocQwen3VLConfigMixin, CrocFieldsMixin, Qwen3_5Config):
    r"""
    Configuration of a Croc model on `Qwen3_5ForConditionalGeneration` (Qwen3.5's image-text checkpoints): the
    Qwen3.5 fields plus the Croc fields of `CrocFieldsMixin`. Images and their merged-token counts are Qwen3-VL's
    (`CrocQwen3VLConfig`); there is no DeepStack. The text model's `text_config.layer_types` mixes
    `"linear_attention"` (Gated DeltaNet, a causal recurrence) and `"full_attention"` layers: Croc's bidirectional
    span applies on the full-attention layers only (`modeling_croc_qwen3_5.py`).
    """

    model_type = "croc_qwen3_5"


__all__ = ["CrocQwen3_5Config"]
