"""The processor of the OneVision Croc model: transformers' `LlavaOnevisionProcessor` (AnyRes crops, each image's
`<image>` expanded to its own token count) for images and text.

OneVision's own processor also holds a video processor, which needs torchvision; this project runs without it (the
PIL image-processor backend), and stage 1.5 trains on images, so this subclass leaves the video processor out.
"""

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


__all__ = ["CrocOnevisionProcessor"]
