"""Croc on SmolVLM: a `SmolVLMConfig` (a SigLIP tower on fixed-size views, a pixel-shuffle connector, a Llama
language model) with the Croc fields of `CrocFieldsMixin`, defined and checked there once for every Croc config
class. What it declares beyond them (`CrocSmolVLMConfigMixin`) is shared with Idefics3, whose images are split and
counted the same way."""

from huggingface_hub.dataclasses import strict
from transformers import SmolVLMConfig

from .configuration_croc import CrocFieldsMixin


class CrocSmolVLMConfigMixin:
    """What a SmolVLM Croc config declares beyond the Croc fields, shared with Idefics3's
    (`configuration_croc_idefics3.py`), whose processor splits images into the same views and whose connector gives
    each view the same count: an image's tokens are its views', so images have different counts."""

    croc_variable_token_count = True

    def view_tokens(self) -> int:
        """Connector outputs of one view (a tile or the global view): the tower's patch grid over `scale_factor**2`
        (`SmolVLMModel.image_seq_len`)."""
        return (self.vision_config.image_size // self.vision_config.patch_size) ** 2 // self.scale_factor**2

    def visual_tokens_per_image(self) -> int:
        """The fewest visual tokens an image can have: its global view alone (`view_tokens`)."""
        return self.view_tokens()


@strict
class CrocSmolVLMConfig(CrocSmolVLMConfigMixin, CrocFieldsMixin, SmolVLMConfig):
    r"""
    Configuration of a Croc model on `SmolVLMForConditionalGeneration`: the SmolVLM fields (vision tower,
    `scale_factor`, the image token) plus the Croc fields of `CrocFieldsMixin`.

    SmolVLM's processor splits an image into a grid of tiles of the tower's size plus a global view of the whole
    image (a small image is the global view alone); every view gives `view_tokens()` connector outputs after the
    pixel shuffle, written as a run of `<image>` placeholders introduced by `<fake_token_around_image>` and
    `<row_r_col_c>` (tiles) or `<global-img>` (the global view, always the image's last). An image's visual tokens
    are all its views' tokens, tiles in grid order then the global view: `(rows * cols + 1) * view_tokens()`, so
    images of one batch have different counts; the row / column and separator tokens between the views are text,
    never replaced nor reconstructed, and with `bidirectional_span="image"` the image's whole extent (from its first
    to its last placeholder, those text tokens included) is one block. The construction-time check of the pool size
    uses one view's tokens (the fewest an image has); larger images are checked when they arrive.
    """

    model_type = "croc_smolvlm"


__all__ = ["CrocSmolVLMConfig", "CrocSmolVLMConfigMixin"]
