"""Croc on Qwen3-VL: `Qwen3VLForConditionalGeneration` with the stage-1.5 objectives.

Inference is exactly `Qwen3VLForConditionalGeneration`. In a stage-1.5 training forward the visual tokens the pool
replaces are the final merger's outputs (what the language model reads at the `<|image_pad|>` positions), every
image with its own count (`t * h * w / spatial_merge_size**2`); the language model keeps the M-RoPE positions
Qwen3-VL computes from `image_grid_thw` and `mm_token_type_ids`, and receives the mixed mask in place of its own.

DeepStack: Qwen3-VL's language model also adds multi-level vision features (one per `deepstack_visual_indexes`
entry) to the outputs of its first decoder layers at the visual positions. The parent's forward runs without images
in stage 1.5, so they are passed to the language model here (`croc_language_model_kwargs`): a kept visual token
gets its own, a replaced one zeros, since a replaced token must not leak its features into the language model
through another route, and a pool token has no DeepStack counterpart. The family's declaration is this file; the
mechanism is `stage15.py`.
"""

from dataclasses import dataclass

import torch
from transformers import Qwen3VLForConditionalGeneration, Qwen3VLModel
from transformers.modeling_outputs import MultimodalBaseModelOutputWithPast, MultimodalCausalLMOutputWithPast
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLPreTrainedModel
from transformers.utils import ModelOutput

from .configuration_croc_qwen3_vl import CrocQwen3VLConfig
from .parent_wiring import croc_auto_classes_of, register_croc_checkpoint_renames
from .stage15 import (
    CrocCausalLMOutputFields,
    CrocForConditionalGenerationMixin,
    CrocModelMixin,
    CrocModelOutputFields,
    CrocPreTrainedMixin,
)


@dataclass
class CrocQwen3VLModelOutputWithPast(CrocModelOutputFields, MultimodalBaseModelOutputWithPast):
    """Qwen3-VL's base-model output plus what the stage-1.5 losses need (`CrocModelOutputFields`)."""


@dataclass
class CrocQwen3VLCausalLMOutputWithPast(CrocCausalLMOutputFields, MultimodalCausalLMOutputWithPast):
    """Qwen3-VL's causal-LM output plus the Croc loss terms and the pool assignment."""


class CrocQwen3VLPreTrainedModel(CrocPreTrainedMixin, Qwen3VLPreTrainedModel):
    config: CrocQwen3VLConfig
    croc_auto_classes = croc_auto_classes_of("qwen3_vl", {
        "Qwen3VLModel": "CrocQwen3VLModel",
        "Qwen3VLForConditionalGeneration": "CrocQwen3VLForConditionalGeneration"})


