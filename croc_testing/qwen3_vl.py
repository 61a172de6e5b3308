"""A tiny Qwen3-VL Croc model and its batches, and a tiny plain Qwen3-VL folder with its processor, built in code
(nothing downloaded); the same for Qwen3-VL-MoE, Qwen3.5 and Qwen3.5-MoE, whose vision side (Qwen3.5's without
DeepStack), batches and processor are Qwen3-VL's. `python -m croc_testing tiny-qwen3_vl FOLDER` (`tiny-qwen3_vl_moe`,
`tiny-qwen3_5`, `tiny-qwen3_5_moe`) writes the folder the cpu_tiny Qwen3-VL (Qwen3-VL-MoE, Qwen3.5, Qwen3.5-MoE)
stage-1.5 config starts from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from croc_testing.families import QWEN_TOKENS, QWEN_VISION_TOKENS, make_qwen_batch
from modeling_croc import CrocQwen3_5Config, CrocQwen3_5MoeConfig, CrocQwen3VLConfig, CrocQwen3VLMoeConfig

# Two images of different native resolutions (16 and 12 patches: 4 and 3 merged tokens), rows of different lengths.
QWEN3_VL_GRIDS = [(1, 4, 4), (1, 2, 6)]
QWEN3_VL_TEXT_LENGTHS = [5, 7]


def tiny_qwen3_vl_fields() -> dict[str, Any]:
    """Qwen3-VL config fields of a tiny model: a 2-layer text model of width 32 (4 heads, 2 KV heads, head dimension
    8 with interleaved M-RoPE sections 2/1/1) and a 2-block vision tower of width 16 (a 4x4 learned position grid)
    whose 2x2 merger outputs width 32, with a DeepStack merger after each block: two DeepStack levels, added to the
    outputs of both decoder layers, so every layer of the tiny model shows DeepStack."""
    text = {"vocab_size": 160, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
            "pad_token_id": QWEN_TOKENS["pad_token_id"],
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 1, 1], "mrope_interleaved": True}}
    vision = {"depth": 2, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2, "out_hidden_size": 32,
              "patch_size": 14, "temporal_patch_size": 2, "spatial_merge_size": 2, "num_position_embeddings": 16,
              "deepstack_visual_indexes": [0, 1]}
    return {"text_config": text, "vision_config": vision,
            **{name: value for name, value in QWEN_TOKENS.items() if name != "pad_token_id"}}


# Qwen3-VL-MoE's text model at tiny sizes: both decoder layers sparse (`decoder_sparse_step` 1), 4 experts of width
# 8 (an expert's `gate_up_proj` is not square, so a transposed one shows), 2 routed per token; the router's
# auxiliary loss off, as the parent's default.
TINY_QWEN3_VL_MOE_TEXT = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 8,
                          "decoder_sparse_step": 1}


def tiny_qwen3_vl_moe_fields() -> dict[str, Any]:
    """Qwen3-VL-MoE config fields of a tiny model: `tiny_qwen3_vl_fields` with a mixture-of-experts text model
    (`TINY_QWEN3_VL_MOE_TEXT`)."""
    fields = tiny_qwen3_vl_fields()
    fields["text_config"].update(TINY_QWEN3_VL_MOE_TEXT)
    return fields


# Qwen3.5's hybrid text model at tiny sizes: a Gated DeltaNet (linear-attention) layer, then a full-attention one, as
# transformers' default layout starts (three linear layers before each full one); 2 key and 4 value heads of width 8
# in the linear layer, a causal convolution of width 4. Its full-attention layer rotates part of each head
# (transformers' defaults: 64 of 256 dimensions): 8 of 16 here, in the same interleaved M-RoPE sections 2/1/1 as
# Qwen3-VL's tiny model.
TINY_QWEN3_5_TEXT = {"layer_types": ["linear_attention", "full_attention"], "head_dim": 16,
                     "linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_key_head_dim": 8,
                     "linear_value_head_dim": 8, "linear_conv_kernel_dim": 4,
                     "rope_parameters": {"rope_type": "default", "mrope_section": [2, 1, 1], "mrope_interleaved": True,
                                         "partial_rotary_factor": 0.5}}


def tiny_qwen3_5_fields() -> dict[str, Any]:
    """Qwen3.5 config fields of a tiny model: `tiny_qwen3_vl_fields` without DeepStack (Qwen3.5's vision tower has
    none) and with a hybrid text model (`TINY_QWEN3_5_TEXT`)."""
    fields = tiny_qwen3_vl_fields()
    fields["text_config"].update(TINY_QWEN3_5_TEXT)
    del fields["vision_config"]["deepstack_visual_indexes"]
    return fields


# Qwen3.5-MoE's sparse blocks at tiny sizes: 4 routed experts of width 8 (an expert's `gate_up_proj` is not square)
# with 2 routed per token, and a gated shared expert of width 16, in both decoder layers (every layer of the family is
# sparse); the router's auxiliary loss off, as the parent's default. Its text config has no dense `intermediate_size`.
TINY_QWEN3_5_MOE_TEXT = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 8,
                         "shared_expert_intermediate_size": 16}


def tiny_qwen3_5_moe_fields() -> dict[str, Any]:
    """Qwen3.5-MoE config fields of a tiny model: `tiny_qwen3_5_fields` (the hybrid text model, no DeepStack) with
    mixture-of-experts blocks (`TINY_QWEN3_5_MOE_TEXT`)."""
    fields = tiny_qwen3_5_fields()
    del fields["text_config"]["intermediate_size"]
    fields["text_config"].update(TINY_QWEN3_5_MOE_TEXT)
    return fields


def tiny_croc_qwen3_vl_config(moe: bool = False, qwen3_5: bool = False, **croc_fields: Any
                              ) -> CrocQwen3VLConfig | CrocQwen3VLMoeConfig | CrocQwen3_5Config | CrocQwen3_5MoeConfig:
    """A tiny `CrocQwen3VLConfig` (`tiny_qwen3_vl_fields`), or with `moe` a tiny `CrocQwen3VLMoeConfig`
    (`tiny_qwen3_vl_moe_fields`), or with `qwen3_5` a tiny `CrocQwen3_5Config` (`tiny_qwen3_5_fields`), with both a
    tiny `CrocQwen3_5MoeConfig` (`tiny_qwen3_5_moe_fields`), with `croc_fields` on top (pool of 64 and a linear VTR
    head by default)."""
    croc_fields.setdefault("prompt_pool_size", 64)
    croc_fields.setdefault("vtr_head", "linear")
    if moe and qwen3_5:
        return CrocQwen3_5MoeConfig(**tiny_qwen3_5_moe_fields(), **croc_fields)
    if moe:
        return CrocQwen3VLMoeConfig(**tiny_qwen3_vl_moe_fields(), **croc_fields)
    if qwen3_5:
        return CrocQwen3_5Config(**tiny_qwen3_5_fields(), **croc_fields)
    return CrocQwen3VLConfig(**tiny_qwen3_vl_fields(), **croc_fields)


def make_qwen3_vl_batch(config: CrocQwen3VLConfig, grids: list[tuple[int, int, int]] | None = None,
                        text_lengths: list[int] | None = None, left_pad: int = 2,
                        seed: int = 0) -> dict[str, torch.Tensor]:
    """A left-padded batch in Qwen3-VL's layout (the same as Qwen2.5-VL's: `make_qwen_batch`), one image per row,
    `QWEN3_VL_GRIDS` and `QWEN3_VL_TEXT_LENGTHS` by default: `<|vision_start|>`, the image's `t*h*w / merge**2`
    placeholders, `<|vision_end|>`, then the row's text, every text token supervised.

    Returns `input_ids` and `attention_mask` `(B, L)`, `pixel_values` `(sum t*h*w, 3 * 2 * 14 * 14)` flattened
    patches, `image_grid_thw` `(B, 3)`, `mm_token_type_ids` `(B, L)` (1 at image placeholders) and `labels`
    `(B, L)`."""
    return make_qwen_batch(config, grids or QWEN3_VL_GRIDS, text_lengths or QWEN3_VL_TEXT_LENGTHS,
                           left_pad=left_pad, seed=seed)


# Qwen3-VL's image preprocessing (its checkpoints' preprocessor_config.json): 16-px patches, 2x2 merge (one merged
# token per 32x32 pixels), two frames a temporal patch, mean and std 0.5. The tiny sizes: images resized to between
# 32x32 and 64x64 pixels, 1 to 4 merged tokens.
TINY_QWEN3_VL_PATCH = 16
TINY_QWEN3_VL_PIXELS = {"shortest_edge": 32 * 32, "longest_edge": 64 * 64}


def tiny_qwen3_vl_processor():
    """A `CrocQwen3VLProcessor` available offline: the ChatML byte-level BPE tokenizer of the tiny OneVision model
    plus the Qwen vision tokens (as `tiny_qwen2_5_vl_processor`), and Qwen2-VL's PIL image processor at Qwen3-VL's
    patch and merge sizes and normalisation, tiny pixel bounds (`TINY_QWEN3_VL_PIXELS`: 1 to 4 merged tokens)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from modeling_croc.processing_croc_qwen3_vl import CrocQwen3VLProcessor

    from .tiny import chatml_bpe_tokenizer

    tokenizer = chatml_bpe_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", *QWEN_VISION_TOKENS]})
    image_processor = Qwen2VLImageProcessorPil(size=dict(TINY_QWEN3_VL_PIXELS), patch_size=TINY_QWEN3_VL_PATCH,
                                               merge_size=2, temporal_patch_size=2, image_mean=[0.5, 0.5, 0.5],
                                               image_std=[0.5, 0.5, 0.5])
    return CrocQwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer)


