"""Croc on Gemma 4: a `Gemma4Config` (a vision tower at variable resolution pooled `pooling_kernel_size`^2 to one soft
token, an audio tower, a text model alternating sliding and global layers with per-layer inputs) with the Croc fields
of `CrocFieldsMixin`, defined and checked there once for every Croc config class."""

from huggingface_hub.dataclasses import strict
from transformers import Gemma4Config

from .configuration_croc import CrocConfigError, CrocFieldsMixin


@strict
class CrocGemma4Config(CrocFieldsMixin, Gemma4Config):
    r"""
    Configuration of a Croc model on `Gemma4ForConditionalGeneration`: the Gemma 4 fields (vision and audio towers,
    text model with its `layer_types`, per-layer inputs `hidden_size_per_layer_input`, `use_bidirectional_attention`,
    the image, video and audio tokens) plus the Croc fields of `CrocFieldsMixin`.

    An image's visual tokens are the vision embedder's outputs (`embed_vision`: the tower's patches average-pooled
    `pooling_kernel_size`^2 to one, RMS-normed and projected to the text width), as the language model reads them at
    the image placeholders: one per pooled cell of the image's own patch grid, so images of one batch have different
    counts (the image processor keeps each image's aspect ratio under `max_soft_tokens`). The construction-time check
    of the pool size uses one token; larger images are checked when they arrive.
    """

    model_type = "croc_gemma4"
    croc_variable_token_count = True

    def visual_tokens_per_image(self) -> int:
        """The fewest visual tokens an image can have: one pooled cell."""
        return 1

    def _check_croc_fields(self) -> None:
        super()._check_croc_fields()
        if self.text_config.use_bidirectional_attention == "all":
            # Every token sees every other: no causal language model for the next-token loss or the mixed mask.
            raise CrocConfigError("Gemma 4 with use_bidirectional_attention='all' is not causal; Croc trains its "
                                  "causal models (use_bidirectional_attention 'vision' or None)")


__all__ = ["CrocGemma4Config"]
