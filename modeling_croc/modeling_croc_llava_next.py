"""Croc on LLaVA-NeXT (AnyRes): `LlavaNextForConditionalGeneration` with the stage-1.5 objectives.

Inference is exactly `LlavaNextForConditionalGeneration` (plus, when configured, the L2 normalisation of each crop's
projected tokens, where the released LLaVA-NeXT-based code applies it: in `encode_images`, before the crops are
unpadded and joined by newline tokens, so the newline token itself is not normalised). In a stage-1.5 training
forward every image's packed visual tokens (base view, crops, newline tokens: everything its `<image>` tokens stand
for) are masked, matched to the pool and reconstructed with their own count. The family's declaration is this file;
the mechanism is `stage15.py`.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import LlavaNextForConditionalGeneration, LlavaNextModel
from transformers.models.llava_next.modeling_llava_next import (
    LlavaNextCausalLMOutputWithPast,
    LlavaNextModelOutputWithPast,
    LlavaNextPreTrainedModel,
    image_size_to_num_patches,
)

from .configuration_croc_llava_next import CrocLlavaNextConfig
from .parent_wiring import croc_auto_classes_of, register_croc_checkpoint_renames
from .stage15 import (
    CrocCausalLMOutputFields,
    CrocForConditionalGenerationMixin,
    CrocModelMixin,
    CrocModelOutputFields,
    CrocPreTrainedMixin,
)


@dataclass
class CrocLlavaNextModelOutputWithPast(CrocModelOutputFields, LlavaNextModelOutputWithPast):
    """`LlavaNextModelOutputWithPast` plus what the stage-1.5 losses need (`CrocModelOutputFields`)."""


@dataclass
class CrocLlavaNextCausalLMOutputWithPast(CrocCausalLMOutputFields, LlavaNextCausalLMOutputWithPast):
    """`LlavaNextCausalLMOutputWithPast` plus the Croc loss terms and the pool assignment."""


class CrocLlavaNextPreTrainedModel(CrocPreTrainedMixin, LlavaNextPreTrainedModel):
    config: CrocLlavaNextConfig
    croc_auto_classes = croc_auto_classes_of("llava_next", {
        "LlavaNextModel": "CrocLlavaNextModel",
        "LlavaNextForConditionalGeneration": "CrocLlavaNextForConditionalGeneration"})


class CrocLlavaNextModel(CrocModelMixin, CrocLlavaNextPreTrainedModel, LlavaNextModel):
    """`LlavaNextModel` with the prompt pool and the stage-1.5 input path (`CrocModelMixin`)."""

    croc_output_class = CrocLlavaNextModelOutputWithPast
    # The feature layer and strategy are forward arguments too: a stage-1.5 forward reads its images as the plain
    # forward given the same arguments would.
    croc_image_inputs = ("image_sizes", "vision_feature_layer", "vision_feature_select_strategy")
    # The normalisation is per crop, before packing (`pack_image_features` below), not on the packed tokens: those
    # hold the newline tokens, which the released code never normalises.
    croc_normalize_features = False

    def pack_image_features(self, image_features, image_sizes, vision_feature_select_strategy, image_newline=None):
        """LLaVA-NeXT's packing (unpad, newline tokens, base view first), after L2-normalising every crop's projected
        tokens when `config.normalize_visual_tokens`.

        Args:
            image_features: one `(num_crops_i, tokens_per_view, D)` tensor per image (base view first).
            image_sizes: `(num_images, 2)` original (height, width) of each image.

        Returns:
            The packed `(T_i, D)` tensor of every image and the `(num_images,)` counts `T_i`, as the parent's.
        """
        if self.config.normalize_visual_tokens:
            image_features = [F.normalize(features, dim=-1) for features in image_features]
        return super().pack_image_features(image_features, image_sizes, vision_feature_select_strategy, image_newline)

    def croc_image_features(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor | None = None,
                            **image_inputs) -> list[torch.Tensor]:
        """One packed `(T_i, D)` visual-token tensor per image (T_i differs between images).

        Args:
            pixel_values: `(num_images, max_crops, 3, S, S)` as LLaVA-NeXT's image processor pads the crops, or the
                crops of all images stacked `(sum crops, 3, S, S)`.
            image_sizes: `(num_images, 2)` original (height, width) of each image.
            image_inputs: `vision_feature_layer` / `vision_feature_select_strategy` when the forward was given them.
        """
        if image_sizes is None:
            raise ValueError("LLaVA-NeXT images need `image_sizes` (the processor returns them with pixel_values)")
        return list(self.get_image_features(pixel_values, image_sizes, **image_inputs, return_dict=True).pooler_output)

    def image_token_counts(self, image_sizes: torch.Tensor) -> torch.LongTensor:
        """`(num_images,)` packed visual tokens of each image, from its size alone (no vision tower): LLaVA-NeXT's
        own packing run on one-channel zero features of the right shapes, so the count cannot drift from the
        forward's."""
        view = self.config.vision_config.image_size
        side = view // self.config.vision_config.patch_size
        # Every crop (the base view too) carries `side**2` patch tokens after the strategy: the packing reshapes the
        # crops onto that grid, so it is the only count it accepts.
        crops = [image_size_to_num_patches(size, self.config.image_grid_pinpoints, view) for size in image_sizes]
        dummy = [torch.zeros(count, side * side, 1) for count in crops]
        _, lengths = LlavaNextModel.pack_image_features(self, dummy, image_sizes,
                                                        self.config.vision_feature_select_strategy, torch.zeros(1))
        return lengths.cpu()


class CrocLlavaNextForConditionalGeneration(CrocForConditionalGenerationMixin, CrocLlavaNextPreTrainedModel,
                                            LlavaNextForConditionalGeneration):
    """Croc on LLaVA-NeXT for generation and the three training stages. With `config.croc_pretraining` off (stages
    1 and 2, inference) this is `LlavaNextForConditionalGeneration`; in a stage-1.5 training forward the output also
    carries `lm_loss`, `vtr_loss` and `pool_ids`, every image counted with its own packed tokens."""

    croc_base_model_class = CrocLlavaNextModel
    croc_output_class = CrocLlavaNextCausalLMOutputWithPast
    croc_image_layout_inputs = ("image_sizes",)


register_croc_checkpoint_renames(CrocLlavaNextForConditionalGeneration, LlavaNextForConditionalGeneration)
register_croc_checkpoint_renames(CrocLlavaNextModel, LlavaNextModel)


__all__ = [
    "CrocLlavaNextCausalLMOutputWithPast",
    "CrocLlavaNextForConditionalGeneration",
    "CrocLlavaNextModel",
    "CrocLlavaNextPreTrainedModel",
]
