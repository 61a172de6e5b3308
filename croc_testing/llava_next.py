"""Tiny LLaVA-NeXT Croc models and batches, built in code (nothing downloaded): a 28-px CLIP tower of 14-px patches
(4 tokens a view after dropping the class token), AnyRes grids up to 2 x 2 views, a Llama or Mistral language
model (`croc_testing.backbones`)."""

from __future__ import annotations

from typing import Any

import torch

from modeling_croc import CrocLlavaNextConfig

from .backbones import backbone_fields
from .batches import make_anyres_batch

# 28-px views of 14-px patches: 4 tokens per view; grids up to 2 x 2 views.
LLAVA_NEXT_PINPOINTS = [[28, 28], [28, 56], [56, 28], [56, 56]]
# (height, width) of three images that pack to three different token counts (wide, tall, large).
LLAVA_NEXT_SIZES = [[20, 50], [60, 30], [90, 80]]


def tiny_croc_llava_next_config(text: str = "mistral", **croc_fields: Any) -> CrocLlavaNextConfig:
    """A tiny `CrocLlavaNextConfig`: `text` is a key of `croc_testing.backbones.TEXT_BACKBONES` (`"mistral"`: every
    layer sliding with a window of 8, as LLaVA-NeXT-Mistral; `"llama"`: global layers), a 128-entry vocabulary
    (image token 126, padding 127), the CLIP tower at 28 px; `croc_fields` on top (pool of 64, linear VTR head by
    default: the paper's BERT head needs a fixed token count)."""
    fields = backbone_fields(text, "clip")
    fields["vision_config"].update(image_size=28, patch_size=14)
    croc_fields.setdefault("prompt_pool_size", 64)
    croc_fields.setdefault("vtr_head", "linear")
    return CrocLlavaNextConfig(**fields, image_grid_pinpoints=LLAVA_NEXT_PINPOINTS, **croc_fields)


def make_llava_next_batch(model, sizes: list[list[int]] = LLAVA_NEXT_SIZES, images_per_row: tuple[int, ...] = (1, 1, 1),
                          left_pad: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """A left-padded batch in LLaVA-NeXT's layout: row r holds the next `images_per_row[r]` images, each as its own
    run of `<image>` tokens (as many as LLaVA-NeXT's packing gives for its size: `model.image_token_counts`), then
    answer tokens, the only supervised ones; rows differ in length (`left_pad` more padding per row).

    Returns `input_ids`, `attention_mask`, `labels` `(B, L)`, `pixel_values` `(num_images, max crops, 3, 28, 28)`
    (each image's crops first, zero-padded as the image processor pads them) and `image_sizes` `(num_images, 2)`."""
    counts = model.image_token_counts(None, len(sizes), image_sizes=torch.tensor(sizes))
    return make_anyres_batch(model.config, sizes, counts, list(images_per_row), left_pad=left_pad, seed=seed)


__all__ = ["LLAVA_NEXT_PINPOINTS", "LLAVA_NEXT_SIZES", "make_llava_next_batch", "tiny_croc_llava_next_config"]
