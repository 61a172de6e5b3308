"""Croc on Qwen2-VL: `Qwen2VLForConditionalGeneration` (Qwen2-VL-2B / 7B / 72B) with the stage-1.5 objectives.

Inference is exactly `Qwen2VLForConditionalGeneration`. Its vision tower differs from Qwen2.5-VL's (full attention
in every block, LayerNorm and a GELU merger MLP, where Qwen2.5-VL has windowed blocks, RMSNorm and SwiGLU), but
what the mechanism reads of it is the same: `get_image_features` returns one `(t * h * w / spatial_merge_size**2, D)`
merged-token tensor per image in `pooler_output`, the language model reads them at the `<|image_pad|>` positions,
and its M-RoPE positions come from `image_grid_thw` and `mm_token_type_ids` (Qwen2.5-VL's without the video time
scaling: the same positions for images). So the base and generation models declare what Qwen2.5-VL's declare
(`CrocQwen2_5_VLModelMixin`, `CrocQwen2_5_VLForConditionalGenerationMixin`: the image grids, the per-image token
counts, the packing refusal) and its outputs are Qwen2.5-VL's (both transformers' multimodal outputs). The family's
declaration is this file; the mechanism is `stage15.py`.
"""

from transformers import Qwen2VLForConditionalGeneration, Qwen2VLModel
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLPreTrainedModel

from .configuration_croc_qwen2_vl import CrocQwen2VLConfig
from .modeling_croc_qwen2_5_vl import (
    CrocQwen2_5_VLCausalLMOutputWithPast,
    CrocQwen2_5_VLForConditionalGenerationMixin,
    CrocQwen2_5_VLModelMixin,
    CrocQwen2_5_VLModelOutputWithPast,
)
from .parent_wiring import croc_auto_classes_of, register_croc_checkpoint_renames
from .stage15 import CrocPreTrainedMixin

# Qwen2-VL's base-model and causal-LM outputs are Qwen2.5-VL's (`MultimodalBaseModelOutputWithPast`,
# `MultimodalCausalLMOutputWithPast`), and so are Croc's on them.
CrocQwen2VLModelOutputWithPast = CrocQwen2_5_VLModelOutputWithPast
CrocQwen2VLCausalLMOutputWithPast = CrocQwen2_5_VLCausalLMOutputWithPast


class CrocQwen2VLPreTrainedModel(CrocPreTrainedMixin, Qwen2VLPreTrainedModel):
    config: CrocQwen2VLConfig
    croc_auto_classes = croc_auto_classes_of("qwen2_vl", {
        "Qwen2VLModel": "CrocQwen2VLModel",
        "Qwen2VLForConditionalGeneration": "CrocQwen2VLForConditionalGeneration"})


class CrocQwen2VLModel(CrocQwen2_5_VLModelMixin, CrocQwen2VLPreTrainedModel, Qwen2VLModel):
    """`Qwen2VLModel` with the prompt pool and the stage-1.5 input path (`CrocModelMixin`), declared as
    Qwen2.5-VL's (`CrocQwen2_5_VLModelMixin`)."""


class CrocQwen2VLForConditionalGeneration(CrocQwen2_5_VLForConditionalGenerationMixin, CrocQwen2VLPreTrainedModel,
                                          Qwen2VLForConditionalGeneration):
    """Croc on Qwen2-VL for generation and the three training stages. With `config.croc_pretraining` off (stages 1
    and 2, inference) this is `Qwen2VLForConditionalGeneration`; in a stage-1.5 training forward the output also
    carries `lm_loss`, `vtr_loss` and `pool_ids`, every image counted with its own merged tokens."""

    croc_base_model_class = CrocQwen2VLModel


register_croc_checkpoint_renames(CrocQwen2VLForConditionalGeneration, Qwen2VLForConditionalGeneration)
# A folder in the current layout (`model.visual.`, as a converted one is) keeps its vision tower: the parent's
# base-model rename would move it under the language model.
register_croc_checkpoint_renames(CrocQwen2VLModel, Qwen2VLModel, load_only={r"^model\.visual\.": "visual."})


__all__ = [
    "CrocQwen2VLCausalLMOutputWithPast",
    "CrocQwen2VLForConditionalGeneration",
    "CrocQwen2VLModel",
    "CrocQwen2VLModelOutputWithPast",
    "CrocQwen2VLPreTrainedModel",
]
