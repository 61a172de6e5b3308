"""The processor of the Qwen2-VL Croc model: transformers' `Qwen2VLProcessor` for images and text (Qwen2-VL's image
processor: 14-px patches, 2x2 merge; each image's `<|image_pad|>` expanded to its own merged-token count).

Qwen2-VL's own processor also holds a video processor, which needs torchvision; this project runs without it (the PIL
image-processor backend), and stage 1.5 trains on images, so this subclass leaves the video processor out, as
`CrocQwen2_5_VLProcessor` does for Qwen2.5-VL, whose image processor is this one: the length estimate and the pool
bound are that class's own (`CrocQwenImageBudgetMixin`), shared rather than rewritten. The parent class stays the
first base (`__mro__[1]`): an exported plain folder names it (`modeling_croc.convert.to_llava.name_parent_processor`).
"""

from transformers import Qwen2VLProcessor

from .processing_croc_qwen2_5_vl import CrocQwenImageBudgetMixin, init_without_videos


class CrocQwen2VLProcessor(Qwen2VLProcessor, CrocQwenImageBudgetMixin):
    """`Qwen2VLProcessor` without the video processor: images and text only."""

    __init__ = init_without_videos(Qwen2VLProcessor)


__all__ = ["CrocQwen2VLProcessor"]
