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

import torch
import torch.nn.functional as F
from transformers import LlavaForConditionalGeneration, LlavaModel
from transformers.conversion_mapping import (
    get_checkpoint_conversion_mapping,
    register_checkpoint_conversion_mapping,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.llava.modeling_llava import (
    LlavaCausalLMOutputWithPast,
    LlavaModelOutputWithPast,
    LlavaPreTrainedModel,
)
from transformers.utils.generic import can_return_tuple

from .attention_mask import is_packed_batch, prepare_packed_forward
from .configuration_croc import CrocConfig
from .constants import AUTO_MODEL_CLASSES, CROC_ONLY_PATTERNS
from .prompt_pool import CrocPromptPool
from .stage15 import (
    CrocCausalLMOutputFields,
    CrocForConditionalGenerationMixin,
    CrocModelMixin,
    CrocModelOutputFields,
    CrocPreTrainedMixin,
    fields_declared_by,
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
    # Llava checkpoints (stage 1, or any llava-1.5 conversion) have no pool and no VTR head: they start here.
    _keys_to_ignore_on_load_missing = list(CROC_ONLY_PATTERNS)

    # Every Auto class Llava is registered with, and the class of this file it resolves to (a saved folder's
    # `auto_map`: `CrocPreTrainedMixin.save_pretrained`).
    croc_auto_classes = AUTO_MODEL_CLASSES


class CrocModel(CrocModelMixin, CrocPreTrainedModel, LlavaModel):
    """`LlavaModel` with the prompt pool and the stage-1.5 input path (masking, matching, mixed attention)."""

    def __init__(self, config: CrocConfig):
        super().__init__(config)
        self.prompt_pool = CrocPromptPool(config)
        self.post_init()

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        """Llava's image features (one `(T, D)` tensor per image in `pooler_output`), L2-normalised per token when
        `config.normalize_visual_tokens` (the released code does this at inference too)."""
        outputs = super().get_image_features(pixel_values, **kwargs)
        if self.config.normalize_visual_tokens:
            outputs.pooler_output = [F.normalize(features, dim=-1) for features in outputs.pooler_output]
        return outputs

    def croc_image_features(self, pixel_values: torch.Tensor, **image_inputs) -> list[torch.Tensor]:
        """One `(T, D)` visual-token tensor per image, as the stage-1.5 path and the pool calibration take them."""
        return list(self.get_image_features(pixel_values=pixel_values, return_dict=True).pooler_output)

    # `can_return_tuple` takes `return_dict` (the argument, else `config.return_dict`) off the call and turns the
    # output into `to_tuple()` when it is False: the body below always works on output objects.
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        croc_objectives: bool = False,
        croc_generator: torch.Generator | None = None,
        croc_image_order: torch.LongTensor | None = None,
        **kwargs,
    ) -> CrocModelOutputWithPast:
        """Llava's forward, or with `croc_objectives` the stage-1.5 forward.

        The cache travels in `kwargs` under whatever name the installed transformers uses (`cache` since 5.24,
        `past_key_values` before), straight to Llava's forward.

        Args:
            labels: `(B, L)` aligned with `input_ids`; only read to place the `"prompt"` bidirectional span.
            mm_encoder_outputs: precomputed vision outputs (`{"image": BaseModelOutputWithPooling}`), as in Llava.
            croc_objectives: run the stage-1.5 path (pool replacement and mixed attention).
            croc_generator: seeded generator for the random token mask.
            croc_image_order: `(num_images,)` for a packed batch, each image's rank in the order the batch arrived
                (the collator's `croc_image_order`): the token masks are drawn in that order.
        """
        batch_size = (input_ids if input_ids is not None else inputs_embeds).shape[0]
        if is_packed_batch(attention_mask, position_ids, batch_size):
            prepare_packed_forward(self.config.text_config, batch_size, kwargs)
        if not croc_objectives:
            if self._uses_split_attention(kwargs):
                shape = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
                attention_mask = self._split_attention_inputs(shape, attention_mask, position_ids, kwargs)
            outputs = super().forward(
                input_ids=input_ids,
                pixel_values=pixel_values,
                attention_mask=attention_mask,
                position_ids=position_ids,
                inputs_embeds=inputs_embeds,
                mm_encoder_outputs=mm_encoder_outputs,
                # Explicit: with `config.return_dict=False` the parent would otherwise hand back a tuple.
                return_dict=True,
                **kwargs,
            )
            return CrocModelOutputWithPast(**fields_declared_by(outputs, CrocModelOutputWithPast))
        outputs, croc_fields = self._croc_forward(input_ids, pixel_values, mm_encoder_outputs, attention_mask,
                                                  position_ids, labels, croc_generator,
                                                  image_order=croc_image_order, **kwargs)
        return CrocModelOutputWithPast(**fields_declared_by(outputs, CrocModelOutputWithPast), **croc_fields)


class CrocForConditionalGeneration(CrocForConditionalGenerationMixin, CrocPreTrainedModel,
                                   LlavaForConditionalGeneration):
    """Croc for image-text-to-text generation and for the three training stages.

    With `config.croc_pretraining` off (stages 1 and 2, inference) this is `LlavaForConditionalGeneration`. In a
    training forward with it on (stage 1.5) the output also carries `lm_loss`, `vtr_loss` and `pool_ids`.
    """

    def __init__(self, config: CrocConfig):
        # Skip LlavaForConditionalGeneration.__init__: it would build a whole LlavaModel only to be replaced.
        LlavaPreTrainedModel.__init__(self, config)
        self._build_croc_modules(config, CrocModel)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        croc_objectives: bool | None = None,
        croc_generator: torch.Generator | None = None,
        croc_image_order: torch.LongTensor | None = None,
        num_vtr_items_in_batch: int | torch.Tensor | None = None,
        **kwargs,
    ) -> CrocCausalLMOutputWithPast:
        r"""
        Args:
            labels (`torch.LongTensor` of shape `(B, L)`, *optional*):
                Token ids to predict, aligned with `input_ids` (shifted inside the loss), -100 where unsupervised.
            mm_encoder_outputs (`dict[str, BaseModelOutputWithPooling]`, *optional*):
                Precomputed vision outputs, as `LlavaForConditionalGeneration` takes them.
            croc_objectives (`bool`, *optional*):
                Force the stage-1.5 path on or off. Default: on in training forwards when `config.croc_pretraining`.
            croc_generator (`torch.Generator`, *optional*):
                Seeded generator for the random token mask; the trainer passes one per rank and step.
            croc_image_order (`torch.LongTensor` of shape `(num_images,)`, *optional*):
                For a packed batch (`trainer.collator`), each image's rank in the order the batch arrived, so the
                token masks are those of the unpacked batch. Read by the stage-1.5 forward only.
            num_vtr_items_in_batch (`int` or `torch.Tensor`, *optional*):
                VTR tokens in the whole optimiser step (see `num_vtr_items`), the counterpart of
                `num_items_in_batch` for the LM loss.
            kwargs:
                Passed on to Llava's forward, the cache included under the installed transformers' name for it.
        """
        croc_objectives = self.croc_objectives_on(croc_objectives)
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            labels=labels,
            mm_encoder_outputs=mm_encoder_outputs,
            croc_objectives=croc_objectives,
            croc_generator=croc_generator,
            croc_image_order=croc_image_order,
            return_dict=True,
            **kwargs,
        )
        return self._croc_outputs(outputs, labels, logits_to_keep, croc_objectives, num_vtr_items_in_batch,
                                  CrocCausalLMOutputWithPast, **kwargs)


# Llava's checkpoint renames are keyed by class name and transformers does not extend them to subclasses defined
# outside the library: without this, loading a llava (or saved Croc) folder leaves `lm_head` randomly initialised.
# It lives in this file so that `trust_remote_code` loads of a saved folder register it too.
register_checkpoint_conversion_mapping(
    "CrocForConditionalGeneration", get_checkpoint_conversion_mapping("llava"), overwrite=True
)
register_checkpoint_conversion_mapping("CrocModel", get_checkpoint_conversion_mapping("LlavaModel"), overwrite=True)


__all__ = ["CrocPreTrainedModel", "CrocModel", "CrocForConditionalGeneration", "CrocCausalLMOutputWithPast"]