def save_tiny_qwen3_vl(folder, seed: int = 0, moe: bool = False, qwen3_5: bool = False) -> Path:
    """Write a random tiny plain Qwen3-VL folder (`Qwen3VLForConditionalGeneration`, `tiny_qwen3_vl_fields` at
    Qwen3-VL's 16-px patches, and its processor files) laid out as a Hub checkpoint is: the processor files name
    `Qwen3VLProcessor`, with no code of this package. What a user starts Croc's stage 1.5 from. With `moe`, a
    Qwen3-VL-MoE folder (`Qwen3VLMoeForConditionalGeneration`, `tiny_qwen3_vl_moe_fields`), whose processor is
    Qwen3-VL's as Qwen3-VL-30B-A3B's is; with `qwen3_5`, a Qwen3.5 folder (`Qwen3_5ForConditionalGeneration`,
    `tiny_qwen3_5_fields`), whose processor is Qwen3-VL's too."""
    from transformers import (
        Qwen3_5Config,
        Qwen3_5ForConditionalGeneration,
        Qwen3_5MoeConfig,
        Qwen3_5MoeForConditionalGeneration,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLMoeConfig,
        Qwen3VLMoeForConditionalGeneration,
    )

    from modeling_croc.convert.to_llava import name_parent_processor

    folder = Path(folder)
    processor = tiny_qwen3_vl_processor()
    tokenizer = processor.tokenizer
    fields = (tiny_qwen3_5_moe_fields() if moe and qwen3_5 else tiny_qwen3_vl_moe_fields() if moe
              else tiny_qwen3_5_fields() if qwen3_5 else tiny_qwen3_vl_fields())
    fields.update({name: tokenizer.convert_tokens_to_ids(token) for name, token in (
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"),
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"))})
    fields["text_config"].update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    fields["vision_config"].update(patch_size=TINY_QWEN3_VL_PATCH)
    torch.manual_seed(seed)
    config_class, model_class = ((Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration) if moe and qwen3_5
                                 else (Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration) if moe
                                 else (Qwen3_5Config, Qwen3_5ForConditionalGeneration) if qwen3_5
                                 else (Qwen3VLConfig, Qwen3VLForConditionalGeneration))
    model = model_class(config_class(**fields))
    # Qwen3-VL's text config has no EOS field: a Hub folder names it in generation_config.json.
    model.generation_config.update(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    # A Hub folder's processor files name the parent class (which loads them natively), not this package's.
    name_parent_processor(folder, type(processor))
    return folder


def save_tiny_qwen3_vl_moe(folder, seed: int = 0) -> Path:
    """Write a random tiny plain Qwen3-VL-MoE folder laid out as a Hub checkpoint is (`save_tiny_qwen3_vl`)."""
    return save_tiny_qwen3_vl(folder, seed=seed, moe=True)


def save_tiny_qwen3_5(folder, seed: int = 0) -> Path:
    """Write a random tiny plain Qwen3.5 folder laid out as a Hub checkpoint is (`save_tiny_qwen3_vl`)."""
    return save_tiny_qwen3_vl(folder, seed=seed, qwen3_5=True)


def save_tiny_qwen3_5_moe(folder, seed: int = 0) -> Path:
    """Write a random tiny plain Qwen3.5-MoE folder laid out as a Hub checkpoint is (`save_tiny_qwen3_vl`)."""
    return save_tiny_qwen3_vl(folder, seed=seed, moe=True, qwen3_5=True)


__all__ = ["QWEN3_VL_GRIDS", "QWEN3_VL_TEXT_LENGTHS", "TINY_QWEN3_5_MOE_TEXT", "TINY_QWEN3_5_TEXT",
           "TINY_QWEN3_VL_MOE_TEXT", "TINY_QWEN3_VL_PATCH", "TINY_QWEN3_VL_PIXELS", "make_qwen3_vl_batch",
           "save_tiny_qwen3_5", "save_tiny_qwen3_5_moe", "save_tiny_qwen3_vl", "save_tiny_qwen3_vl_moe",
           "tiny_croc_qwen3_vl_config", "tiny_qwen3_5_fields", "tiny_qwen3_5_moe_fields", "tiny_qwen3_vl_fields",
           "tiny_qwen3_vl_moe_fields", "tiny_qwen3_vl_processor"]
