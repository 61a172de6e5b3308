"""Croc processor: a `LlavaProcessor` whose default chat template is Vicuna v1, as in LLaVA-1.5 and Croc."""

from __future__ import annotations

import copy
from typing import Any

from transformers import LlavaImageProcessorPil, LlavaProcessor

from .constants import IMAGE_TOKEN
from .conversation import VICUNA_V1, VICUNA_V1_SYSTEM

# "{system} USER: <image>\n{question} ASSISTANT: {answer}</s>USER: ...", rendered from the same template definition
# that training tokenises (`modeling_croc.conversation`).
VICUNA_V1_CHAT_TEMPLATE = VICUNA_V1.chat_template()

# How images become square pixel arrays: "square" resizes the short side and centre-crops (CLIP); "pad" first pads
# to a square with the mean colour (LLaVA-1.5 after stage 1), so nothing is cropped away.
IMAGE_ASPECT_RATIOS = ("square", "pad")


class CrocProcessor(LlavaProcessor):
    """`LlavaProcessor` (image processor + tokenizer, `<image>` expanded to the visual-token count) whose chat
    template defaults to Vicuna v1. Use the PIL image-processor backend where torchvision is not installed."""

    # The full signature is spelled out because ProcessorMixin saves exactly the `__init__` arguments.
    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        patch_size=None,
        vision_feature_select_strategy=None,
        chat_template=None,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=0,
        **kwargs,
    ):
        super().__init__(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=patch_size,
            vision_feature_select_strategy=vision_feature_select_strategy,
            chat_template=chat_template if chat_template is not None else VICUNA_V1_CHAT_TEMPLATE,
            image_token=image_token,
            num_additional_image_tokens=num_additional_image_tokens,
            **kwargs,
        )

    @property
    def num_image_tokens(self) -> int:
        """Visual tokens one image expands to (576 for CLIP ViT-L/14 at 336 px with the CLS token dropped, 729 for
        SigLIP so400m/14 at 384 px)."""
        cropped = getattr(self.image_processor, "do_center_crop", False)
        crop = getattr(self.image_processor, "crop_size", None) if cropped else None
        crop = crop or self.image_processor.size
        height, width = crop["height"], crop["width"]
        count = (height // self.patch_size) * (width // self.patch_size) + self.num_additional_image_tokens
        return count - 1 if self.vision_feature_select_strategy == "default" else count


def pad_colour(image_processor: Any) -> tuple[int, int, int]:
    """The RGB colour the `pad` aspect ratio fills the square with: the image processor's mean as 8-bit values,
    truncated as `LlavaImageProcessor.pad_to_square` computes it (CLIP's mean gives (122, 116, 104)).

    `modeling_croc.images.load_image` composites transparent pixels onto this colour, so an RGBA image's transparent
    area and the padding around it become the same pixels."""
    mean = getattr(image_processor, "image_mean", None)
    if mean is None:
        return (0, 0, 0)
    if isinstance(mean, (int, float)):
        mean = [mean] * 3
    red, green, blue = (int(value * 255) for value in mean)
    return (red, green, blue)


def with_image_aspect_ratio(processor: CrocProcessor, aspect_ratio: str) -> CrocProcessor:
    """`processor` with its image processor set to prepare images the `aspect_ratio` way (see `IMAGE_ASPECT_RATIOS`):
    `processor` itself when it already does, else a shallow copy (the tokenizer is shared) with a new image processor.

    The one place that decides how pixels are prepared: training datasets call `processor.image_processor` and the
    saved processor is the same object, so a model is prompted with exactly the pixels it was trained on.
    """
    if aspect_ratio not in IMAGE_ASPECT_RATIOS:
        raise ValueError(f"image_aspect_ratio must be one of {IMAGE_ASPECT_RATIOS}, got {aspect_ratio!r}")
    current = processor.image_processor
    wants_pad = aspect_ratio == "pad"
    if bool(getattr(current, "do_pad", False)) == wants_pad:
        return processor
    settings = {key: value for key, value in current.to_dict().items()
                if key not in ("image_processor_type", "processor_class", "do_pad")}
    # A processor without a centre crop (SigLIP resizes straight to the square) must not get LLaVA's default one.
    settings.setdefault("do_center_crop", False)
    processor = copy.copy(processor)
    processor.image_processor = LlavaImageProcessorPil(**settings, do_pad=wants_pad)
    return processor


__all__ = [
    "IMAGE_ASPECT_RATIOS",
    "VICUNA_V1_CHAT_TEMPLATE",
    "VICUNA_V1_SYSTEM",
    "CrocProcessor",
    "pad_colour",
    "with_image_aspect_ratio",
]
