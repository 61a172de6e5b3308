"""A tiny Qwen3-VL Croc model and its batches, built in code (nothing downloaded)."""

from __future__ import annotations

from typing import Any

import torch

from croc_testing.families import QWEN_TOKENS, make_qwen_batch
from modeling_croc import CrocQwen3VLConfig

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


def tiny_croc_qwen3_vl_config(**croc_fields: Any) -> CrocQwen3VLConfig:
    """A tiny `CrocQwen3VLConfig` (`tiny_qwen3_vl_fields`) with `croc_fields` on top (pool of 64 and a linear VTR
    head by default)."""
    croc_fields.setdefault("prompt_pool_size", 64)
    croc_fields.setdefault("vtr_head", "linear")
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


__all__ = ["QWEN3_VL_GRIDS", "QWEN3_VL_TEXT_LENGTHS", "make_qwen3_vl_batch", "tiny_croc_qwen3_vl_config",
           "tiny_qwen3_vl_fields"]
