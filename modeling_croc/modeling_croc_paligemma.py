"""Croc on PaliGemma: `PaliGemmaForConditionalGeneration` (PaliGemma 1 on Gemma, PaliGemma 2 on Gemma 2, told apart
by the text config alone) with the stage-1.5 objectives.

Inference is exactly `PaliGemmaForConditionalGeneration`: its prefix-LM mask (every token whose `token_type_ids` is
0, the images and the prefix text, one bidirectional block; the suffix causal), its 1-based positions, its
generation hooks (generated tokens are suffix, type 1) and its logits, soft-capped where the text config says so
(Gemma 2's `final_logit_softcapping`). In a stage-1.5 training forward the visual tokens the pool replaces are the
projector's outputs, one per patch, and the language model receives Croc's mixed mask in place of the prefix-LM mask
PaliGemma builds from `token_type_ids` (which still reach the parent's forward unchanged): Croc's
`bidirectional_span` rules there. `"image"` makes each image's run of `<image>` tokens a block and the prefix text
causal; `"prompt"` makes everything before the first supervised token one block, which on PaliGemma's rows (labels
on the suffix only) is the prefix-LM mask of its global layers; `"none"` is plain causal. On a sliding layer of
Gemma 2 the window holds inside a block, as Croc's mixed mask composes every family's (PaliGemma's own sliding mask
lets its prefix block reach past the window: the two differ only for a prefix longer than the window).

Gemma and Gemma 2 under PaliGemma attend non-causally when given no mask (PaliGemma's config sets the text config's
`use_bidirectional_attention`, which turns their attention modules' `is_causal` off): the causal mask stage 1.5
builds for `"none"` is explicit here (`croc_explicit_causal_mask`), so sdpa cannot skip it. The family's declaration
is this file; the mechanism is `stage15.py`.
"""

from dataclasses import dataclass

import torch
from transformers import PaliGemmaForConditionalGeneration, PaliGemmaModel
from transformers.models.paligemma.modeling_paligemma import (
    PaliGemmaCausalLMOutputWithPast,
    PaliGemmaModelOutputWithPast,
    PaliGemmaPreTrainedModel,
)

from .configuration_croc_paligemma import CrocPaliGemmaConfig
from .parent_wiring import croc_auto_classes_of, register_croc_checkpoint_renames
from .stage15 import (
    CrocCausalLMOutputFields,
    CrocForConditionalGenerationMixin,
    CrocModelMixin,
    CrocModelOutputFields,
    CrocPreTrainedMixin,
)

# Packed rows would run on other positions than the parent's: it numbers a sample's tokens from 1 (its forward adds 1
# to the positions it makes, and so does its generation), the packing collator restarts them at 0.
PALIGEMMA_PACKING_REFUSAL = (
    "PaliGemma numbers each sample's positions from 1 (its forward adds 1 to those it makes); packed rows restart "
    "them at 0 per sample. Train it unpacked (packing: false)")


class CrocPaliGemmaPreTrainedModel(CrocPreTrainedMixin, PaliGemmaPreTrainedModel):
    config: CrocPaliGemmaConfig
    croc_auto_classes = croc_auto_classes_of("paligemma", {
        "PaliGemmaModel": "CrocPaliGemmaModel",
        "PaliGemmaForConditionalGeneration": "CrocPaliGemmaForConditionalGeneration"})


@dataclass
class CrocPaliGemmaModelOutputWithPast(CrocModelOutputFields, PaliGemmaModelOutputWithPast):
    """PaliGemma's base-model output plus what the stage-1.5 losses need (`CrocModelOutputFields`)."""


@dataclass
class CrocPaliGemmaCausalLMOutputWithPast(CrocCausalLMOutputFields, PaliGemmaCausalLMOutputWithPast):
    """PaliGemma's causal-LM output plus the Croc loss terms and the pool assignment."""


class CrocPaliGemmaModel(CrocModelMixin, CrocPaliGemmaPreTrainedModel, PaliGemmaModel):
    """`PaliGemmaModel` with the prompt pool and the stage-1.5 input path (`CrocModelMixin`). Its images need nothing
    besides `pixel_values` (fixed size, fixed token count)."""

    croc_output_class = CrocPaliGemmaModelOutputWithPast
    croc_packing_refusal = PALIGEMMA_PACKING_REFUSAL
    croc_explicit_causal_mask = True

    def croc_native_block_ids(self, forward_kwargs: dict):
        # PaliGemma's own mask makes every token of type 0 (images, `<bos>`, the prefix and its newline) one
        # bidirectional block whenever `token_type_ids` are given: croc_split keeps it so in stages 1 and 2.
        token_type_ids = forward_kwargs.get("token_type_ids")
        return None if token_type_ids is None else torch.where(token_type_ids == 0, 0, -1)


register_croc_checkpoint_renames(CrocPaliGemmaModel, PaliGemmaModel)


class CrocPaliGemmaForConditionalGeneration(CrocForConditionalGenerationMixin, CrocPaliGemmaPreTrainedModel,
                                            PaliGemmaForConditionalGeneration):
    """Croc on PaliGemma for generation and the three training stages. With `config.croc_pretraining` off (stages 1
    and 2, inference) this is `PaliGemmaForConditionalGeneration`; in a stage-1.5 training forward the output also
    carries `lm_loss`, `vtr_loss` and `pool_ids`, every image counted with its patch grid's tokens (the shared
    `image_token_counts`, which splits the placeholders equally, is exact here)."""

    croc_base_model_class = CrocPaliGemmaModel
    croc_output_class = CrocPaliGemmaCausalLMOutputWithPast
    # The parent soft-caps its logits wherever its text config has `final_logit_softcapping` (Gemma 2's; Gemma's
    # has none), after its head, as the shared head path does.
    croc_final_logit_softcapping = True


register_croc_checkpoint_renames(CrocPaliGemmaForConditionalGeneration, PaliGemmaForConditionalGeneration)


__all__ = [
    "PALIGEMMA_PACKING_REFUSAL",
    "CrocPaliGemmaCausalLMOutputWithPast",
    "CrocPaliGemmaForConditionalGeneration",
    "CrocPaliGemmaModel",
    "CrocPaliGemmaPreTrainedModel",
]
