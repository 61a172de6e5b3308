"""Croc on LLaVA-OneVision-1.5: `LlavaOnevision15ForConditionalGeneration` (LLaVA-OneVision-1.5-4B / 8B) with the
stage-1.5 objectives.

Inference is exactly `LlavaOnevision15ForConditionalGeneration`. transformers builds it on Qwen2.5-VL's classes (its
config, its generation class, Qwen2-VL's image processor) with a vision tower of its own (RICE-ViT: a class token
per frame, 2D RoPE, a LayerNorm-then-MLP merger) and a Qwen3 text model. What the mechanism reads of it is
Qwen2.5-VL's: `get_image_features` returns one `(t * h * w / spatial_merge_size**2, D)` merged-token tensor per image
in `pooler_output`, and the language model reads them at the `<|image_pad|>` positions. So the base and generation
models declare what Qwen2.5-VL's declare (`CrocQwen2_5_VLModelMixin`, `CrocQwen2_5_VLForConditionalGenerationMixin`:
the image grids, the per-image token counts) and its outputs are Qwen2.5-VL's (both transformers' multimodal
outputs). One thing differs: its text positions are plain 1D ones (no M-RoPE), so packed rows (position_ids
restarting per sample) are positioned as LLaVA's are, and the model does not refuse them. The family's declaration
is this file; the mechanism is `stage15.py`.
"""

from transformers import LlavaOnevision15ForConditionalGeneration, LlavaOnevision15Model
from transformers.models.llava_onevision1_5.modeling_llava_onevision1_5 import LlavaOnevision15PreTrainedModel

from .configuration_croc_llava_onevision1_5 import CrocLlavaOnevision15Config
from .modeling_croc_qwen2_5_vl import (
    CrocQwen2_5_VLCausalLMOutputWithPast,
    CrocQwen2_5_VLForConditionalGenerationMixin,
    CrocQwen2_5_VLModelMixin,
    CrocQwen2_5_VLModelOutputWithPast,
)
from .parent_wiring import croc_auto_classes_of, register_croc_checkpoint_renames
from .stage15 import CrocPreTrainedMixin


class CrocLlavaOnevision15PreTrainedModel(CrocPreTrainedMixin, LlavaOnevision15PreTrainedModel):
    config: CrocLlavaOnevision15Config
    croc_auto_classes = croc_auto_classes_of("llava_onevision1_5", {
        "LlavaOnevision15Model": "CrocLlavaOnevision15Model",
        "LlavaOnevision15ForConditionalGeneration": "CrocLlavaOnevision15ForConditionalGeneration"})


class CrocLlavaOnevision15Model(CrocQwen2_5_VLModelMixin, CrocLlavaOnevision15PreTrainedModel, LlavaOnevision15Model):
    """`LlavaOnevision15Model` with the prompt pool and the stage-1.5 input path (`CrocModelMixin`), declared as
    Qwen2.5-VL's (`CrocQwen2_5_VLModelMixin`) but for packing: its positions are 1D text positions, which a packed
    row restarts per sample as the parent's language model reads them, and the vision tower encodes each image on its
    own, so nothing is refused here (the trainer still refuses packing for images of their own token count)."""

    croc_packing_refusal = None


class CrocLlavaOnevision15ForConditionalGeneration(CrocQwen2_5_VLForConditionalGenerationMixin,
                                                   CrocLlavaOnevision15PreTrainedModel,
                                                   LlavaOnevision15ForConditionalGeneration):
    """Croc on LLaVA-OneVision-1.5 for generation and the three training stages. With `config.croc_pretraining` off
    (stages 1 and 2, inference) this is `LlavaOnevision15ForConditionalGeneration`; in a stage-1.5 training forward
    the output also carries `lm_loss`, `vtr_loss` and `pool_ids`, every image counted with its own merged tokens."""

    croc_base_model_class = CrocLlavaOnevision15Model


# Its base-model and causal-LM outputs are Qwen2.5-VL's (`MultimodalBaseModelOutputWithPast`,
# `MultimodalCausalLMOutputWithPast`), and so are Croc's on them.
CrocLlavaOnevision15ModelOutputWithPast = CrocQwen2_5_VLModelOutputWithPast
CrocLlavaOnevision15CausalLMOutputWithPast = CrocQwen2_5_VLCausalLMOutputWithPast

register_croc_checkpoint_renames(CrocLlavaOnevision15ForConditionalGeneration,
                                 LlavaOnevision15ForConditionalGeneration)
# The layout `save_pretrained` writes for a generation model built here (the parent's renames reversed) keeps its
# language model under `model.model.`, which the parent's base-model rename would move to `language_model.model.`.
register_croc_checkpoint_renames(CrocLlavaOnevision15Model, LlavaOnevision15Model,
                                 load_only={r"^model\.model\.": "language_model."})


__all__ = [
    "CrocLlavaOnevision15CausalLMOutputWithPast",
    "CrocLlavaOnevision15ForConditionalGeneration",
    "CrocLlavaOnevision15Model",
    "CrocLlavaOnevision15ModelOutputWithPast",
    "CrocLlavaOnevision15PreTrainedModel",
]
