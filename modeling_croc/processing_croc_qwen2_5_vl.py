"""The processor of the Qwen2.5-VL Croc model: transformers' `Qwen2_5_VLProcessor` (native-resolution patches, each
image's `<|image_pad|>` expanded to its own merged-token count) for images and text.

Qwen2.5-VL's own processor also holds a video processor, which needs torchvision; this project runs without it (the
PIL image-processor backend), and stage 1.5 trains on images, so this subclass leaves the video processor out, as
`CrocOnevisionProcessor` does for OneVision.
"""

import dataclasses

from transformers import Qwen2_5_VLProcessor


class CrocQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    """`Qwen2_5_VLProcessor` without the video processor: images and text only."""

    # ProcessorMixin saves exactly the `__init__` arguments and takes its sub-processors from it.
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                         chat_template=chat_template, **kwargs)

    @property
    def num_image_tokens(self) -> int:
        """Merged visual tokens of an image at the image processor's largest size (`size["longest_edge"]`, in
        pixels: Qwen2-VL's `max_pixels`): the length estimate of an image row before its image is read (the exact
        count is `replace_image_token`'s)."""
        processor = self.image_processor
        window = processor.patch_size * processor.merge_size
        return max(1, int(processor.size["longest_edge"]) // window**2)

    # What stage 1.5 matches against the pool (`trainer.model_loading.fit_images_to_pool`): an image's whole
    # expansion is visual tokens.
    max_visual_tokens = num_image_tokens

    def limit_visual_tokens(self, max_tokens: int) -> None:
        """Resize images to at most `max_tokens` merged visual tokens (the image processor's largest size, in
        pixels, becomes `max_tokens` merge windows); larger limits than the current one change nothing."""
        processor = self.image_processor
        window = processor.patch_size * processor.merge_size
        pixels = max(1, max_tokens) * window**2
        if pixels < int(processor.size["longest_edge"]):
            processor.size = dataclasses.replace(processor.size, longest_edge=pixels)


__all__ = ["CrocQwen2_5_VLProcessor"]
