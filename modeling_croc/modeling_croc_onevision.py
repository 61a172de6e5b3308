"""Croc on LLaVA-OneVision (AnyRes): `LlavaOnevisionForConditionalGeneration` with the stage-1.5 objectives.

Inference is exactly `LlavaOnevisionForConditionalGeneration` (plus, when configured, the L2 normalisation of each
crop's projected tokens, where ViCToR applies it: before the crops are unpadded and joined by newline tokens). In a
stage-1.5 training forward every image's packed visual tokens (base view, crops, newline tokens: everything its
`<image>` tokens stand for) are masked, matched to the pool and reconstructed with their own count; the shared
machinery is `stage15.py`.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import LlavaOnevisionForConditionalGeneration, LlavaOnevisionModel
from transformers.models.llava_onevision.modeling_llava_onevision import (
    LlavaOnevisionCausalLMOutputWithPast,
    LlavaOnevisionModelOutputWithPast,
    LlavaOnevisionPreTrainedModel,
    image_size_to_num_patches,
)

from .configuration_croc_onevision import CrocOnevisionConfig
from .parent_wiring import croc_auto_classes_of, register_croc_checkpoint_renames
from .stage15 import (
    CrocCausalLMOutputFields,
    CrocForConditionalGenerationMixin,
    CrocModelMixin,
    CrocModelOutputFields,
    CrocPreTrainedMixin,
)


@dataclass
class CrocOnevisionModelOutputWithPast(CrocModelOutputFields, LlavaOnevisionModelOutputWithPast):
    """`LlavaOnevisionModelOutputWithPast` plus what the stage-1.5 losses need (`CrocModelOutputFields`)."""


@dataclass
class CrocOnevisionCausalLMOutputWithPast(CrocCausalLMOutputFields, LlavaOnevisionCausalLMOutputWithPast):
    """`LlavaOnevisionCausalLMOutputWithPast` plus the Croc loss terms and the pool assignment."""


# Every Auto class llava_onevision is registered with, and the Croc class standing for its class there.
ONEVISION_AUTO_MODEL_CLASSES: dict[str, str] = croc_auto_classes_of("llava_onevision", {
    "LlavaOnevisionModel": "CrocOnevisionModel",
    "LlavaOnevisionForConditionalGeneration": "CrocOnevisionForConditionalGeneration"})


class CrocOnevisionPreTrainedModel(CrocPreTrainedMixin, LlavaOnevisionPreTrainedModel):
    config: CrocOnevisionConfig
    croc_auto_classes = ONEVISION_AUTO_MODEL_CLASSES


class CrocOnevisionModel(CrocModelMixin, CrocOnevisionPreTrainedModel, LlavaOnevisionModel):
    """`LlavaOnevisionModel` with the prompt pool and the stage-1.5 input path (`CrocModelMixin`). Stage 1.5 trains
    on images: a batch with videos is refused."""

    croc_output_class = CrocOnevisionModelOutputWithPast
    croc_image_inputs = ("image_sizes", "batch_num_images")
    # ViCToR normalises each crop before packing (`pack_image_features` below), not the packed tokens.
    croc_normalize_features = False

    def pack_image_features(self, image_features, image_sizes, image_newline=None, vision_aspect_ratio="anyres_max_9"):
        """OneVision's packing (unpad, downsample, newline tokens, base view first), after L2-normalising every
        crop's projected tokens when `config.normalize_visual_tokens`: ViCToR normalises in `encode_images`, right
        after the projector and before the fork packs the crops, so its newline token is not normalised."""
        if self.config.normalize_visual_tokens:
            image_features = [F.normalize(features, dim=-1) for features in image_features]
        return super().pack_image_features(image_features, image_sizes, image_newline, vision_aspect_ratio)

    def croc_image_features(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor | None = None,
                            batch_num_images: torch.LongTensor | None = None, **unused) -> list[torch.Tensor]:
        """One packed `(T_i, D)` visual-token tensor per image (T_i differs between images)."""
        if image_sizes is None:
            raise ValueError("OneVision images need `image_sizes` (the processor returns them with pixel_values)")
        outputs = self.get_image_features(pixel_values, image_sizes, batch_num_images=batch_num_images,
                                          return_dict=True)
        return list(outputs.pooler_output)

    def image_token_counts(self, image_sizes: torch.Tensor, batch_num_images: torch.LongTensor | None = None
                           ) -> torch.LongTensor:
        """`(num_images,)` packed visual tokens of each image, from its size alone (no vision tower): OneVision's own
        packing run on one-channel zero features of the right shapes."""
        side = self.config.vision_config.image_size // self.config.vision_config.patch_size
        single = [True] * len(image_sizes) if batch_num_images is None else [
            count == 1 for count in batch_num_images.tolist() for _ in range(count)]
        patches = [image_size_to_num_patches(size, self.config.image_grid_pinpoints, self.config.vision_config.image_size)
                   if crops else 1 for size, crops in zip(image_sizes, single)]
        dummy = [torch.zeros(count, side * side, 1) for count in patches]
        _, lengths = LlavaOnevisionModel.pack_image_features(self, dummy, image_sizes, torch.zeros(1),
                                                             self.config.vision_aspect_ratio)
        return lengths.cpu()


class CrocOnevisionForConditionalGeneration(CrocForConditionalGenerationMixin, CrocOnevisionPreTrainedModel,
                                            LlavaOnevisionForConditionalGeneration):
    """Croc on LLaVA-OneVision for generation and the three training stages. With `config.croc_pretraining` off
    (stages 1 and 2, inference) this is `LlavaOnevisionForConditionalGeneration`; in a stage-1.5 training forward
    the output also carries `lm_loss`, `vtr_loss` and `pool_ids`, every image counted with its own tokens."""

    croc_base_model_class = CrocOnevisionModel
    croc_output_class = CrocOnevisionCausalLMOutputWithPast
    croc_image_layout_inputs = ("image_sizes", "batch_num_images")


register_croc_checkpoint_renames(CrocOnevisionForConditionalGeneration, LlavaOnevisionForConditionalGeneration)
register_croc_checkpoint_renames(CrocOnevisionModel, LlavaOnevisionModel)


__all__ = [
    "CrocOnevisionCausalLMOutputWithPast",
    "CrocOnevisionForConditionalGeneration",
    "CrocOnevisionModel",
    "CrocOnevisionPreTrainedModel",
]
