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
from transformers.conversion_mapping import (
    get_checkpoint_conversion_mapping,
    register_checkpoint_conversion_mapping,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.llava_onevision.modeling_llava_onevision import (
    LlavaOnevisionCausalLMOutputWithPast,
    LlavaOnevisionModelOutputWithPast,
    LlavaOnevisionPreTrainedModel,
    image_size_to_num_patches,
)
from transformers.utils.generic import can_return_tuple

from .configuration_croc_onevision import CrocOnevisionConfig
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
class CrocOnevisionModelOutputWithPast(CrocModelOutputFields, LlavaOnevisionModelOutputWithPast):
    """`LlavaOnevisionModelOutputWithPast` plus what the stage-1.5 losses need (`CrocModelOutputFields`)."""


@dataclass
class CrocOnevisionCausalLMOutputWithPast(CrocCausalLMOutputFields, LlavaOnevisionCausalLMOutputWithPast):
    """`LlavaOnevisionCausalLMOutputWithPast` plus the Croc loss terms and the pool assignment."""


# The Auto classes OneVision's Croc classes are registered with: those of LLaVA-1.5's Croc (transformers registers
# llava_onevision with the same ones), the base model for `AutoModel`, the generation model for the others.
ONEVISION_AUTO_MODEL_CLASSES: dict[str, str] = {
    auto: "CrocOnevisionModel" if name == "CrocModel" else "CrocOnevisionForConditionalGeneration"
    for auto, name in AUTO_MODEL_CLASSES.items()}


class CrocOnevisionPreTrainedModel(CrocPreTrainedMixin, LlavaOnevisionPreTrainedModel):
    config: CrocOnevisionConfig
    # llava_onevision checkpoints have no pool and no VTR head: they start here.
    _keys_to_ignore_on_load_missing = list(CROC_ONLY_PATTERNS)
    croc_auto_classes = ONEVISION_AUTO_MODEL_CLASSES


class CrocOnevisionModel(CrocModelMixin, CrocOnevisionPreTrainedModel, LlavaOnevisionModel):
    """`LlavaOnevisionModel` with the prompt pool and the stage-1.5 input path."""

    def __init__(self, config: CrocOnevisionConfig):
        super().__init__(config)
        self.prompt_pool = CrocPromptPool(config)
        self.post_init()

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

    # As in `CrocModel`: `can_return_tuple` turns the output into `to_tuple()` when `return_dict` is False.
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.LongTensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        image_sizes_videos: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        batch_num_images: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        croc_objectives: bool = False,
        croc_generator: torch.Generator | None = None,
        **kwargs,
    ) -> CrocOnevisionModelOutputWithPast:
        """OneVision's forward, or with `croc_objectives` the stage-1.5 forward (images only: videos are refused).

        Args:
            labels: `(B, L)` aligned with `input_ids`; only read to place the `"prompt"` bidirectional span.
            croc_objectives: run the stage-1.5 path (pool replacement and mixed attention).
            croc_generator: seeded generator for the random token mask.
            kwargs: the rest of OneVision's forward arguments (cache, feature-layer overrides, ...).
        """
        if not croc_objectives:
            if self._uses_split_attention(kwargs):
                shape = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
                attention_mask = self._split_attention_inputs(shape, attention_mask, position_ids, kwargs)
            outputs = super().forward(
                input_ids=input_ids, pixel_values=pixel_values, image_sizes=image_sizes,
                pixel_values_videos=pixel_values_videos, image_sizes_videos=image_sizes_videos,
                attention_mask=attention_mask, position_ids=position_ids, inputs_embeds=inputs_embeds,
                batch_num_images=batch_num_images, mm_encoder_outputs=mm_encoder_outputs, return_dict=True, **kwargs,
            )
            return CrocOnevisionModelOutputWithPast(**fields_declared_by(outputs, CrocOnevisionModelOutputWithPast))
        if pixel_values_videos is not None:
            raise ValueError("stage 1.5 trains on images; this batch has videos (pixel_values_videos)")
        image_inputs = {"image_sizes": image_sizes, "batch_num_images": batch_num_images}
        outputs, croc_fields = self._croc_forward(input_ids, pixel_values, mm_encoder_outputs, attention_mask,
                                                  position_ids, labels, croc_generator, image_inputs, **kwargs)
        return CrocOnevisionModelOutputWithPast(**fields_declared_by(outputs, CrocOnevisionModelOutputWithPast),
                                                **croc_fields)


