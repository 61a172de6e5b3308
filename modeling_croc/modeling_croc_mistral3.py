"""Croc on Mistral 3 (Pixtral vision at native resolution): `Mistral3ForConditionalGeneration` with the stage-1.5
objectives.

Inference is exactly `Mistral3ForConditionalGeneration`. In a stage-1.5 training forward the visual tokens the pool
replaces are the patch merger's projected outputs (what the language model reads at the `[IMG]` positions), every
image with its own count from its `image_sizes`; the `[IMG_BREAK]` / `[IMG_END]` tokens Pixtral's processor puts
after every row of an image are text, embedded by the language model and left alone. With
`bidirectional_span="image"` an image's block is its whole extent, from its first to its last `[IMG]`, the break
tokens between them included: they are part of the image's 2D layout, and a block per row would let the top rows of
an image not see the bottom ones. The family's declaration is this file; the mechanism is `stage15.py`.
"""

from dataclasses import dataclass

import torch
from transformers import Mistral3ForConditionalGeneration, Mistral3Model
from transformers.models.mistral3.modeling_mistral3 import (
    Mistral3CausalLMOutputWithPast,
    Mistral3ModelOutputWithPast,
    Mistral3PreTrainedModel,
)

from .configuration_croc_mistral3 import CrocMistral3Config
from .parent_wiring import croc_auto_classes_of, register_croc_checkpoint_renames
from .stage15 import (
    CrocCausalLMOutputFields,
    CrocForConditionalGenerationMixin,
    CrocModelMixin,
    CrocModelOutputFields,
    CrocPreTrainedMixin,
)


@dataclass
class CrocMistral3ModelOutputWithPast(CrocModelOutputFields, Mistral3ModelOutputWithPast):
    """`Mistral3ModelOutputWithPast` plus what the stage-1.5 losses need (`CrocModelOutputFields`)."""


@dataclass
class CrocMistral3CausalLMOutputWithPast(CrocCausalLMOutputFields, Mistral3CausalLMOutputWithPast):
    """`Mistral3CausalLMOutputWithPast` plus the Croc loss terms and the pool assignment."""


class CrocMistral3PreTrainedModel(CrocPreTrainedMixin, Mistral3PreTrainedModel):
    config: CrocMistral3Config
    croc_auto_classes = croc_auto_classes_of("mistral3", {
        "Mistral3Model": "CrocMistral3Model",
        "Mistral3ForConditionalGeneration": "CrocMistral3ForConditionalGeneration"})


class CrocMistral3Model(CrocModelMixin, CrocMistral3PreTrainedModel, Mistral3Model):
    """`Mistral3Model` with the prompt pool and the stage-1.5 input path (`CrocModelMixin`)."""

    croc_output_class = CrocMistral3ModelOutputWithPast
    # The feature layer is a forward argument too: a stage-1.5 forward reads its images as the plain forward would.
    croc_image_inputs = ("image_sizes", "vision_feature_layer")

    def croc_image_features(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor | None = None,
                            **image_inputs) -> list[torch.Tensor]:
        """One `(T_i, D)` tensor of merged, projected tokens per image (T_i from the image's size).

        Args:
            pixel_values: `(num_images, 3, H_max, W_max)`, each image in its top-left corner, as Pixtral's image
                processor pads them.
            image_sizes: `(num_images, 2)` (height, width) in pixels of each image as resized, multiples of
                `patch_size * spatial_merge_size`.
            image_inputs: `vision_feature_layer` when the forward was given it.
        """
        if image_sizes is None:
            raise ValueError("Mistral 3 images need `image_sizes` (the processor returns them with pixel_values)")
        return list(self.get_image_features(pixel_values, image_sizes, **image_inputs, return_dict=True).pooler_output)

    def image_token_counts(self, image_sizes: torch.Tensor) -> torch.LongTensor:
        """`(num_images,)` merged tokens of each image, from its size alone (no vision tower), as the parent splits
        its features: one per `patch_size * spatial_merge_size` square."""
        window = self.config.vision_config.patch_size * self.config.spatial_merge_size
        return (torch.as_tensor(image_sizes) // window).prod(dim=-1).long().cpu()


class CrocMistral3ForConditionalGeneration(CrocForConditionalGenerationMixin, CrocMistral3PreTrainedModel,
                                           Mistral3ForConditionalGeneration):
    """Croc on Mistral 3 for generation and the three training stages. With `config.croc_pretraining` off (stages 1
    and 2, inference) this is `Mistral3ForConditionalGeneration`; in a stage-1.5 training forward the output also
    carries `lm_loss`, `vtr_loss` and `pool_ids`, every image counted with its own merged tokens."""

    croc_base_model_class = CrocMistral3Model
    croc_output_class = CrocMistral3CausalLMOutputWithPast
    croc_image_layout_inputs = ("image_sizes",)


register_croc_checkpoint_renames(CrocMistral3ForConditionalGeneration, Mistral3ForConditionalGeneration)
register_croc_checkpoint_renames(CrocMistral3Model, Mistral3Model)


__all__ = [
    "CrocMistral3CausalLMOutputWithPast",
    "CrocMistral3ForConditionalGeneration",
    "CrocMistral3Model",
    "CrocMistral3PreTrainedModel",
]
