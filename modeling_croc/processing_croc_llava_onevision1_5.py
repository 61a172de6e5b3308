"""The processor of the LLaVA-OneVision-1.5 Croc model: transformers' `Exaone4_5_Processor` (the class transformers
maps `llava_onevision1_5` to) for images and text: Qwen2-VL's image processor (14-px patches, 2x2 merge; each
image's `<|image_pad|>` expanded to its own merged-token count) and a Qwen2 tokenizer.

Its own processor also holds a video processor, which needs torchvision; this project runs without it (the PIL
image-processor backend), and stage 1.5 trains on images, so this subclass leaves the video processor out, as
`CrocQwen2_5_VLProcessor` does for Qwen2.5-VL, whose image processor is this one: the length estimate and the pool
bound are that module's (`CrocQwenImageBudgetMixin`, `init_without_videos`), shared rather than rewritten. The parent
class stays the first base (`__mro__[1]`): an exported plain folder names it
(`modeling_croc.convert.to_llava.name_parent_processor`).
"""

from transformers import Exaone4_5_Processor

from .processing_croc_qwen2_5_vl import CrocQwenImageBudgetMixin, init_without_videos


class CrocLlavaOnevision15Processor(Exaone4_5_Processor, CrocQwenImageBudgetMixin):
    """`Exaone4_5_Processor` (LLaVA-OneVision-1.5's) without the video processor: images and text only."""

    __init__ = init_without_videos(Exaone4_5_Processor)


__all__ = ["CrocLlavaOnevision15Processor"]
