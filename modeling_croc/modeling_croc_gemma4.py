"""Croc on Gemma 4: `Gemma4ForConditionalGeneration` with the stage-1.5 objectives, on images.

Inference is exactly `Gemma4ForConditionalGeneration`, audio and video included (passed through untouched): the
final logit soft-capping and `logits_to_keep` reaching the text model (its KV-shared layers compute only the kept
positions) are the parent's. In a stage-1.5 training forward the visual tokens the pool replaces are the vision
embedder's outputs at the image placeholders, each image with its own count (its pooled patch grid); audio is
refused there in one line.

Per-layer inputs (`hidden_size_per_layer_input`): the parent computes them before it merges its images, from the
token ids with every placeholder read as padding (`pad_token_id`), then its text model adds a projection of the
merged embeddings. The stage-1.5 forward runs the parent's forward on the same token ids, so a replaced position's
per-layer input is the padding token's plus the projection of what enters there, its pool token: as the parent does
for a visual token at an image position.

Attention: with `use_bidirectional_attention="vision"` and `mm_token_type_ids` Gemma 4 makes each image's run of
placeholders bidirectional on its sliding layers only (its global layers stay causal). Croc's span `"image"` makes it
bidirectional on every layer, as the method does: on the sliding layers it is Gemma 4's own mask, on the global ones
it adds the image blocks (checked in tests/test_family_gemma4.py). The family's declaration is this file; the
mechanism is `stage15.py`.
"""

from dataclasses import dataclass

import torch
from transformers import Gemma4ForConditionalGeneration, Gemma4Model
from transformers.models.gemma4.modeling_gemma4 import (
    Gemma4CausalLMOutputWithPast,
    Gemma4ModelOutputWithPast,
    Gemma4PreTrainedModel,
)

from .configuration_croc_gemma4 import CrocGemma4Config
from .modeling_croc_gemma3 import sliding_image_blocks_packing_refusal
from .parent_wiring import croc_auto_classes_of, register_croc_checkpoint_renames
from .stage15 import (
    CrocCausalLMOutputFields,
    CrocForConditionalGenerationMixin,
    CrocModelMixin,
    CrocModelOutputFields,
    CrocPreTrainedMixin,
)


class CrocGemma4PreTrainedModel(CrocPreTrainedMixin, Gemma4PreTrainedModel):
    config: CrocGemma4Config
    croc_auto_classes = croc_auto_classes_of("gemma4", {
        "Gemma4Model": "CrocGemma4Model",
        "Gemma4ForConditionalGeneration": "CrocGemma4ForConditionalGeneration"})


@dataclass
class CrocGemma4ModelOutputWithPast(CrocModelOutputFields, Gemma4ModelOutputWithPast):
    """Gemma 4's base-model output plus what the stage-1.5 losses need (`CrocModelOutputFields`)."""


@dataclass
class CrocGemma4CausalLMOutputWithPast(CrocCausalLMOutputFields, Gemma4CausalLMOutputWithPast):
    """Gemma 4's causal-LM output plus the Croc loss terms and the pool assignment."""


class CrocGemma4Model(CrocModelMixin, CrocGemma4PreTrainedModel, Gemma4Model):
    """`Gemma4Model` with the prompt pool and the stage-1.5 input path (`CrocModelMixin`). Its images need their patch
    positions (`image_position_ids`, `(-1, -1)` at padding patches) besides `pixel_values`."""

    croc_output_class = CrocGemma4ModelOutputWithPast
    croc_image_inputs = ("image_position_ids",)
    # Its sliding layers' image blocks come from transformers' or-mask, as Gemma 3's.
    croc_packing_refusal = sliding_image_blocks_packing_refusal("Gemma 4")

    def croc_native_block_ids(self, forward_kwargs: dict):
        # Gemma 4's own image blocks are on its sliding layers only; the croc_split segments would put a block on
        # every layer, so such a batch is refused there rather than trained on another mask than the model's.
        token_types = forward_kwargs.get("mm_token_type_ids")
        if self.config.text_config.use_bidirectional_attention != "vision" or token_types is None:
            return None
        if not ((token_types == 1) | (token_types == 2)).any():
            return None
        raise ValueError("croc_split would make Gemma 4's image blocks bidirectional on its global layers too (its "
                         "own mask: sliding layers only); train stages 1 and 2 with attn_implementation sdpa")

    def image_token_counts(self, image_position_ids: torch.LongTensor) -> torch.LongTensor:
        """`(num_images,)` visual tokens of each image from its patch positions alone (no vision tower): its real
        (not `(-1, -1)`) patches over the pooling kernel's `pooling_kernel_size**2`, as the parent splits them."""
        kernel = self.config.vision_config.pooling_kernel_size
        real = (image_position_ids != -1).all(dim=-1).sum(dim=-1)
        return (real // kernel**2).long().cpu()


class CrocGemma4ForConditionalGeneration(CrocForConditionalGenerationMixin, CrocGemma4PreTrainedModel,
                                         Gemma4ForConditionalGeneration):
    """Croc on Gemma 4 for generation and the three training stages. With `config.croc_pretraining` off (stages 1
    and 2, inference) this is `Gemma4ForConditionalGeneration`; in a stage-1.5 training forward the output also
    carries `lm_loss`, `vtr_loss` and `pool_ids`, every image counted with its own pooled tokens."""

    # An image's token count follows from its patch positions alone (`CrocGemma4Model.image_token_counts`).
    croc_image_layout_inputs = CrocGemma4Model.croc_image_inputs
    croc_base_model_class = CrocGemma4Model
    croc_output_class = CrocGemma4CausalLMOutputWithPast
    croc_final_logit_softcapping = True
    croc_base_model_logits_to_keep = True


register_croc_checkpoint_renames(CrocGemma4ForConditionalGeneration, Gemma4ForConditionalGeneration)
register_croc_checkpoint_renames(CrocGemma4Model, Gemma4Model)


__all__ = [
    "CrocGemma4CausalLMOutputWithPast",
    "CrocGemma4ForConditionalGeneration",
    "CrocGemma4Model",
    "CrocGemma4PreTrainedModel",
]
