"""A tiny Gemma 4 for Croc, built in code (nothing downloaded): config and batch builders of the Gemma 4 family."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from modeling_croc import CrocGemma4Config
from modeling_croc.constants import IGNORE_INDEX

from .batches import left_padded

# Gemma 4's special tokens in a 160-entry vocabulary: padding, bos, eos, the image, video and audio placeholders and
# the begin / end-of-image and -audio tokens.
GEMMA4_TOKENS = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2, "image_token_id": 150,
                 "boi_token_id": 151, "eoi_token_id": 152, "video_token_id": 153, "audio_token_id": 154,
                 "boa_token_id": 155, "eoa_token_index": 156}
# The sliding window of the text model's sliding layer: shorter than the test rows, so the window shows in the masks.
GEMMA4_SLIDING_WINDOW = 6
# The vision tower's patches (4x4 pixels) are average-pooled 2x2 into one visual token.
GEMMA4_PATCH_SIZE = 4
GEMMA4_POOLING = 2
# Patch grids (width, height) of three images at their own aspect ratios: 4, 3 and 6 visual tokens. The first two
# share the first row, the third is the second row's.
GEMMA4_GRIDS = ((4, 4), (2, 6), (6, 4))
GEMMA4_IMAGES_PER_ROW = (2, 1)
# Patches of every image once padded, as the image processor pads them (`max_soft_tokens` * pooling^2).
GEMMA4_MAX_PATCHES = 24


def tiny_gemma4_fields(audio: bool = False) -> dict[str, Any]:
    """Gemma 4 config fields of a tiny model: a 2-layer text model of width 32 (4 heads of 8, 2 KV heads), its first
    layer sliding (window `GEMMA4_SLIDING_WINDOW`) and its second global, with per-layer inputs of width 4, image
    blocks bidirectional on its sliding layer (`use_bidirectional_attention="vision"`, as the larger checkpoints) and
    its logits soft-capped at 30; a 1-layer vision tower of width 16 on 4x4-pixel patches pooled 2x2. With `audio`,
    a 1-layer audio tower of width 16 too."""
    text = {"vocab_size": 160, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "global_head_dim": 8,
            "sliding_window": GEMMA4_SLIDING_WINDOW, "layer_types": ["sliding_attention", "full_attention"],
            "vocab_size_per_layer_input": 160, "hidden_size_per_layer_input": 4,
            "use_bidirectional_attention": "vision", "final_logit_softcapping": 30.0,
            **{name: GEMMA4_TOKENS[name] for name in ("pad_token_id", "bos_token_id", "eos_token_id")}}
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "num_key_value_heads": 2, "head_dim": 8, "patch_size": GEMMA4_PATCH_SIZE,
              "pooling_kernel_size": GEMMA4_POOLING, "position_embedding_size": 16}
    audio_config = None
    if audio:
        audio_config = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                        "subsampling_conv_channels": [8, 4], "output_proj_dims": 16}
    special = {name: value for name, value in GEMMA4_TOKENS.items() if name not in text}
    return {"text_config": text, "vision_config": vision, "audio_config": audio_config, **special}


def tiny_croc_gemma4_config(audio: bool = False, **croc_fields: Any) -> CrocGemma4Config:
    """A tiny `CrocGemma4Config` (`tiny_gemma4_fields`) with `croc_fields` on top (pool of 64 and a linear VTR head
    by default)."""
    croc_fields.setdefault("prompt_pool_size", 64)
    croc_fields.setdefault("vtr_head", "linear")
    return CrocGemma4Config(**tiny_gemma4_fields(audio), **croc_fields)


def gemma4_image_inputs(grids, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """`pixel_values` `(num_images, GEMMA4_MAX_PATCHES, 3 * patch^2)` in [0, 1] and `image_position_ids`
    `(num_images, GEMMA4_MAX_PATCHES, 2)` (x, y) of each image's patch grid, row by row, padding patches zero at
    `(-1, -1)`: Gemma 4's image processor's layout."""
    pixels = torch.zeros(len(grids), GEMMA4_MAX_PATCHES, 3 * GEMMA4_PATCH_SIZE**2)
    positions = torch.full((len(grids), GEMMA4_MAX_PATCHES, 2), -1, dtype=torch.long)
    for index, (width, height) in enumerate(grids):
        ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        positions[index, :width * height] = torch.stack([xs.flatten(), ys.flatten()], dim=-1)
        pixels[index, :width * height] = torch.rand(width * height, pixels.shape[-1], generator=generator)
    return {"pixel_values": pixels, "image_position_ids": positions}


def make_gemma4_batch(config, grids=GEMMA4_GRIDS, images_per_row=GEMMA4_IMAGES_PER_ROW, text_lengths=(5, 7),
                      left_pad: int = 0, seed: int = 0) -> dict[str, torch.Tensor]:
    """A left-padded batch in Gemma 4's layout: `<bos>`, then per image `<boi>`, one placeholder per visual token
    (its pooled grid) and `<eoi>`, then `text_lengths[row]` supervised text tokens; `left_pad` more padding in front.

    Returns what its processor returns (`input_ids`, `attention_mask`, `pixel_values`, `image_position_ids`,
    `mm_token_type_ids`: 1 at image placeholders) plus `labels`."""
    generator = torch.Generator().manual_seed(seed)
    counts = [width * height // config.vision_config.pooling_kernel_size**2 for width, height in grids]
    bodies, image = [], 0
    for num_images, text_length in zip(images_per_row, text_lengths):
        prompt = [GEMMA4_TOKENS["bos_token_id"]]
        for count in counts[image:image + num_images]:
            prompt += [config.boi_token_id, *[config.image_token_id] * count, config.eoi_token_id]
        image += num_images
        bodies.append((prompt, torch.randint(10, 140, (text_length,), generator=generator).tolist()))
    input_ids, attention_mask, labels = left_padded(bodies, GEMMA4_TOKENS["pad_token_id"])
    input_ids = F.pad(input_ids, (left_pad, 0), value=GEMMA4_TOKENS["pad_token_id"])
    attention_mask, labels = F.pad(attention_mask, (left_pad, 0)), F.pad(labels, (left_pad, 0), value=IGNORE_INDEX)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
            **gemma4_image_inputs(grids, generator),
            "mm_token_type_ids": (input_ids == config.image_token_id).long()}


__all__ = ["GEMMA4_GRIDS", "GEMMA4_IMAGES_PER_ROW", "GEMMA4_MAX_PATCHES", "GEMMA4_SLIDING_WINDOW", "GEMMA4_TOKENS",
           "gemma4_image_inputs", "make_gemma4_batch", "tiny_croc_gemma4_config", "tiny_gemma4_fields"]
