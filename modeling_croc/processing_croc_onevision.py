"""The processor of the OneVision Croc model: transformers' `LlavaOnevisionProcessor` (AnyRes crops, each image's
`<image>` expanded to its own token count) for images and text.

OneVision's own processor also holds a video processor, which needs torchvision; this project runs without it (the
PIL image-processor backend), and stage 1.5 trains on images, so this subclass leaves the video processor out.
"""

import math

from transformers import LlavaOnevisionProcessor

from .constants import IMAGE_TOKEN


class CrocOnevisionProcessor(LlavaOnevisionProcessor):
    """`LlavaOnevisionProcessor` without the video processor: images (AnyRes) and text only."""

    # The full signature is spelled out because ProcessorMixin saves exactly the `__init__` arguments and takes its
    # sub-processors from it (here: image processor and tokenizer).
    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        num_image_tokens=None,
        vision_feature_select_strategy=None,
        chat_template=None,
        image_token=IMAGE_TOKEN,
        vision_aspect_ratio="anyres_max_9",
        **kwargs,
    ):
        super().__init__(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            num_image_tokens=num_image_tokens,
            vision_feature_select_strategy=vision_feature_select_strategy,
            chat_template=chat_template,
            image_token=image_token,
            vision_aspect_ratio=vision_aspect_ratio,
            **kwargs,
        )

    @property
    def max_visual_tokens(self) -> int:
        """At least as many tokens as any image expands to (measured: within 1% of the most at OneVision's own
        settings): what stage 1.5 masks and matches one-to-one, checked against the pool before a run reads its data.

        An image takes one `image_grid_pinpoints` grid; unpadding then trims its rows or its columns (by the image's
        aspect ratio) and `vision_aspect_ratio`'s cap shrinks a large result, which can *add* newline tokens to a
        trimmed grid. So the bound is the maximum over every trim of every grid (some trims select another grid), each counted by the processor's own
        `_get_unpadded_features` (an aspect ratio equal to the trimmed grid's reproduces that trim), plus the base
        view."""
        side = math.isqrt(self.num_image_tokens)  # the base view's patches per side
        crop = self.image_processor.size
        crop_side = crop["height"] if isinstance(crop, dict) else crop.height
        most = 0
        for grid_height, grid_width in self.image_processor.image_grid_pinpoints:
            scale_height, scale_width = int(grid_height) // crop_side, int(grid_width) // crop_side
            rows, columns = side * scale_height, side * scale_width
            trims = [(rows, width) for width in range(1, columns + 1)] + [(height, columns) for height in range(1, rows)]
            for height, width in trims:
                features, newlines = self._get_unpadded_features(height, width, side, side, scale_height, scale_width)
                most = max(most, features + newlines)
        most += self.num_image_tokens
        return most - 1 if self.vision_feature_select_strategy == "default" else most  # as `replace_image_token`


__all__ = ["CrocOnevisionProcessor"]
