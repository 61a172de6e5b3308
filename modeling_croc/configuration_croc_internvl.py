"""Croc on InternVL: an `InternVLConfig` (an InternViT tower on fixed-size tiles, a pixel-shuffle downsampling, an
MLP projector, a Qwen2 / Llama language model) with the Croc fields of `CrocFieldsMixin`, defined and checked there
once for every Croc config class."""

from huggingface_hub.dataclasses import strict
from transformers import InternVLConfig

from .configuration_croc import CrocFieldsMixin


@strict
class CrocInternVLConfig(CrocFieldsMixin, InternVLConfig):
    r"""
    Configuration of a Croc model on `InternVLForConditionalGeneration`: the InternVL fields (vision tower,
    `downsample_ratio`, feature layer and strategy, the image context token) plus the Croc fields of
    `CrocFieldsMixin`.

    InternVL's processor cuts every image into tiles of the tower's size (dynamic tiling, plus a thumbnail when
    there are several); each tile gives a fixed number of projected tokens after the pixel shuffle
    (`tile_tokens()`), and the image is one run `<img>` + its tiles' `<IMG_CONTEXT>` placeholders + `</img>`. An
    image's visual tokens are all of its tiles' tokens, in the processor's tile order: `tiles * tile_tokens()`, so
    images of one batch have different counts; stage 1.5 masks, matches and reconstructs each image with its own
    count. The construction-time check of the pool size uses one tile's tokens (the fewest an image has); larger
    images are checked when they arrive.
    """

    model_type = "croc_internvl"
    croc_variable_token_count = True

    def tile_tokens(self) -> int:
        """Projected tokens of one tile: the tower's patch grid (its class token dropped by the `default` strategy)
        shrunk by `downsample_ratio` on each side."""
        size, patch = self.vision_config.image_size, self.vision_config.patch_size
        patches = (size[0] // patch[0]) * (size[1] // patch[1])
        return int(patches * self.downsample_ratio**2)

    def visual_tokens_per_image(self) -> int:
        """The fewest visual tokens an image can have: one tile's (`tile_tokens`)."""
        return self.tile_tokens()


__all__ = ["CrocInternVLConfig"]