class CrocQwen3VLImagesMixin(CrocModelMixin):
    """The mechanism's base model (`CrocModelMixin`) with what every base model on Qwen3-VL's vision side declares,
    DeepStack or not: the image grids and the per-image token counts. Qwen3.5 (`modeling_croc_qwen3_5.py`), whose
    vision tower is Qwen3-VL's without the DeepStack mergers, declares these alone."""

    croc_image_inputs = ("image_grid_thw",)

    def image_token_counts(self, image_grid_thw: torch.LongTensor) -> torch.LongTensor:
        """`(num_images,)` visual tokens of each image, from its patch grid `(num_images, 3)` alone (no vision
        tower): `t * h * w` over the merger's window."""
        merge = self.config.vision_config.spatial_merge_size
        return (image_grid_thw.prod(dim=-1) // merge**2).long().cpu()


class CrocQwen3VLModelMixin(CrocQwen3VLImagesMixin):
    """What a Qwen3-VL Croc base model declares besides its images (`CrocQwen3VLImagesMixin`), shared by the dense
    family and the MoE one (`modeling_croc_qwen3_vl_moe.py`), whose vision side and DeepStack are the same: the
    packing refusal and the DeepStack inputs of the language model."""

    croc_packing_refusal = (
        "Qwen3-VL's M-RoPE positions are computed per sample from its image grids; packed rows (position_ids "
        "restarting per sample) would give its images text positions. Train it unpacked (packing: false)")

    def croc_image_outputs(self, pixel_values: torch.Tensor, **image_inputs) -> ModelOutput:
        """`get_image_features`' whole output: `pooler_output` (one `(T_i, D)` merged-token tensor per image) and
        `deepstack_features` (one tuple of per-image `(T_i, D)` tensors per DeepStack level)."""
        return self.get_image_features(pixel_values, **image_inputs, return_dict=True)

    def croc_language_model_kwargs(self, image_outputs: ModelOutput, image_token_mask: torch.BoolTensor,
                                   replaced_token_mask: torch.BoolTensor, visual_token_mask: torch.BoolTensor) -> dict:
        """The DeepStack inputs of the language model, as the parent derives them from its images: the visual
        positions `visual_pos_masks` (`(B, L)`) and, per DeepStack level, the `(N, D)` features of the batch's `N`
        visual tokens in position order, zero where a pool token replaced the visual token."""
        levels = getattr(image_outputs, "deepstack_features", None)
        if levels is None:
            # Precomputed outputs without DeepStack features: the parent would fail on them; say why here.
            raise ValueError("Qwen3-VL's language model needs the DeepStack features of its images; the precomputed "
                             "mm_encoder_outputs['image'] has no `deepstack_features`")
        # Images fill the visual positions in order, each its own count: flattened like the valid tokens.
        replaced = replaced_token_mask[visual_token_mask].unsqueeze(-1)
        embeds = [torch.cat(list(level)).masked_fill(replaced.to(level[0].device), 0) for level in levels]
        return {"visual_pos_masks": image_token_mask, "deepstack_visual_embeds": embeds}


class CrocQwen3VLModel(CrocQwen3VLModelMixin, CrocQwen3VLPreTrainedModel, Qwen3VLModel):
    """`Qwen3VLModel` with the prompt pool and the stage-1.5 input path (`CrocModelMixin`), DeepStack included
    (`CrocQwen3VLModelMixin`)."""

    croc_output_class = CrocQwen3VLModelOutputWithPast


class CrocQwen3VLForConditionalGenerationMixin(CrocForConditionalGenerationMixin):
    """The mechanism's generation model (`CrocForConditionalGenerationMixin`) with what a generation model on
    Qwen3-VL's outputs and images declares on it, shared with Qwen3.5 (`modeling_croc_qwen3_5.py`): the output class
    and the image grids that decide each image's token count."""

    croc_output_class = CrocQwen3VLCausalLMOutputWithPast
    croc_image_layout_inputs = ("image_grid_thw",)


class CrocQwen3VLForConditionalGeneration(CrocQwen3VLForConditionalGenerationMixin, CrocQwen3VLPreTrainedModel,
                                          Qwen3VLForConditionalGeneration):
    """Croc on Qwen3-VL for generation and the three training stages. With `config.croc_pretraining` off (stages 1
    and 2, inference) this is `Qwen3VLForConditionalGeneration`; in a stage-1.5 training forward the output also
    carries `lm_loss`, `vtr_loss` and `pool_ids`, every image counted with its own merged tokens."""

    croc_base_model_class = CrocQwen3VLModel


register_croc_checkpoint_renames(CrocQwen3VLForConditionalGeneration, Qwen3VLForConditionalGeneration)
register_croc_checkpoint_renames(CrocQwen3VLModel, Qwen3VLModel)


__all__ = [
    "CrocQwen3VLCausalLMOutputWithPast",
    "CrocQwen3VLForConditionalGeneration",
    "CrocQwen3VLForConditionalGenerationMixin",
    "CrocQwen3VLImagesMixin",
    "CrocQwen3VLModel",
    "CrocQwen3VLModelMixin",
    "CrocQwen3VLModelOutputWithPast",
    "CrocQwen3VLPreTrainedModel",
]
