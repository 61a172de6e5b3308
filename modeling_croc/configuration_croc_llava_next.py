"""Croc on LLaVA-NeXT: a `LlavaNextConfig` (AnyRes crops of a fixed-resolution tower, unpadded and joined by newline
tokens) with the Croc fields of `CrocFieldsMixin`, defined and checked there once for every Croc config class."""

from huggingface_hub.dataclasses import strict
from transformers import LlavaNextConfig

from .configuration_croc import CrocFieldsMixin, _has_cls_token


@strict
class CrocLlavaNextConfig(CrocFieldsMixin, LlavaNextConfig):
    r"""
    Configuration of a Croc model on `LlavaNextForConditionalGeneration`: the LLaVA-NeXT fields (vision tower,
    `image_grid_pinpoints`, feature layer and strategy, the image token) plus the Croc fields of `CrocFieldsMixin`.

    An image's visual tokens are everything its `<image>` placeholders stand for in LLaVA-NeXT's packing: the base
    view's projected tokens, then the AnyRes crops' tokens arranged on the image's grid, unpadded to its aspect
    ratio, with a learned newline token closing every grid row. Images of one batch therefore have different
    counts (`image_sizes` decides each); stage 1.5 masks, matches and reconstructs each image with its own count
    (newline tokens included: they are what the language model reads there). The construction-time check of the
    pool size uses one view's tokens (the fewest an image has); larger images are checked when they arrive.
    """

    model_type = "croc_llava_next"
    croc_variable_token_count = True

    def visual_tokens_per_image(self) -> int:
        """Visual tokens of one view (the base image): the tower's patch grid, plus its class token if kept."""
        grid = (self.vision_config.image_size // self.vision_config.patch_size) ** 2
        return grid + (1 if self.vision_feature_select_strategy == "full" and _has_cls_token(self.vision_config) else 0)


__all__ = ["CrocLlavaNextConfig"]
