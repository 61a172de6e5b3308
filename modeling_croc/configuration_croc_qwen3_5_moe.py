"""Croc on Qwen3.5-MoE: a `Qwen3_5MoeConfig` (Qwen3.5's vision side and hybrid text model of Gated DeltaNet and
full-attention layers, every decoder layer's MLP a mixture of experts with a shared expert) with the Croc fields of
`CrocFieldsMixin`; what it declares beyond them is Qwen3.5's (`CrocQwen3_5ConfigMixin`)."""

from huggingface_hub.dataclasses import strict
from transformers import Qwen3_5MoeConfig

from .configuration_croc import CrocFieldsMixin
from .configuration_croc_qwen3_5 import CrocQwen3_5ConfigMixin


@strict
class CrocQwen3_5MoeConfig(CrocQwen3_5ConfigMixin, CrocFieldsMixin, Qwen3_5MoeConfig):
    r"""
    Configuration of a Croc model on `Qwen3_5MoeForConditionalGeneration` (Qwen3.5-35B-A3B and the like): the
    Qwen3.5-MoE fields plus the Croc fields of `CrocFieldsMixin`. Images and their merged-token counts are Qwen3-VL's
    (`CrocQwen3VLConfig`), without DeepStack; the text model's `layer_types` mixes `"linear_attention"` and
    `"full_attention"` layers as Qwen3.5's (`CrocQwen3_5Config`); its experts and router (`text_config.num_experts`,
    `num_experts_per_tok`, `output_router_logits`, `router_aux_loss_coef`) are the parent's, read as it reads them.
    """

    model_type = "croc_qwen3_5_moe"


__all__ = ["CrocQwen3_5MoeConfig"]