class CrocOnevisionForConditionalGeneration(CrocForConditionalGenerationMixin, CrocOnevisionPreTrainedModel,
                                            LlavaOnevisionForConditionalGeneration):
    """Croc on LLaVA-OneVision for generation and the three training stages. With `config.croc_pretraining` off
    (stages 1 and 2, inference) this is `LlavaOnevisionForConditionalGeneration`; in a stage-1.5 training forward
    the output also carries `lm_loss`, `vtr_loss` and `pool_ids`, every image counted with its own tokens."""

    croc_image_layout_inputs = ("image_sizes", "batch_num_images")

    def __init__(self, config: CrocOnevisionConfig):
        # Skip LlavaOnevisionForConditionalGeneration.__init__: it would build a whole model only to be replaced.
        LlavaOnevisionPreTrainedModel.__init__(self, config)
        self._build_croc_modules(config, CrocOnevisionModel)

    def image_token_counts(self, input_ids: torch.LongTensor, num_images: int, image_sizes=None,
                           batch_num_images=None, **unused) -> torch.LongTensor:
        """`(num_images,)` visual tokens of each image: from `image_sizes` (AnyRes crops), else equal counts."""
        if image_sizes is None:
            return super().image_token_counts(input_ids, num_images)
        return self.model.image_token_counts(image_sizes, batch_num_images)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.LongTensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        image_sizes_videos: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        batch_num_images: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        croc_objectives: bool | None = None,
        croc_generator: torch.Generator | None = None,
        num_vtr_items_in_batch: int | torch.Tensor | None = None,
        **kwargs,
    ) -> CrocOnevisionCausalLMOutputWithPast:
        """`LlavaOnevisionForConditionalGeneration.forward`'s arguments (the rest of them, the cache included, in
        `kwargs`) plus the Croc ones of `CrocForConditionalGeneration.forward`."""
        croc_objectives = self.croc_objectives_on(croc_objectives)
        outputs = self.model(
            input_ids=input_ids, pixel_values=pixel_values, image_sizes=image_sizes,
            pixel_values_videos=pixel_values_videos, image_sizes_videos=image_sizes_videos,
            attention_mask=attention_mask, position_ids=position_ids, inputs_embeds=inputs_embeds,
            batch_num_images=batch_num_images, labels=labels, mm_encoder_outputs=mm_encoder_outputs,
            croc_objectives=croc_objectives, croc_generator=croc_generator, return_dict=True, **kwargs,
        )
        return self._croc_outputs(outputs, labels, logits_to_keep, croc_objectives, num_vtr_items_in_batch,
                                  CrocOnevisionCausalLMOutputWithPast, **kwargs)


# As for the Llava classes (modeling_croc.py): transformers keys its checkpoint renames by class name.
register_checkpoint_conversion_mapping(
    "CrocOnevisionForConditionalGeneration", get_checkpoint_conversion_mapping("llava_onevision"), overwrite=True
)
register_checkpoint_conversion_mapping(
    "CrocOnevisionModel", get_checkpoint_conversion_mapping("LlavaOnevisionModel"), overwrite=True
)


__all__ = [
    "CrocOnevisionCausalLMOutputWithPast",
    "CrocOnevisionForConditionalGeneration",
    "CrocOnevisionModel",
    "CrocOnevisionPreTrainedModel",
]
