"""GLM-4.1V's tiny models, batches and plain folder, built in code (nothing downloaded), and GLM-4.6V's (the same
vision tower and dense text model under `Glm46VConfig`): `python -m croc_testing tiny-glm4v FOLDER` (`tiny-glm46v`)
writes the folder the cpu_tiny GLM-4.1V (GLM-4.6V) config starts from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from modeling_croc import CrocGlm4vConfig, CrocGlm46VConfig

from .families import write_plain_folder

# GLM-4.1V's special tokens in a 160-entry vocabulary (the ids Qwen's tiny models give theirs): the image
# placeholder `<|image|>`, video, and the `<|begin_of_image|>` / `<|end_of_image|>` wrapper (the video wrapper after).
GLM4V_TOKENS = {"image_token_id": 150, "video_token_id": 151, "image_start_token_id": 152, "image_end_token_id": 153,
                "video_start_token_id": 154, "video_end_token_id": 155}
# GLM-4.1V's chat tokens and its vision tokens, added to the offline ChatML tokenizer as its tokenizer has them.
GLM4V_SPECIAL_TOKENS = ("[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|begin_of_image|>",
                        "<|end_of_image|>", "<|image|>", "<|begin_of_video|>", "<|end_of_video|>", "<|video|>")


def tiny_glm4v_fields() -> dict[str, Any]:
    """GLM-4.1V config fields of a tiny model: a 2-layer text model of width 32 (2 heads of 16, 1 KV head; half of a
    head rotary, as the checkpoints' `partial_rotary_factor`, in M-RoPE sections 2/1/1) and a 2-block vision tower of
    width 16 whose learned position embeddings cover a 4x4 patch grid (interpolated to each image's), downsampled
    2x2 into the text width."""
    text = {"vocab_size": 160, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 1, "pad_token_id": 0,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                                "mrope_section": [2, 1, 1]}}
    vision = {"depth": 2, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2, "out_hidden_size": 32,
              "image_size": 56, "patch_size": 14, "temporal_patch_size": 2, "spatial_merge_size": 2}
    return {"text_config": text, "vision_config": vision, **GLM4V_TOKENS}


def tiny_croc_glm4v_config(glm46v: bool = False, **croc_fields: Any) -> CrocGlm4vConfig | CrocGlm46VConfig:
    """A tiny `CrocGlm4vConfig` (`tiny_glm4v_fields`), or with `glm46v` a tiny `CrocGlm46VConfig` of the same
    fields, with `croc_fields` on top (pool of 64 and a linear VTR head by default)."""
    croc_fields.setdefault("prompt_pool_size", 64)
    croc_fields.setdefault("vtr_head", "linear")
    return (CrocGlm46VConfig if glm46v else CrocGlm4vConfig)(**tiny_glm4v_fields(), **croc_fields)


def tiny_glm4v_processor(glm46v: bool = False):
    """A `CrocGlm4vProcessor` available offline: the ChatML byte-level BPE tokenizer of the tiny OneVision model plus
    GLM-4.1V's chat and vision tokens (EOS `<|endoftext|>`, no BOS), and GLM-4.1V's PIL image processor at tiny sizes
    (14-px patches, 2x2 merge; its budget counts an image as 2 frames, so 28x28 to 56x56 pixels: 1 to 4 merged
    tokens). With `glm46v`, a `CrocGlm46VProcessor` of the same parts (GLM-4.6V's image processor class is GLM-4.1V's
    under its own name)."""
    from transformers.models.glm4v.image_processing_pil_glm4v import Glm4vImageProcessorPil
    from transformers.models.glm46v.image_processing_pil_glm46v import Glm46VImageProcessorPil

    from modeling_croc.processing_croc_glm4v import CrocGlm4vProcessor
    from modeling_croc.processing_croc_glm46v import CrocGlm46VProcessor

    from .tiny import chatml_bpe_tokenizer

    tokenizer = chatml_bpe_tokenizer()
    tokenizer.add_special_tokens({"eos_token": "<|endoftext|>",
                                  "additional_special_tokens": list(GLM4V_SPECIAL_TOKENS)})
    image_processor_class, processor_class = ((Glm46VImageProcessorPil, CrocGlm46VProcessor) if glm46v
                                              else (Glm4vImageProcessorPil, CrocGlm4vProcessor))
    image_processor = image_processor_class(size={"shortest_edge": 2 * 28 * 28, "longest_edge": 2 * 56 * 56},
                                            patch_size=14, merge_size=2, temporal_patch_size=2)
    return processor_class(image_processor=image_processor, tokenizer=tokenizer)


def save_tiny_glm4v(folder, seed: int = 0, glm46v: bool = False) -> Path:
    """Write a random tiny plain GLM-4.1V folder (`Glm4vForConditionalGeneration` and its processor files naming
    `Glm4vProcessor`), laid out as a Hub checkpoint is: what a user starts Croc's stage 1.5 from. With `glm46v`, a
    GLM-4.6V folder (`Glm46VForConditionalGeneration`, its processor files naming `Glm46VProcessor`)."""
    from transformers import (
        Glm4vConfig,
        Glm4vForConditionalGeneration,
        Glm46VConfig,
        Glm46VForConditionalGeneration,
    )

    processor = tiny_glm4v_processor(glm46v)
    tokenizer = processor.tokenizer
    fields = tiny_glm4v_fields()
    fields.update({name: tokenizer.convert_tokens_to_ids(token) for name, token in (
        ("image_token_id", "<|image|>"), ("video_token_id", "<|video|>"),
        ("image_start_token_id", "<|begin_of_image|>"), ("image_end_token_id", "<|end_of_image|>"),
        ("video_start_token_id", "<|begin_of_video|>"), ("video_end_token_id", "<|end_of_video|>"))})
    fields["text_config"].update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = (Glm46VForConditionalGeneration(Glm46VConfig(**fields)) if glm46v
             else Glm4vForConditionalGeneration(Glm4vConfig(**fields)))
    return write_plain_folder(folder, model, processor)


def save_tiny_glm46v(folder, seed: int = 0) -> Path:
    """Write a random tiny plain GLM-4.6V folder laid out as a Hub checkpoint is (`save_tiny_glm4v`)."""
    return save_tiny_glm4v(folder, seed=seed, glm46v=True)


__all__ = ["GLM4V_SPECIAL_TOKENS", "GLM4V_TOKENS", "save_tiny_glm46v", "save_tiny_glm4v", "tiny_croc_glm4v_config",
           "tiny_glm4v_fields", "tiny_glm4v_processor"]
