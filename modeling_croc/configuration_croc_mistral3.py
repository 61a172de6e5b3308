"""Croc on Mistral 3: a `Mistral3Config` (a Pixtral tower at native resolution, a 2x2 patch merger, a Mistral
language model) with the Croc fields of `CrocFieldsMixin`, defined and checked there once for every Croc config
class."""

from huggingface_hub.dataclasses import strict
from transformers import Mistral3Config

from .configuration_croc import CrocFieldsMixin


@strict
class CrocMistral3Config(CrocFieldsMixin, Mistral3Config):
    r"""
    Configuration of a Croc model on `Mistral3ForConditionalGeneration`: the Mistral 3 fields (Pixtral vision tower,
    `spatial_merge_size`, feature layer, the image token) plus the Croc fields of `CrocFieldsMixin`.

    An image's visual tokens are the patch merger's projected outputs, what the language model reads at its `[IMG]`
    placeholders: `(height // (patch_size * spatial_merge_size)) * (width // (patch_size * spatial_merge_size))` for
    its `image_sizes` entry, so images of one batch have different counts. Pixtral's processor closes every row of
    an image's placeholders with `[IMG_BREAK]` (the last with `[IMG_END]`): those are text tokens, never visual
    tokens, never replaced by the pool nor reconstructed; in the `"image"` span the block is the image's whole extent,
    its break tokens included (`CrocModelMixin.croc_image_block_ids`). The construction-time check of the pool
    size uses one merged token; larger images are checked when they arrive.
    """

    model_type = "croc_mistral3"
    croc_variable_token_count = True

    def visual_tokens_per_image(self) -> int:
        """The fewest visual tokens an image can have: one merged window of `spatial_merge_size**2` patches."""
        return 1


__all__ = ["CrocMistral3Config"]
