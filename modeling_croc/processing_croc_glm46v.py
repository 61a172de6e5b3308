"""The processor of the GLM-4.6V Croc model: transformers' `Glm46VProcessor` (GLM-4.1V's, which it subclasses; only
a video frame's timestamp text differs) without the video processor, for images and text, with GLM-4.1V's image
budget (`CrocQwenImageBudgetMixin` counting an image as `temporal_patch_size` frames; `processing_croc_glm4v.py`).
The parent class stays the first base (`__mro__[1]`): an exported plain folder names it."""

from transformers import Glm46VProcessor

from .processing_croc_qwen2_5_vl import CrocQwenImageBudgetMixin, init_without_videos


class CrocGlm46VProcessor(Glm46VProcessor, CrocQwenImageBudgetMixin):
    """`Glm46VProcessor` without the video processor: images and text only."""

    __init__ = init_without_videos(Glm46VProcessor)
    croc_budget_counts_frames = True


__all__ = ["CrocGlm46VProcessor"]
