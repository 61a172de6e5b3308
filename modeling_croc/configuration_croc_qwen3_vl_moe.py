"""Croc on Qwen3-VL-MoE: a `Qwen3VLMoeConfig` (Qwen3-VL's vision side, DeepStack and M-RoPE, with a mixture-of-experts
text model) with the Croc fields of `CrocFieldsMixin`; what it declares beyond them is Qwen3-VL's
(`CrocQwen3VLConfigMixin`)."""

from huggingface_hub.dataclasses import strict
from transformers import Qwen3VLMoeConfig

from .configuration_croc import CrocFieldsMixin
from .configuration_croc_qwen3_vl import CrocQwen3VLConfigMixin


@strict
class CrocQwen3VLMoeConfig(CrocQwen3VLConfigMixin, CrocFieldsMixin, Qwen3VLMoeConfig):
    r"""
    Configuration of a Croc model on `Qwen3VLMoeForConditionalGeneration` (Qwen3-VL-30B-A3B and the like): the
    Qwen3-VL-MoE fields plus the Croc fields of `CrocFieldsMixin`. Images, their merged-token counts and DeepStack
    are Qwen3-VL's (`CrocQwen3VLConfig`); the text model's experts and router (`text_config.num_experts`,
    `num_experts_per_tok`, `output_router_logits`, `router_aux_loss_coef`) are the parent's, read as it reads them.
    """

    model_type = "croc_qwen3_vl_moe"


__all__ = ["CrocQwen3VLMoeConfig"]
