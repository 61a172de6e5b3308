"""Croc on GLM-4.1V: `Glm4vForConditionalGeneration` (GLM-4.1V-9B-Thinking / -Base) with the stage-1.5 objectives.

Inference is exactly `Glm4vForConditionalGeneration`. transformers builds GLM-4.1V on Qwen2-VL's and Qwen2.5-VL's
classes: its own vision tower (RMSNorm blocks, learned position embeddings interpolated to each image's grid, a
strided-convolution downsampling and a SwiGLU merger) and its own text model (GLM-4's decoder layers with post-norms,
partial rotary M-RoPE), but `Glm4vModel` is a `Qwen2VLModel`: `get_image_features` returns one
`(t * h * w / spatial_merge_size**2, D)` merged-token tensor per image in `pooler_output`, the language model reads
them at the `<|image|>` positions (`config.image_token_id`) and is called with keyword arguments once per forward,
and the M-RoPE positions come from `image_grid_thw` and `mm_token_type_ids`. So the base and generation models
declare what Qwen2.5-VL's declare (`CrocQwen2_5_VLModelMixin`, `CrocQwen2_5_VLForConditionalGenerationMixin`: the
image grids, the per-image token counts, the packing refusal) and its outputs are Qwen2.5-VL's (both transformers'
multimodal outputs, `CrocQwen2_5_VLModelOutputWithPast` and `CrocQwen2_5_VLCausalLMOutputWithPast`). GLM-4.6V's
declarations are these (`CrocGlm4vModelMixin`): `modeling_croc_glm46v.py`. The family's declaration is this file;
the mechanism is `stage15.py`.
"""

from transformers import Glm4vForConditionalGeneration, Glm4vModel
from transformers.models.glm4v.modeling_glm4v import Glm4vPreTrainedModel

from .configuration_croc_glm4v import CrocGlm4vConfig
from .modeling_croc_qwen2_5_vl import CrocQwen2_5_VLForConditionalGenerationMixin, CrocQwen2_5_VLModelMixin
from .parent_wiring import croc_auto_classes_of, register_croc_checkpoint_renames
from .stage15 import CrocPreTrainedMixin


class CrocGlm4vPreTrainedModel(CrocPreTrainedMixin, Glm4vPreTrainedModel):
    config: CrocGlm4vConfig
    croc_auto_classes = croc_auto_classes_of("glm4v", {
        "Glm4vModel": "CrocGlm4vModel",
        "Glm4vForConditionalGeneration": "CrocGlm4vForConditionalGeneration"})


class CrocGlm4vModelMixin(CrocQwen2_5_VLModelMixin):
    """What a GLM-4.1V Croc base model declares: Qwen2.5-VL's (`CrocQwen2_5_VLModelMixin`) with the packing refusal
    naming GLM. Shared with GLM-4.6V (`modeling_croc_glm46v.py`), whose base model is a `Glm4vModel`."""

    croc_packing_refusal = (
        "GLM-4.1V's and GLM-4.6V's M-RoPE positions are computed per sample from its image grids; packed rows "
        "(position_ids restarting per sample) would give its images text positions. Train it unpacked (packing: false)")


class CrocGlm4vModel(CrocGlm4vModelMixin, CrocGlm4vPreTrainedModel, Glm4vModel):
    """`Glm4vModel` with the prompt pool and the stage-1.5 path (`CrocModelMixin`), as GLM's (`CrocGlm4vModelMixin`)."""


class CrocGlm4vForConditionalGeneration(CrocQwen2_5_VLForConditionalGenerationMixin, CrocGlm4vPreTrainedModel,
                                        Glm4vForConditionalGeneration):
    """Croc on GLM-4.1V for generation and the three training stages.

    With `config.croc_pretraining` off (stages 1 and 2, inference) this is `Glm4vForConditionalGeneration`; in a
    stage-1.5 training forward the output also carries `lm_loss`, `vtr_loss` and `pool_ids`, every image counted with
    its own merged tokens (Qwen2.5-VL's generation mixin)."""

    croc_base_model_class = CrocGlm4vModel


register_croc_checkpoint_renames(CrocGlm4vForConditionalGeneration, Glm4vForConditionalGeneration)
register_croc_checkpoint_renames(CrocGlm4vModel, Glm4vModel)


__all__ = ["CrocGlm4vForConditionalGeneration", "CrocGlm4vModel", "CrocGlm4vModelMixin", "CrocGlm4vPreTrainedModel"]
