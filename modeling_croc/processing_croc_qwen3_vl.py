"""The processor of the Qwen3-VL Croc model: transformers' `Qwen3VLProcessor` for images and text (Qwen2-VL's image
processor at Qwen3-VL's own sizes: 16-px patches, 2x2 merge; each image's `<|image_pad|>` expanded to its own
merged-token count).

Qwen3-VL's own processor also holds a video processor (`Qwen3VLVideoProcessor`), which needs torchvision; this project
runs without it (the PIL image-processor backend), and stage 1.5 trains on images, so this subclass leaves the video
processor out, as `CrocQwen2_5_VLProcessor` does for Qwen2.5-VL. The image part is the same as Qwen2.5-VL's (a
Qwen2-VL image processor whose `size["longest_edge"]` is the pixel budget and `patch_size * merge_size` one merged
token's side), so the length estimate and the pool bound are that class's own (`CrocQwenImageBudgetMixin`), shared
rather than rewritten. The parent class stays the first base (`__mro__[1]`): an exported plain folder names it
(`modeling_croc.convert.to_llava.name_parent_processor`).
"""

from transformers import Qwen3VLProcessor

from .processing_croc_qwen2_5_vl import CrocQwenImageBudgetMixin, init_without_videos


class CrocQwen3VLProcessor(Qwen3VLProcessor, CrocQwenImageBudgetMixin):
    """`Qwen3VLProcessor` without the video processor: images and text only."""

    __init__ = init_without_videos(Qwen3VLProcessor)


__all__ = ["CrocQwen3VLProcessor"]
