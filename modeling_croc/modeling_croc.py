"""Croc: LLaVA-1.5 with the stage-1.5 cross-modal comprehension objectives (arXiv 2410.14332).

Inference is exactly `LlavaForConditionalGeneration` (plus optional L2 normalisation of the visual tokens). In a
training forward with `config.croc_pretraining` on, the model additionally

1. replaces `mask_ratio` of each image's projected visual tokens by tokens of a learnable prompt pool, assigned by
   Hungarian matching or nearest neighbour (`prompt_pool.py`, `matching.py`, `replaced_positions.py`);
2. lets chosen spans attend bidirectionally while text stays causal (`attention_mask.py`);
3. reconstructs the original visual tokens from the last hidden states at the visual positions (VTR loss,
   `losses.py`, optional head in `vtr_head.py`) next to the usual caption loss (DCG):
   `loss = vtr_loss_weight * vtr_loss + lm_loss`.

The stage-1.5 machinery shared with the AnyRes model (`modeling_croc_onevision.py`) lives in `stage15.py`.
"""


from dataclasses import dataclass

from transformers import LlavaForConditionalGeneration, LlavaModel
from transformers.models.llava.modeling_llava import (
    LlavaCausalLMOutputWithPast,
    LlavaModelOutputWithPast,
    LlavaPreTrainedModel,
)

from .configuration_croc import CrocConfig
from .constants import AUTO_MODEL_CLASSES
from .parent_wiring import register_croc_checkpoint_renames
from .stage15 import (
    CrocCausalLMOutputFields,
    CrocForConditionalGenerationMixin,
    CrocModelMixin,
    CrocModelOutputFields,
    CrocPreTrainedMixin,
)


@dataclass
class CrocModelOutputWithPast(CrocModelOutputFields, LlavaModelOutputWithPast):
    """`LlavaModelOutputWithPast` plus what the stage-1.5 losses need (`CrocModelOutputFields`).

    Llava's own fields (the cache, hidden states, the image-encoder output) are inherited, never named here: they
    are copied from the output the parent class or the language model returns, so a renamed upstream field cannot
    break this class.
    """


@dataclass
class CrocCausalLMOutputWithPast(CrocCausalLMOutputFields, LlavaCausalLMOutputWithPast):
    """`LlavaCausalLMOutputWithPast` plus the two Croc loss terms and the pool assignment
    (`CrocCausalLMOutputFields`); `loss` is `vtr_loss_weight * vtr_loss + lm_loss` in stage-1.5 forwards, else the
    LM loss."""


class CrocPreTrainedModel(CrocPreTrainedMixin, LlavaPreTrainedModel):
    config: CrocConfig

    # Every Auto class Llava is registered with, and the class of this file it resolves to (a saved folder's
    # `auto_map`: `CrocPreTrainedMixin.save_pretrained`).
    croc_auto_classes = AUTO_MODEL_CLASSES


class CrocModel(CrocModelMixin, CrocPreTrainedModel, LlavaModel):
    """`LlavaModel` with the prompt pool and the stage-1.5 input path (`CrocModelMixin`): its forward is Llava's,
    or with `croc_objectives` the stage-1.5 forward."""

    croc_output_class = CrocModelOutputWithPast


class CrocForConditionalGeneration(CrocForConditionalGenerationMixin, CrocPreTrainedModel,
                                   LlavaForConditionalGeneration):
    """Croc for image-text-to-text generation and for the three training stages.

    With `config.croc_pretraining` off (stages 1 and 2, inference) this is `LlavaForConditionalGeneration`. In a
    training forward with it on (stage 1.5) the output also carries `lm_loss`, `vtr_loss` and `pool_ids`. The
    forward's arguments are Llava's plus those of `CrocForConditionalGenerationMixin.forward`.
    """

    croc_base_model_class = CrocModel
    croc_output_class = CrocCausalLMOutputWithPast


register_croc_checkpoint_renames(CrocForConditionalGeneration, LlavaForConditionalGeneration)
register_croc_checkpoint_renames(CrocModel, LlavaModel)


__all__ = ["CrocPreTrainedModel", "CrocModel", "CrocForConditionalGeneration", "CrocCausalLMOutputWithPast"]
