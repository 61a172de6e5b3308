"""Croc on Qwen3-VL-MoE: `Qwen3VLMoeForConditionalGeneration` (Qwen3-VL-30B-A3B and the like) with the stage-1.5
objectives.

Inference is exactly `Qwen3VLMoeForConditionalGeneration`. Its vision side, DeepStack and M-RoPE are Qwen3-VL's, so
the base model declares what `CrocQwen3VLModel` declares (`CrocQwen3VLModelMixin`: the image grids, the DeepStack
inputs of a stage-1.5 forward, the per-image token counts, the packing refusal); only the text model differs, a
mixture of experts whose router the parent can regularise.

The router's auxiliary loss: with `output_router_logits` (the forward's argument, else `text_config`'s; off in the
parent's defaults) the parent returns `aux_loss`, the load-balancing loss of the router logits of every decoder
layer (padding left out by `attention_mask`), and in a forward with labels adds `router_aux_loss_coef * aux_loss` to
its loss. Croc does the same from the same router logits (`croc_auxiliary_loss`): stages 1 and 2 give the parent's
loss exactly; stage 1.5's is `lm_loss + router_aux_loss_coef * aux_loss + vtr_loss_weight * vtr_loss`, the router
logits being those of the stage-1.5 forward (a replaced position is routed on its pool token, as it is trained).
`lm_loss` stays the next-token loss alone; `aux_loss` is in the output. Given the Trainer's `num_items_in_batch`,
the term is weighted by the micro-batch's share of the step's tokens (`stage15.share_of_step`). The family's
declaration is this file; the mechanism is `stage15.py`.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import Qwen3VLMoeForConditionalGeneration, Qwen3VLMoeModel
from transformers.models.qwen3_vl_moe.modeling_qwen3_vl_moe import (
    Qwen3VLMoeBaseModelOutputWithPast,
    Qwen3VLMoeCausalLMOutputWithPast,
    Qwen3VLMoePreTrainedModel,
    load_balancing_loss_func,
)
from transformers.utils import ModelOutput

from .configuration_croc_qwen3_vl_moe import CrocQwen3VLMoeConfig
from .modeling_croc_qwen3_vl import CrocQwen3VLModelMixin
from .parent_wiring import croc_auto_classes_of, register_croc_checkpoint_renames
from .stage15 import (
    CrocCausalLMOutputFields,
    CrocForConditionalGenerationMixin,
    CrocModelOutputFields,
    CrocPreTrainedMixin,
)


@dataclass
class CrocQwen3VLMoeModelOutputWithPast(CrocModelOutputFields, Qwen3VLMoeBaseModelOutputWithPast):
    """Qwen3-VL-MoE's base-model output (router logits included) plus what the stage-1.5 losses need."""


@dataclass
class CrocQwen3VLMoeCausalLMOutputWithPast(CrocCausalLMOutputFields, Qwen3VLMoeCausalLMOutputWithPast):
    """Qwen3-VL-MoE's causal-LM output (`aux_loss`, `router_logits`) plus the Croc loss terms and the pool
    assignment."""


class CrocQwen3VLMoePreTrainedModel(CrocPreTrainedMixin, Qwen3VLMoePreTrainedModel):
    config: CrocQwen3VLMoeConfig
    croc_auto_classes = croc_auto_classes_of("qwen3_vl_moe", {
        "Qwen3VLMoeModel": "CrocQwen3VLMoeModel",
        "Qwen3VLMoeForConditionalGeneration": "CrocQwen3VLMoeForConditionalGeneration"})


class CrocQwen3VLMoeModel(CrocQwen3VLModelMixin, CrocQwen3VLMoePreTrainedModel, Qwen3VLMoeModel):
    """`Qwen3VLMoeModel` with the prompt pool and the stage-1.5 input path (`CrocModelMixin`), DeepStack included,
    as Qwen3-VL's (`CrocQwen3VLModelMixin`)."""

    croc_output_class = CrocQwen3VLMoeModelOutputWithPast


class CrocRouterAuxLossMixin(CrocForConditionalGenerationMixin):
    """The mechanism's generation model with a mixture of experts' router auxiliary loss taken as the parent takes it
    (module docstring), shared by every family whose parent is Qwen3-VL-MoE's generation model or one written after
    it (Qwen3.5-MoE, `modeling_croc_qwen3_5_moe.py`): the output class carrying `aux_loss` and `router_logits`, the
    forward argument read from the text config, and the term itself through the parent's own function
    (`croc_load_balancing_loss`, the family's module's `load_balancing_loss_func`)."""

    croc_output_class = CrocQwen3VLMoeCausalLMOutputWithPast
    # The router logits are recorded (and the auxiliary loss computed) as the argument, else the text config, says.
    croc_text_config_defaults = ("output_router_logits",)
    croc_load_balancing_loss: Callable[..., torch.Tensor] = staticmethod(load_balancing_loss_func)

    def croc_auxiliary_loss(self, outputs: ModelOutput, attention_mask: torch.Tensor | None,
                            output_router_logits: bool = False, **kwargs) -> tuple[torch.Tensor, float] | None:
        """The parent's router load-balancing loss and `router_aux_loss_coef`, where the parent computes them: with
        `output_router_logits` (the argument, else `text_config.output_router_logits`: `croc_text_config_defaults`)."""
        text = self.config.text_config
        if not output_router_logits:
            return None
        aux_loss = self.croc_load_balancing_loss(outputs.router_logits, text.num_experts, text.num_experts_per_tok,
                                                 attention_mask)
        return aux_loss, text.router_aux_loss_coef


class CrocQwen3VLMoeForConditionalGeneration(CrocRouterAuxLossMixin, CrocQwen3VLMoePreTrainedModel,
                                             Qwen3VLMoeForConditionalGeneration):
    """Croc on Qwen3-VL-MoE for generation and the three training stages. With `config.croc_pretraining` off (stages
    1 and 2, inference) this is `Qwen3VLMoeForConditionalGeneration`, its router's auxiliary loss included; in a
    stage-1.5 training forward the output also carries `lm_loss`, `vtr_loss` and `pool_ids`, every image counted
    with its own merged tokens, and the loss adds the VTR term to the parent's (module docstring,
    `CrocRouterAuxLossMixin`)."""

    croc_base_model_class = CrocQwen3VLMoeModel
    croc_image_layout_inputs = ("image_grid_thw",)


register_croc_checkpoint_renames(CrocQwen3VLMoeForConditionalGeneration, Qwen3VLMoeForConditionalGeneration)
register_croc_checkpoint_renames(CrocQwen3VLMoeModel, Qwen3VLMoeModel)


__all__ = [
    "CrocQwen3VLMoeCausalLMOutputWithPast",
    "CrocQwen3VLMoeModelOutputWithPast",
    "CrocQwen3VLMoeForConditionalGeneration",
    "CrocQwen3VLMoeModel",
    "CrocQwen3VLMoePreTrainedModel",
    "CrocRouterAuxLossMixin",
]
