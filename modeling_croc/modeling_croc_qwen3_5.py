"""Croc on Qwen3.5: `Qwen3_5ForConditionalGeneration` with the stage-1.5 objectives.

Inference is exactly `Qwen3_5ForConditionalGeneration`. Its vision side is Qwen3-VL's without the DeepStack mergers
and its outputs are Qwen3-VL's, so the classes declare what Qwen3-VL's declare of its images
(`CrocQwen3VLImagesMixin`: the image grids and per-image token counts; `CrocQwen3VLForConditionalGenerationMixin`:
the output class and the grids of the VTR count), and nothing of DeepStack. In a stage-1.5 training forward the
visual tokens the pool replaces are the merger's outputs, every image with its own count; the language model keeps
the M-RoPE positions Qwen3.5 computes from `image_grid_thw` and `mm_token_type_ids`.

Attention: the text model is hybrid. `text_config.layer_types` mixes `"full_attention"` layers and
`"linear_attention"` ones (Gated DeltaNet: a causal convolution and a gated delta-rule recurrence, which read the
2D padding mask only, to zero padding before it enters the state). Croc's bidirectional span ("image" or "prompt")
can apply on the full-attention layers only: they receive the mixed mask (causal plus the span's blocks). A
linear-attention layer is causal by construction, whatever the span: it receives the mask its parent gives it (the
padding mask), and its output at a visual position reads that position and earlier ones only (checked in
tests/test_family_qwen3_5.py). So a visual token sees the later tokens of its image on the full-attention layers
(one in four in transformers' default layout, `full_attention_interval` 4), and only earlier ones on the others.

Packing is refused: besides the per-sample M-RoPE positions, the recurrence would carry its state from one packed
sample into the next (the parent's torch path keeps no sample boundary inside a row). The family's declaration is
this file; the mechanism is `stage15.py`.
"""

import torch
from transformers import Qwen3_5ForConditionalGeneration, Qwen3_5Model
from transformers.models.qwen3_5.modeling_qwen3_5 import Qwen3_5PreTrainedModel

from .configuration_croc_qwen3_5 import CrocQwen3_5Config
from .modeling_croc_qwen3_vl import (
    CrocQwen3VLForConditionalGenerationMixin,
    CrocQwen3VLImagesMixin,
    CrocQwen3VLModelOutputWithPast,
)
from .parent_wiring import croc_auto_classes_of, register_croc_checkpoint_renames
from .stage15 import CrocPreTrainedMixin


class CrocQwen3_5PreTrainedModel(CrocPreTrainedMixin, Qwen3_5PreTrainedModel):
    config: CrocQwen3_5Config
    croc_auto_classes = croc_auto_classes_of("qwen3_5", {
        "Qwen3_5Model": "CrocQwen3_5Model",
        "Qwen3_5ForConditionalGeneration": "CrocQwen3_5ForConditionalGeneration"})


class CrocQwen3_5ConstructionMixin:
    """Building the model leaves the global CPU random state as it found it.

    The parent's Gated DeltaNet layer draws its `A_log` in `__init__` with a tensor method (`uniform_`), which
    transformers' `no_init_weights` does not stop: on the meta device (a one-process load) nothing is drawn, under
    ZeRO-3's `zero.Init` (real tensors) one draw per linear layer is. The weights a checkpoint lacks (a Hub folder
    has no VTR head) are then initialised from a shifted stream, and a ZeRO-3 run left the one-process curve at its
    first step. The weights built here are the same; only the state after construction is restored. The base and
    generation classes of Qwen3.5 and Qwen3.5-MoE (the same linear layers) take it."""

    def __init__(self, config, *args, **kwargs) -> None:
        with torch.random.fork_rng(devices=[]):
            super().__init__(config, *args, **kwargs)


class CrocQwen3_5ModelMixin(CrocQwen3_5ConstructionMixin, CrocQwen3VLImagesMixin):
    """What a Croc base model on Qwen3.5's vision side and hybrid text model declares: its images as Qwen3-VL's
    (`CrocQwen3VLImagesMixin`), its construction's random state (`CrocQwen3_5ConstructionMixin`) and the packing
    refusal; shared by the dense family and the MoE one (`modeling_croc_qwen3_5_moe.py`), whose vision tower and
    attention layers are the same."""

    croc_packing_refusal = (
        "Qwen3.5's M-RoPE positions are computed per sample from its image grids, and its linear-attention layers "
        "would carry their recurrent state from one packed sample into the next; train it unpacked (packing: false)")


class CrocQwen3_5Model(CrocQwen3_5ModelMixin, CrocQwen3_5PreTrainedModel, Qwen3_5Model):
    """`Qwen3_5Model` with the prompt pool and the stage-1.5 input path (`CrocModelMixin`), its images declared as
    Qwen3-VL's (`CrocQwen3_5ModelMixin`)."""

    # Qwen3.5's base-model output is Qwen3-VL's (`MultimodalBaseModelOutputWithPast`), and so is Croc's on it; the
    # generation model's is Qwen3-VL's too (`CrocQwen3VLForConditionalGenerationMixin`).
    croc_output_class = CrocQwen3VLModelOutputWithPast


class CrocQwen3_5ForConditionalGeneration(CrocQwen3_5ConstructionMixin, CrocQwen3VLForConditionalGenerationMixin,
                                          CrocQwen3_5PreTrainedModel, Qwen3_5ForConditionalGeneration):
    """Croc on Qwen3.5 for generation and the three training stages. With `config.croc_pretraining` off (stages 1
    and 2, inference) this is `Qwen3_5ForConditionalGeneration`; in a stage-1.5 training forward the output also
    carries `lm_loss`, `vtr_loss` and `pool_ids`, every image counted with its own merged tokens, and the
    bidirectional span applies on the full-attention layers only (module docstring)."""

    croc_base_model_class = CrocQwen3_5Model


register_croc_checkpoint_renames(CrocQwen3_5ForConditionalGeneration, Qwen3_5ForConditionalGeneration)
register_croc_checkpoint_renames(CrocQwen3_5Model, Qwen3_5Model)


__all__ = [
    "CrocQwen3_5ForConditionalGeneration",
    "CrocQwen3_5Model",
    "CrocQwen3_5ModelMixin",
    "CrocQwen3_5PreTrainedModel",
]
