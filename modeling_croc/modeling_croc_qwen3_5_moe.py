"""Croc on Qwen3.5-MoE: `Qwen3_5MoeForConditionalGeneration` (Qwen3.5-35B-A3B and the like) with the stage-1.5
objectives.

Inference is exactly `Qwen3_5MoeForConditionalGeneration`. It is Qwen3.5 (`modeling_croc_qwen3_5.py`) with a mixture
of experts in every decoder layer (routed experts fused into two parameters, plus a gated shared expert), written in
transformers as Qwen3-VL-MoE's generation model is: so the base model declares what Qwen3.5's declares
(`CrocQwen3_5ModelMixin`: Qwen3-VL's images without DeepStack, the packing refusal; the hybrid attention is read from
`text_config.layer_types` by the mechanism), and the generation model what Qwen3-VL's declares of its images
(`CrocQwen3VLForConditionalGenerationMixin`) and Qwen3-VL-MoE's router auxiliary loss (`CrocRouterAuxLossMixin`:
with `output_router_logits`, stages 1 and 2 give the parent's loss exactly and stage 1.5's is
`lm_loss + router_aux_loss_coef * aux_loss + vtr_loss_weight * vtr_loss`, weighted by the micro-batch's share of the
step). Its outputs have Qwen3-VL-MoE's fields, so they are Qwen3-VL-MoE's Croc outputs. The family's declaration is
this file; the mechanism is `stage15.py`.
"""

from transformers import Qwen3_5MoeForConditionalGeneration, Qwen3_5MoeModel
from transformers.models.qwen3_5_moe.modeling_qwen3_5_moe import (
    Qwen3_5MoePreTrainedModel,
    load_balancing_loss_func,
)

from .configuration_croc_qwen3_5_moe import CrocQwen3_5MoeConfig
from .modeling_croc_qwen3_5 import CrocQwen3_5ConstructionMixin, CrocQwen3_5ModelMixin
from .modeling_croc_qwen3_vl import CrocQwen3VLForConditionalGenerationMixin
from .modeling_croc_qwen3_vl_moe import CrocQwen3VLMoeModelOutputWithPast, CrocRouterAuxLossMixin
from .parent_wiring import croc_auto_classes_of, register_croc_checkpoint_renames
from .stage15 import CrocPreTrainedMixin


class CrocQwen3_5MoePreTrainedModel(CrocPreTrainedMixin, Qwen3_5MoePreTrainedModel):
    config: CrocQwen3_5MoeConfig
    croc_auto_classes = croc_auto_classes_of("qwen3_5_moe", {
        "Qwen3_5MoeModel": "CrocQwen3_5MoeModel",
        "Qwen3_5MoeForConditionalGeneration": "CrocQwen3_5MoeForConditionalGeneration"})


class CrocQwen3_5MoeModel(CrocQwen3_5ModelMixin, CrocQwen3_5MoePreTrainedModel, Qwen3_5MoeModel):
    """`Qwen3_5MoeModel` with the prompt pool and the stage-1.5 input path (`CrocModelMixin`), declared as Qwen3.5's
    (`CrocQwen3_5ModelMixin`); its output carries the router logits."""

    croc_output_class = CrocQwen3VLMoeModelOutputWithPast


class CrocQwen3_5MoeForConditionalGeneration(CrocQwen3_5ConstructionMixin, CrocRouterAuxLossMixin,
                                             CrocQwen3VLForConditionalGenerationMixin, CrocQwen3_5MoePreTrainedModel,
                                             Qwen3_5MoeForConditionalGeneration):
    """Croc on Qwen3.5-MoE for generation and the three training stages. With `config.croc_pretraining` off (stages
    1 and 2, inference) this is `Qwen3_5MoeForConditionalGeneration`, its router's auxiliary loss included; in a
    stage-1.5 training forward the output also carries `lm_loss`, `vtr_loss` and `pool_ids`, the bidirectional span
    applies on the full-attention layers only, and the loss adds the VTR term to the parent's (module docstring)."""

    croc_base_model_class = CrocQwen3_5MoeModel
    # This module's own function (the same computation as Qwen3-VL-MoE's), so the term is the parent's to the bit.
    croc_load_balancing_loss = staticmethod(load_balancing_loss_func)


register_croc_checkpoint_renames(CrocQwen3_5MoeForConditionalGeneration, Qwen3_5MoeForConditionalGeneration)
register_croc_checkpoint_renames(CrocQwen3_5MoeModel, Qwen3_5MoeModel)


__all__ = [
    "CrocQwen3_5MoeForConditionalGeneration",
    "CrocQwen3_5MoeModel",
    "CrocQwen3_5MoePreTrainedModel",
]
