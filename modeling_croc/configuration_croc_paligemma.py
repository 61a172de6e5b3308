"""Croc on PaliGemma: a `PaliGemmaConfig` (a SigLIP tower, a linear projector, a Gemma text model for PaliGemma 1 or
a Gemma 2 one for PaliGemma 2) with the Croc fields of `CrocFieldsMixin`, defined and checked there once for every
Croc config class."""

from huggingface_hub.dataclasses import strict
from transformers import PaliGemmaConfig

from .configuration_croc import CrocFieldsMixin


@strict
class CrocPaliGemmaConfig(CrocFieldsMixin, PaliGemmaConfig):
    r"""
    Configuration of a Croc model on `PaliGemmaForConditionalGeneration`: the PaliGemma fields (vision tower, text
    model: Gemma for PaliGemma 1, Gemma 2 with its sliding and global `layer_types` and soft-capping for PaliGemma
    2, `image_token_index`, `projection_dim`) plus the Croc fields of `CrocFieldsMixin`.

    An image's visual tokens are the projector's outputs, one per patch of the tower's grid
    (`(image_size // patch_size) ** 2`, which PaliGemma's config writes into `text_config.num_image_tokens`), as the
    language model reads them at the `<image>` placeholders (unscaled: Gemma scales only token embeddings by
    `sqrt(hidden_size)`). Every image has exactly that count.
    """

    model_type = "croc_paligemma"
    croc_variable_token_count = False

    def visual_tokens_per_image(self) -> int:
        """The fixed visual-token count of every image: the tower's patch grid."""
        return (self.vision_config.image_size // self.vision_config.patch_size) ** 2


__all__ = ["CrocPaliGemmaConfig"]
