"""The processor of the InternVL Croc model: transformers' `InternVLProcessor` (dynamic tiling: each image's
`<IMG_CONTEXT>` in a prompt expanded to `<img>` + tiles x `image_seq_length` `<IMG_CONTEXT>` + `</img>`, the image's
tiles, thumbnail included, all in `pixel_values`) for images and text.

Two things differ for training:

* no video processor: InternVL's needs torchvision, which this project runs without (the image processor is
  GotOcr2's PIL backend), and stage 1.5 trains on images, as `CrocQwen2_5_VLProcessor` leaves Qwen2.5-VL's out;
* the image processor tiles when called alone: `InternVLProcessor` passes `crop_to_patches=True` to it by default
  (its `images_kwargs`) while the image processor's own default is False; the training dataset calls the image
  processor itself, so here its `crop_to_patches` is the processor's default, and both tile an image alike.
"""

from transformers import InternVLProcessor


class CrocInternVLProcessor(InternVLProcessor):
    """`InternVLProcessor` without the video processor, its image processor tiling as the processor does, with the
    largest per-image token count (`num_image_tokens`) the training dataset estimates row lengths from."""

    # ProcessorMixin saves exactly the `__init__` arguments and takes its sub-processors from it.
    def __init__(self, image_processor=None, tokenizer=None, image_seq_length: int = 256, chat_template=None,
                 **kwargs):
        super().__init__(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                         image_seq_length=image_seq_length, chat_template=chat_template, **kwargs)
        if image_processor is not None:
            image_processor.crop_to_patches = bool(self.images_kwargs.get("crop_to_patches", False))

    @property
    def num_image_tokens(self) -> int:
        """`<IMG_CONTEXT>` placeholders of an image with the most tiles (`max_patches`, plus the thumbnail when an
        image is tiled): the length estimate of an image row before its image is read (the exact count is
        `replace_image_token`'s)."""
        processor = self.image_processor
        max_patches = int(processor.max_patches)
        tiles = max_patches + 1 if processor.crop_to_patches and max_patches > 1 else 1
        return tiles * int(self.image_seq_length)

    # What stage 1.5 matches against the pool (`trainer.model_loading.fit_images_to_pool`): an image's whole
    # expansion is visual tokens.
    max_visual_tokens = num_image_tokens

    def limit_visual_tokens(self, max_tokens: int) -> None:
        """Tile images into fewer tiles, so that an image has at most `max_tokens` placeholders (one tile at least:
        then images are not tiled); larger limits than the current one change nothing."""
        if max_tokens >= self.num_image_tokens:
            return
        tiles = max(1, int(max_tokens) // int(self.image_seq_length))
        self.image_processor.max_patches = tiles - 1 if tiles > 2 else 1


__all__ = ["CrocInternVLProcessor"]
