"""Croc on LLaVA-OneVision: a `LlavaOnevisionConfig` (AnyRes crops, a variable number of visual tokens per image)
with the Croc fields of `CrocFieldsMixin`, defined and checked there once for every Croc config class."""

from huggingface_hub.dataclasses import strict
from transformers import LlavaOnevisionConfig

from .configuration_croc import CrocFieldsMixin, _has_cls_token


@strict
class CrocOnevisionConfig(CrocFieldsMixin, LlavaOnevisionConfig):
    r"""
    Configuration of a Croc model on `LlavaOnevisionForConditionalGeneration`: the OneVision fields (image grid
    pinpoints, `vision_aspect_ratio`, ...) plus the Croc fields of `CrocFieldsMixin` (`croc_preset`, the pool,
    matching, masking, mixed attention and VTR settings).

    Every image is a base view plus AnyRes crops, unpadded and joined by newline tokens, so images of one batch have
    different token counts; stage 1.5 masks, matches and reconstructs each image with its own count. The
    construction-time check of the pool size uses one view's tokens (the fewest an image has); larger images are
    checked when they arrive.
    """

    model_type = "croc_onevision"
    croc_variable_token_count = True

    def visual_tokens_per_image(self) -> int:
        """Visual tokens of one view (the base image): the tower's patch grid, plus its class token if kept."""
        grid = (self.vision_config.image_size // self.vision_config.patch_size) ** 2
        return grid + (1 if self.vision_feature_select_strategy == "full" and _has_cls_token(self.vision_config) else 0)


__all__ = ["CrocOnevisionConfig"]
