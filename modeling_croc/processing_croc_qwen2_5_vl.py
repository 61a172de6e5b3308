"""The processor of the Qwen2.5-VL Croc model: transformers' `Qwen2_5_VLProcessor` (native-resolution patches, each
image's `<|image_pad|>` expanded to its own merged-token count) for images and text.

Qwen2.5-VL's own processor also holds a video processor, which needs torchvision; this project runs without it (the
PIL image-processor backend), and stage 1.5 trains on images, so this subclass leaves the video processor out, as
`CrocOnevisionProcessor` does for OneVision. Qwen2-VL's and Qwen3-VL's processors are built the same way and take the
same image processor (Qwen2-VL's), so they share this module's `init_without_videos` and `CrocQwenImageBudgetMixin`
rather than rewriting them. Each class keeps its parent as its first base (`__mro__[1]`): an exported plain folder
names it (`modeling_croc.convert.to_llava.name_parent_processor`).
"""

import dataclasses
from collections.abc import Callable

from transformers import ProcessorMixin, Qwen2_5_VLProcessor


def init_without_videos(parent: type[ProcessorMixin]) -> Callable[..., None]:
    """The `__init__` of a subclass of `parent` (a Qwen processor of an image processor, a tokenizer and a video
    processor) that leaves the video processor out: images and text only."""

    # ProcessorMixin saves exactly the `__init__` arguments and takes its sub-processors from it.
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs) -> None:
        parent.__init__(self, image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                        chat_template=chat_template, **kwargs)

    return __init__


class CrocQwenImageBudgetMixin:
    """What training reads of a processor whose image processor is Qwen2-VL's (`size["longest_edge"]` the pixel
    budget, `patch_size * merge_size` one merged token's side): Qwen2-VL's, Qwen2.5-VL's and Qwen3-VL's, and GLM-4.1V's,
    whose resize counts an image as `temporal_patch_size` frames against the budget (`croc_budget_counts_frames`). A
    later base than the parent processor, which stays `__mro__[1]`."""

    # Whether the image processor's resize counts an image as `temporal_patch_size` frames against
    # `size["longest_edge"]` (GLM-4.1V's `smart_resize(num_frames=temporal_patch_size)`), where Qwen2-VL's counts one.
    croc_budget_counts_frames: bool = False

    def _pixels_per_token(self) -> int:
        # The budget pixels one merged token of an image takes: a merge window, once per frame the resize counts.
        processor = self.image_processor
        frames = processor.temporal_patch_size if self.croc_budget_counts_frames else 1
        return frames * (processor.patch_size * processor.merge_size) ** 2

    def _largest_pixels(self) -> int:
        # `size["longest_edge"]`; a size edited to another form (`{height, width}`, a number) loads, and the image
        # processor refuses it only at its first image: a ValueError here, which the run's checks say in one line.
        size = self.image_processor.size
        try:
            longest = size["longest_edge"]
        except (TypeError, KeyError, IndexError):
            longest = None
        if isinstance(longest, bool) or not isinstance(longest, (int, float)) or longest < 1:
            raise ValueError(f"its image processor's size ({size!r}) gives no pixel budget: Qwen2-VL's image "
                             "processors take size = {shortest_edge, longest_edge}, in pixels (min_pixels, max_pixels)")
        return int(longest)

    @property
    def num_image_tokens(self) -> int:
        """Merged visual tokens of an image at the image processor's largest size (`size["longest_edge"]`, in
        pixels: Qwen2-VL's `max_pixels`): the length estimate of an image row before its image is read (the exact
        count is `replace_image_token`'s)."""
        return max(1, self._largest_pixels() // self._pixels_per_token())

    # What stage 1.5 matches against the pool (`trainer.model_loading.fit_images_to_pool`): an image's whole
    # expansion is visual tokens.
    max_visual_tokens = num_image_tokens

    def limit_visual_tokens(self, max_tokens: int) -> None:
        """Resize images to at most `max_tokens` merged visual tokens (the image processor's largest size, in
        pixels, becomes `max_tokens` merge windows); larger limits than the current one change nothing."""
        processor = self.image_processor
        pixels = max(1, max_tokens) * self._pixels_per_token()
        if pixels < self._largest_pixels():
            processor.size = dataclasses.replace(processor.size, longest_edge=pixels)


class CrocQwen2_5_VLProcessor(Qwen2_5_VLProcessor, CrocQwenImageBudgetMixin):
    """`Qwen2_5_VLProcessor` without the video processor: images and text only."""

    __init__ = init_without_videos(Qwen2_5_VLProcessor)


__all__ = ["CrocQwen2_5_VLProcessor", "CrocQwenImageBudgetMixin", "init_without_videos"]
