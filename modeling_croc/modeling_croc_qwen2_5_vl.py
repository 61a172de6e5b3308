"""Croc on Qwen2.5-VL: `Qwen2_5_VLForConditionalGeneration` with the stage-1.5 objectives.

Inference is exactly `Qwen2_5_VLForConditionalGeneration`. In a stage-1.5 training forward the visual tokens the
pool replaces are the patch merger's outputs (what the language model reads at the `<|image_pad|>` positions),
every image with its own count (`t * h * w / spatial_merge_size**2`); the language model keeps the M-RoPE positions
Qwen2.5-VL computes from `image_grid_thw` and `mm_token_type_ids`, and receives the mixed mask in place of its own.
The family's declaration is this file; the mechanism is `stage15.py`. Qwen2-VL's declarations are these
(`CrocQwen2_5_VLModelMixin`, `CrocQwen2_5_VLForConditionalGenerationMixin`, the output classes):
`modeling_croc_qwen2_vl.py`.
"""

from dataclasses import dataclass

import torch
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLModel
from transformers.modeling_outputs import MultimodalBaseModelOutputWithPast, MultimodalCausalLMOutputWithPast
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLPreTrainedModel

from .configuration_croc_qwen2_5_vl import CrocQwen2_5_VLConfig
from .parent_wiring import croc_auto_classes_of, register_croc_checkpoint_renames
from .stage15 import (
    CrocCausalLMOutputFields,
    CrocForConditionalGenerationMixin,
    CrocModelMixin,
    CrocModelOutputFields,
    CrocPreTrainedMixin,
)


@dataclass
class CrocQwen2_5_VLModelOutputWithPast(CrocModelOutputFields, MultimodalBaseModelOutputWithPast):
    """Qwen2.5-VL's base-model output plus what the stage-1.5 losses need (`CrocModelOutputFields`)."""


@dataclass
class CrocQwen2_5_VLCausalLMOutputWithPast(CrocCausalLMOutputFields, MultimodalCausalLMOutputWithPast):
    """Qwen2.5-VL's causal-LM output plus the Croc loss terms and the pool assignment."""


class CrocQwen2_5_VLPreTrainedModel(CrocPreTrainedMixin, Qwen2_5_VLPreTrainedModel):
    config: CrocQwen2_5_VLConfig
    croc_auto_classes = croc_auto_classes_of("qwen2_5_vl", {
        "Qwen2_5_VLModel": "CrocQwen2_5_VLModel",
        "Qwen2_5_VLForConditionalGeneration": "CrocQwen2_5_VLForConditionalGeneration"})


class CrocQwen2_5_VLModelMixin(CrocModelMixin):
    """The mechanism's base model (`CrocModelMixin`) with what a Qwen2.5-VL Croc base model declares on it, shared
    with Qwen2-VL (`modeling_croc_qwen2_vl.py`), whose outputs, M-RoPE positions and image grids are the same: the
    output class, the image grids, the packing refusal and the per-image token counts."""

    croc_output_class = CrocQwen2_5_VLModelOutputWithPast
    croc_image_inputs = ("image_grid_thw",)
    croc_packing_refusal = (
        "Qwen2-VL's and Qwen2.5-VL's M-RoPE positions are computed per sample from its image grids; packed rows "
        "(position_ids restarting per sample) would give its images text positions. Train it unpacked (packing: "
        "false)")

    def image_token_counts(self, image_grid_thw: torch.LongTensor) -> torch.LongTensor:
        """`(num_images,)` visual tokens of each image, from its patch grid `(num_images, 3)` alone (no vision
        tower): `t * h * w` over the merger's window."""
        merge = self.config.vision_config.spatial_merge_size
        return (image_grid_thw.prod(dim=-1) // merge**2).long().cpu()


class CrocQwen2_5_VLModel(CrocQwen2_5_VLModelMixin, CrocQwen2_5_VLPreTrainedModel, Qwen2_5_VLModel):
    """`Qwen2_5_VLModel` with the prompt pool and the stage-1.5 input path (`CrocModelMixin`,
    `CrocQwen2_5_VLModelMixin`)."""


class CrocQwen2_5_VLForConditionalGenerationMixin(CrocForConditionalGenerationMixin):
    """The mechanism's generation model (`CrocForConditionalGenerationMixin`) with what a Qwen2.5-VL Croc generation
    model declares on it, shared with Qwen2-VL: the output class and the image grids that decide each image's token
    count."""

    croc_output_class = CrocQwen2_5_VLCausalLMOutputWithPast
    croc_image_layout_inputs = ("image_grid_thw",)


class CrocQwen2_5_VLForConditionalGeneration(CrocQwen2_5_VLForConditionalGenerationMixin,
                                             CrocQwen2_5_VLPreTrainedModel, Qwen2_5_VLForConditionalGeneration):
    """Croc on Qwen2.5-VL for generation and the three training stages. With `config.croc_pretraining` off
    (stages 1 and 2, inference) this is `Qwen2_5_VLForConditionalGeneration`; in a stage-1.5 training forward the
    output also carries `lm_loss`, `vtr_loss` and `pool_ids`, every image counted with its own merged tokens."""

    croc_base_model_class = CrocQwen2_5_VLModel


register_croc_checkpoint_renames(CrocQwen2_5_VLForConditionalGeneration, Qwen2_5_VLForConditionalGeneration)
# A folder in the current layout (`model.visual.`, as a converted one is) keeps its vision tower: the parent's
# base-model rename would move it under the language model.
register_croc_checkpoint_renames(CrocQwen2_5_VLModel, Qwen2_5_VLModel, load_only={r"^model\.visual\.": "visual."})


__all__ = [
    "CrocQwen2_5_VLCausalLMOutputWithPast",
    "CrocQwen2_5_VLForConditionalGeneration",
    "CrocQwen2_5_VLForConditionalGenerationMixin",
    "CrocQwen2_5_VLModel",
    "CrocQwen2_5_VLModelMixin",
    "CrocQwen2_5_VLModelOutputWithPast",
    "CrocQwen2_5_VLPreTrainedModel",
]
