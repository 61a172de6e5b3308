"""The processor of the GLM-4.1V Croc model: transformers' `Glm4vProcessor` for images and text (GLM-4.1V's image
processor: 14-px patches, 2x2 merge; each image's `<|image|>` expanded to its own merged-token count, between the
`<|begin_of_image|>` and `<|end_of_image|>` the chat template writes around it).

GLM-4.1V's own processor also holds a video processor, which needs torchvision; this project runs without it (the
PIL image-processor backend), and stage 1.5 trains on images, so this subclass leaves the video processor out, as
`CrocQwen2_5_VLProcessor` does for Qwen2.5-VL. Its image processor reads `size["longest_edge"]` as Qwen2-VL's does,
but counts an image as `temporal_patch_size` frames against it (`smart_resize(num_frames=temporal_patch_size)`), so
an image gets half the merged tokens Qwen2-VL's budget would give: the length estimate and the pool bound are
`CrocQwenImageBudgetMixin`'s with that count (`croc_budget_counts_frames`). The parent class stays the first base
(`__mro__[1]`): an exported plain folder names it (`modeling_croc.convert.to_llava.name_parent_processor`).
"""

from transformers import Glm4vProcessor

from .processing_croc_qwen2_5_vl import CrocQwenImageBudgetMixin, init_without_videos


class CrocGlm4vProcessor(Glm4vProcessor, CrocQwenImageBudgetMixin):
    """`Glm4vProcessor` without the video processor: images and text only."""

    __init__ = init_without_videos(Glm4vProcessor)
    croc_budget_counts_frames = True


__all__ = ["CrocGlm4vProcessor"]
