"""Croc on LFM2-VL: an `Lfm2VlConfig` (a SigLIP2 NaFlex tower, a pixel-unshuffle projector, an LFM2 language model
of short gated-convolution and full-attention layers) with the Croc fields of `CrocFieldsMixin`, defined and checked
there once for every Croc config class."""

from huggingface_hub.dataclasses import strict
from transformers import Lfm2VlConfig

from .configuration_croc import CrocFieldsMixin


@strict
class CrocLfm2VlConfig(CrocFieldsMixin, Lfm2VlConfig):
    r"""
    Configuration of a Croc model on `Lfm2VlForConditionalGeneration`: the LFM2-VL fields (vision tower,
    `downsample_factor`, projector, the image token) plus the Croc fields of `CrocFieldsMixin`.

    LFM2-VL's processor resizes an image to a multiple of the tower's patches (a small one) or cuts it into tiles of
    `tile_size` plus a thumbnail of the whole image (a large one); each tile or thumbnail is a NaFlex view of its own
    patch grid, unshuffled by `downsample_factor` into `(h / factor) * (w / factor)` tokens, written as a run of
    `<image>` placeholders: `<|image_start|>`, then per tile `<|img_row_r_col_c|>` and its run, then
    `<|img_thumbnail|>` and the thumbnail's run, then `<|image_end|>`. An image's visual tokens are all its tiles'
    tokens, tiles in grid order then the thumbnail, so images of one batch have different counts; the tile markers
    between them are text, never replaced nor reconstructed, and with `bidirectional_span="image"` the image's whole
    extent is one block. The text model's `text_config.layer_types` mixes `"conv"` layers (a causal depthwise
    convolution, reading the padding mask only) and `"full_attention"` ones: Croc's bidirectional span applies on the
    full-attention layers only (`modeling_croc_lfm2_vl.py`). The construction-time check of the pool size uses one
    token (the image processor's bounds are not in this config); larger images are checked when they arrive.
    """

    model_type = "croc_lfm2_vl"
    croc_variable_token_count = True

    def visual_tokens_per_image(self) -> int:
        """The fewest visual tokens an image can have: one unshuffled block (the image processor's
        `min_image_tokens` is not in the model's config)."""
        return 1


__all__ = ["CrocLfm2VlConfig"]
