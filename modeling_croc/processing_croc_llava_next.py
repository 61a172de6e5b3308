"""The processor of the LLaVA-NeXT Croc model: transformers' `LlavaNextProcessor` (AnyRes crops, each image's
`<image>` expanded to its own packed token count by `replace_image_token`) with the length estimate Croc's training
dataset reads besides.

`LlavaNextProcessor` works here as it is (it has no video processor; its image processor has a PIL backend,
`LlavaNextImageProcessorPil`). What it lacks for training is `num_image_tokens`: the most tokens any image can expand
to, which the dataset holds as a row's length estimate before its image is read (the exact count of an image is
`replace_image_token`'s, the same rule `__call__` expands prompts with at inference).
"""

from transformers import LlavaNextProcessor


class CrocLlavaNextProcessor(LlavaNextProcessor):
    """`LlavaNextProcessor` plus `num_image_tokens`, the largest per-image token count."""

    @property
    def num_image_tokens(self) -> int:
        """Tokens of an image filling the largest AnyRes grid (`image_grid_pinpoints`) with its own aspect ratio, so
        nothing is unpadded: base view, every crop and one newline token per row of the grid. No image expands to
        more: any other image is packed onto a grid of at most that many crops, less its padding."""
        crop = self.image_processor.crop_size
        height, width = (crop["height"], crop["width"]) if isinstance(crop, dict) else (crop.height, crop.width)
        most = max(self._get_number_of_features(int(grid_height), int(grid_width), height, width)
                   for grid_height, grid_width in self.image_processor.image_grid_pinpoints)
        return most - 1 if self.vision_feature_select_strategy == "default" else most

    # What stage 1.5 matches against the pool (`trainer.model_loading.fit_images_to_pool`): an image's whole
    # expansion is visual tokens.
    max_visual_tokens = num_image_tokens


__all__ = ["CrocLlavaNextProcessor"]
