"""The processor of the Mistral 3 Croc model: Pixtral's (each image's `[IMG]` in a prompt expanded to one row of `[IMG]`
tokens per row of merged patches, every row closed by `[IMG_BREAK]`, the last by `[IMG_END]`; images at their own
resolution, padded to the batch's largest height and width, with `image_sizes`) for images and text.

transformers' `PixtralProcessor` cannot be imported without torchvision (its module imports the torchvision image
processor's helpers), which this project runs without. `PixtralProcessor` here is the same processor on
`ProcessorMixin`, written for this package: the same `__init__` arguments, saved files and expansion rule, so a folder
it saves names `PixtralProcessor` and loads natively where torchvision is installed (`name_parent_processor` names the
parent class of `CrocMistral3Processor`). Its image processor is Pixtral's PIL backend (`PixtralImageProcessorPil`).

What training needs besides: `num_image_tokens` (the length estimate of an image row before its image is read), the
image processor resizing to merged windows when called alone (the training dataset calls it itself; the processor
passes the merged patch size to it), and `image_expansion_has_structure` (an image's ids are its whole expansion,
break tokens included, `trainer.data`).
"""

import dataclasses
import math

from transformers import ProcessorMixin


class PixtralProcessor(ProcessorMixin):
    """Pixtral's processor (`transformers.PixtralProcessor`'s arguments and expansion), importable without
    torchvision."""

    def __init__(self, image_processor=None, tokenizer=None, patch_size: int = 16, spatial_merge_size: int = 1,
                 chat_template=None, image_token="[IMG]", image_break_token="[IMG_BREAK]",
                 image_end_token="[IMG_END]", **kwargs):
        super().__init__(image_processor, tokenizer, chat_template=chat_template)
        self.patch_size = patch_size
        self.spatial_merge_size = spatial_merge_size
        self.image_token = image_token
        self.image_break_token = image_break_token
        self.image_end_token = image_end_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.image_break_token_id = tokenizer.convert_tokens_to_ids(image_break_token)
        self.image_end_token_id = tokenizer.convert_tokens_to_ids(image_end_token)

    @property
    def image_token_ids(self) -> list[int]:
        return [self.image_token_id, self.image_break_token_id, self.image_end_token_id]

    @property
    def window(self) -> int:
        """Pixels of one merged token's side: the patch size times the spatial merge."""
        return int(self.patch_size) * int(self.spatial_merge_size)

    def _process_images(self, images, **images_kwargs):
        images_kwargs["patch_size"] = self.window
        return super()._process_images(images, **images_kwargs)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        """One image's expansion: `width // window` `[IMG]` a row of merged windows, each row closed by
        `[IMG_BREAK]`, the last by `[IMG_END]`."""
        height, width = (int(side) for side in image_inputs["image_sizes"][image_idx])
        row = self.image_token * (width // self.window) + self.image_break_token
        expansion = row * (height // self.window)
        return expansion[: -len(self.image_break_token)] + self.image_end_token

    @property
    def model_input_names(self):
        return self.tokenizer.model_input_names + self.image_processor.model_input_names + ["image_sizes"]


class CrocMistral3Processor(PixtralProcessor):
    """Pixtral's processor, its image processor resizing to merged windows when called alone, with the largest
    per-image token count (`num_image_tokens`) the training dataset estimates row lengths from."""

    # The training dataset inserts an image's whole expansion (break and end tokens included), tokenised.
    image_expansion_has_structure = True

    def __init__(self, image_processor=None, tokenizer=None, patch_size: int = 16, spatial_merge_size: int = 1,
                 chat_template=None, **kwargs):
        super().__init__(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
                         spatial_merge_size=spatial_merge_size, chat_template=chat_template, **kwargs)
        if image_processor is not None:
            image_processor.patch_size = {"height": self.window, "width": self.window}

    @property
    def num_image_tokens(self) -> int:
        """Tokens of the largest image (a square of `size["longest_edge"]` pixels, rounded up to merged windows):
        its `[IMG]` tokens and one break (or end) token a row. No image expands to more."""
        size = self.image_processor.size
        longest = size["longest_edge"] if isinstance(size, dict) else size.longest_edge
        side = -(-int(longest) // self.window)
        return side * (side + 1)

    @property
    def max_visual_tokens(self) -> int:
        """`[IMG]` tokens (visual tokens) of the largest image: `num_image_tokens` without the break / end tokens."""
        size = self.image_processor.size
        longest = size["longest_edge"] if isinstance(size, dict) else size.longest_edge
        side = -(-int(longest) // self.window)
        return side * side

    def limit_visual_tokens(self, max_tokens: int) -> None:
        """Resize images to at most `max_tokens` visual tokens: the longest edge becomes the most merged windows
        whose square holds no more (one window at least); larger limits than the current one change nothing."""
        if max_tokens >= self.max_visual_tokens:
            return
        longest = max(1, math.isqrt(max(1, int(max_tokens)))) * self.window
        size = self.image_processor.size
        if isinstance(size, dict):
            self.image_processor.size = {**size, "longest_edge": longest}
        else:
            self.image_processor.size = dataclasses.replace(size, longest_edge=longest)


__all__ = ["CrocMistral3Processor", "PixtralProcessor"]
