"""Croc on Gemma 3: `Gemma3ForConditionalGeneration` with the stage-1.5 objectives.

Inference is exactly `Gemma3ForConditionalGeneration` (whose forward, unlike `Gemma3ForCausalLM`'s, applies no final
logit soft-capping in the installed transformers: the shared head path gives its logits unchanged). In a stage-1.5
training forward the visual tokens the pool replaces are the projector's outputs, `mm_tokens_per_image` per image
(each pan-and-scan crop is an image); the language model receives the mixed mask, one per layer type (sliding and
global), in place of the image-bidirectional mask Gemma 3 builds from `token_type_ids`, which still reach the
parent's forward unchanged (generation reads them). With `bidirectional_span="image"` the mixed mask is the one
Gemma 3 builds for its own images. The family's declaration is this file; the mechanism is `stage15.py`.
"""

from dataclasses import dataclass

from transformers import Gemma3ForConditionalGeneration, Gemma3Model
from transformers.models.gemma3.modeling_gemma3 import (
    Gemma3CausalLMOutputWithPast,
    Gemma3ModelOutputWithPast,
    Gemma3PreTrainedModel,
    get_block_sequence_ids_for_mask,
)

from .configuration_croc_gemma3 import CrocGemma3Config
from .parent_wiring import croc_auto_classes_of, register_croc_checkpoint_renames
from .stage15 import (
    CrocCausalLMOutputFields,
    CrocForConditionalGenerationMixin,
    CrocModelMixin,
    CrocModelOutputFields,
    CrocPreTrainedMixin,
)


def sliding_image_blocks_packing_refusal(family: str) -> str:
    """The one line refusing packed rows for a Gemma family whose sliding layers take its image blocks (Gemma 3's,
    Gemma 4's). transformers builds a sliding layer's mask of packed rows with its or-mask (the image blocks, the
    family's own as Croc's) read at each sample's restarted positions, not at the token's index in the row: a later
    sample's tokens take the blocks of the row's first sample (checked in tests/test_family_gemma3.py)."""
    return (f"{family}'s sliding layers would read the image blocks of packed rows (position_ids restarting per "
            "sample) at the wrong tokens: transformers looks them up by the sample's positions. Train it unpacked "
            "(packing: false)")


@dataclass
class CrocGemma3ModelOutputWithPast(CrocModelOutputFields, Gemma3ModelOutputWithPast):
    """Gemma 3's base-model output plus what the stage-1.5 losses need (`CrocModelOutputFields`)."""


@dataclass
class CrocGemma3CausalLMOutputWithPast(CrocCausalLMOutputFields, Gemma3CausalLMOutputWithPast):
    """Gemma 3's causal-LM output plus the Croc loss terms and the pool assignment."""


class CrocGemma3PreTrainedModel(CrocPreTrainedMixin, Gemma3PreTrainedModel):
    config: CrocGemma3Config
    # Gemma 3's sequence-classification head has no Croc counterpart: that Auto class stays Gemma 3's only.
    croc_auto_classes = croc_auto_classes_of("gemma3", {
        "Gemma3Model": "CrocGemma3Model",
        "Gemma3ForConditionalGeneration": "CrocGemma3ForConditionalGeneration"})


class CrocGemma3Model(CrocModelMixin, CrocGemma3PreTrainedModel, Gemma3Model):
    """`Gemma3Model` with the prompt pool and the stage-1.5 input path (`CrocModelMixin`). Its images need nothing
    besides `pixel_values` (fixed size, fixed token count)."""

    croc_output_class = CrocGemma3ModelOutputWithPast
    croc_packing_refusal = sliding_image_blocks_packing_refusal("Gemma 3")

    def croc_native_block_ids(self, forward_kwargs: dict):
        # Gemma 3's own mask makes each image's run of tokens bidirectional whenever `token_type_ids` are given
        # (`create_masks_for_vision_model`): croc_split keeps them so in stages 1 and 2.
        token_type_ids = forward_kwargs.get("token_type_ids")
        return None if token_type_ids is None else get_block_sequence_ids_for_mask(token_type_ids)


class CrocGemma3ForConditionalGeneration(CrocForConditionalGenerationMixin, CrocGemma3PreTrainedModel,
                                         Gemma3ForConditionalGeneration):
    """Croc on Gemma 3 for generation and the three training stages. With `config.croc_pretraining` off (stages 1
    and 2, inference) this is `Gemma3ForConditionalGeneration`; in a stage-1.5 training forward the output also
    carries `lm_loss`, `vtr_loss` and `pool_ids`, every image (and crop) counted with `mm_tokens_per_image` tokens
    (the shared `image_token_counts`, which splits the placeholders equally, is exact here)."""

    croc_base_model_class = CrocGemma3Model
    croc_output_class = CrocGemma3CausalLMOutputWithPast


register_croc_checkpoint_renames(CrocGemma3ForConditionalGeneration, Gemma3ForConditionalGeneration)
register_croc_checkpoint_renames(CrocGemma3Model, Gemma3Model)


__all__ = [
    "CrocGemma3CausalLMOutputWithPast",
    "CrocGemma3ForConditionalGeneration",
    "CrocGemma3Model",
    "CrocGemma3PreTrainedModel",
    "sliding_image_blocks_packing_refusal",
]
