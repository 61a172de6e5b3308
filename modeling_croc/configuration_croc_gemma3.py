"""Croc on Gemma 3: a `Gemma3Config` (a SigLIP tower, an average-pooling projector to `mm_tokens_per_image` tokens,
a text model alternating sliding and global layers) with the Croc fields of `CrocFieldsMixin`, defined and checked
there once for every Croc config class."""

from huggingface_hub.dataclasses import strict
from transformers import Gemma3Config

from .configuration_croc import CrocFieldsMixin


@strict
class CrocGemma3Config(CrocFieldsMixin, Gemma3Config):
    r"""
    Configuration of a Croc model on `Gemma3ForConditionalGeneration`: the Gemma 3 fields (vision tower, text model
    with its `layer_types`, `mm_tokens_per_image`, the image and begin / end-of-image tokens) plus the Croc fields
    of `CrocFieldsMixin`.

    An image's visual tokens are the projector's outputs: the tower's patch grid average-pooled to
    `mm_tokens_per_image` tokens (`sqrt(mm_tokens_per_image)` per side), RMS-normed and projected to the text width,
    as the language model reads them at the image placeholders (unscaled: Gemma 3 scales only token embeddings by
    `sqrt(hidden_size)`). Every image has exactly that count; a pan-and-scan crop is an image of its own with the
    same count, so stage 1.5 masks, matches and reconstructs each crop as an image.
    """

    model_type = "croc_gemma3"
    croc_variable_token_count = False

    def visual_tokens_per_image(self) -> int:
        """The fixed visual-token count of every image (and of every pan-and-scan crop): `mm_tokens_per_image`."""
        return self.mm_tokens_per_image


__all__ = ["CrocGemma3Config"]
