"""Croc on LFM2-VL: `Lfm2VlForConditionalGeneration` with the stage-1.5 objectives.

Inference is exactly `Lfm2VlForConditionalGeneration`. LFM2-VL's vision outputs come per tile: every row of
`pixel_values` `(tiles, max patches, 3 * P * P)` is one NaFlex view (a tile or the thumbnail of a large image, or a
small image whole) with its `spatial_shapes` and `pixel_attention_mask`, and `get_image_features` returns one tensor
per view. Which views make an image is in the token layout only: each view is a run of `<image>` placeholders, tiles
introduced by `<|img_row_r_col_c|>`, the thumbnail by `<|img_thumbnail|>`, and `<|image_end|>` closes every image. An
image, for Croc, is all its views' tokens (as SmolVLM's and InternVL's tiles): in a stage-1.5 training forward the
views are joined back into images by that layout (`CrocLayoutImagesMixin`, shared with SmolVLM and Idefics3, whose
marker sits before an image's last run where LFM2-VL's sits after it), masked, matched to the pool and reconstructed with their
own count, and with `bidirectional_span="image"` the image's whole extent (its views and the tile markers between
them) is one block. The processor's `use_image_special_tokens=False` layout (no markers) is refused in one line.

Attention: the text model is hybrid. `text_config.layer_types` (from `full_attn_idxs`) mixes `"full_attention"`
layers and `"conv"` ones (LFM2's short gated convolution: a causal depthwise convolution over `conv_L_cache`
positions, which reads the 2D padding mask only, to zero padding before it enters the window). As on Qwen3.5's
linear-attention layers (`attention_mask.RECURRENT_LAYER_TYPES`, the one mechanism), Croc's bidirectional span
applies on the full-attention layers only: a conv layer receives its parent's padding mask on both attention paths,
and its output at a visual position reads that position and earlier ones only (tests/test_family_lfm2_vl.py).

Packing is refused: the conv layers keep no sample boundary inside a row, so a packed sample's first positions
would read the previous sample's last ones. The final norm of LFM2's text model is its `embedding_norm`
(`croc_final_norm`). The family's declaration is this file; the mechanism is `stage15.py`.
"""

from dataclasses import dataclass

from torch import nn
from transformers import Lfm2VlForConditionalGeneration, Lfm2VlModel
from transformers.models.lfm2_vl.modeling_lfm2_vl import (
    Lfm2VlCausalLMOutputWithPast,
    Lfm2VlModelOutputWithPast,
    Lfm2VlPreTrainedModel,
)

from .configuration_croc_lfm2_vl import CrocLfm2VlConfig
from .modeling_croc_smolvlm import CrocLayoutImagesGenerationMixin, CrocLayoutImagesMixin
from .parent_wiring import croc_auto_classes_of, register_croc_checkpoint_renames
from .stage15 import CrocCausalLMOutputFields, CrocModelOutputFields, CrocPreTrainedMixin


@dataclass
class CrocLfm2VlModelOutputWithPast(CrocModelOutputFields, Lfm2VlModelOutputWithPast):
    """`Lfm2VlModelOutputWithPast` plus what the stage-1.5 losses need (`CrocModelOutputFields`)."""


@dataclass
class CrocLfm2VlCausalLMOutputWithPast(CrocCausalLMOutputFields, Lfm2VlCausalLMOutputWithPast):
    """`Lfm2VlCausalLMOutputWithPast` plus the Croc loss terms and the pool assignment."""


class CrocLfm2VlPreTrainedModel(CrocPreTrainedMixin, Lfm2VlPreTrainedModel):
    config: CrocLfm2VlConfig
    croc_auto_classes = croc_auto_classes_of("lfm2_vl", {
        "Lfm2VlModel": "CrocLfm2VlModel",
        "Lfm2VlForConditionalGeneration": "CrocLfm2VlForConditionalGeneration"})


class CrocLfm2VlModel(CrocLayoutImagesMixin, CrocLfm2VlPreTrainedModel, Lfm2VlModel):
    """`Lfm2VlModel` with the prompt pool and the stage-1.5 input path (`CrocModelMixin`); its images are joined
    from their views by the token layout (`CrocLayoutImagesMixin`: `<|image_end|>` follows an image's last run)."""

    croc_output_class = CrocLfm2VlModelOutputWithPast
    croc_image_inputs = ("spatial_shapes", "pixel_attention_mask")
    croc_image_marker_side = "after"
    croc_image_layout = ("LFM2-VL rows must close their images with one `<|image_end|>` token (the processor's "
                         "use_image_special_tokens=True, its default)")
    croc_packing_refusal = (
        "LFM2's convolution layers would carry their window from one packed sample into the next (they keep no "
        "sample boundary inside a row); train it unpacked (packing: false)")

    @property
    def croc_final_norm(self) -> nn.Module:
        """LFM2's text model ends with `embedding_norm` (it has no `norm`)."""
        return self.language_model.embedding_norm


class CrocLfm2VlForConditionalGeneration(CrocLayoutImagesGenerationMixin, CrocLfm2VlPreTrainedModel,
                                         Lfm2VlForConditionalGeneration):
    """Croc on LFM2-VL for generation and the three training stages. With `config.croc_pretraining` off (stages 1
    and 2, inference) this is `Lfm2VlForConditionalGeneration`; in a stage-1.5 training forward the output also
    carries `lm_loss`, `vtr_loss` and `pool_ids`, every image counted with all its views' tokens, and the
    bidirectional span applies on the full-attention layers only (module docstring)."""

    croc_base_model_class = CrocLfm2VlModel
    croc_output_class = CrocLfm2VlCausalLMOutputWithPast


register_croc_checkpoint_renames(CrocLfm2VlForConditionalGeneration, Lfm2VlForConditionalGeneration)
register_croc_checkpoint_renames(CrocLfm2VlModel, Lfm2VlModel)


__all__ = [
    "CrocLfm2VlCausalLMOutputWithPast",
    "CrocLfm2VlForConditionalGeneration",
    "CrocLfm2VlModel",
    "CrocLfm2VlPreTrainedModel",
]
