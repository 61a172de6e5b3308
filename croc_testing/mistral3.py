"""Tiny Mistral 3 Croc models and batches, built in code (nothing downloaded): a 2-block Pixtral tower of 4-px
patches (8-px merged windows), a 2-layer Mistral language model, and batches in Pixtral's token layout."""

from __future__ import annotations

from typing import Any

import torch

from modeling_croc import CrocMistral3Config
from modeling_croc.constants import IGNORE_INDEX

from .backbones import SLIDING_WINDOW, text_config

# Pixtral's special tokens as Mistral's tokenizers number them, in a 128-entry vocabulary.
MISTRAL3_TOKENS = {"bos": 1, "eos": 2, "image": 10, "pad": 11, "image_break": 12, "image_end": 13}
# (height, width) in pixels of three images as Pixtral's processor resizes them (multiples of the 8-px merged
# window): 2 x 3, 3 x 4 and 1 x 2 merged tokens.
MISTRAL3_SIZES = [[16, 24], [24, 32], [8, 16]]


def tiny_croc_mistral3_config(sliding: bool = True, **croc_fields: Any) -> CrocMistral3Config:
    """A tiny `CrocMistral3Config`: a Mistral text model of width 32 (2 layers, every one sliding with a window of
    `croc_testing.backbones.SLIDING_WINDOW` when `sliding`, else global, as Mistral-Small-3.1 ships) and a Pixtral
    tower of width 16 (2 heads of 8) on 4-px patches, merged 2 x 2; `croc_fields` on top (pool of 64, linear VTR
    head by default)."""
    text = text_config("mistral", vocab_size=128, pad_token_id=MISTRAL3_TOKENS["pad"])
    text.update(head_dim=8, sliding_window=SLIDING_WINDOW if sliding else None)
    vision = {"model_type": "pixtral", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
              "num_attention_heads": 2, "head_dim": 8, "patch_size": 4, "image_size": 32}
    croc_fields.setdefault("prompt_pool_size", 64)
    croc_fields.setdefault("vtr_head", "linear")
    return CrocMistral3Config(text_config=text, vision_config=vision, image_token_index=MISTRAL3_TOKENS["image"],
                              spatial_merge_size=2, **croc_fields)


def pixtral_image_tokens(height: int, width: int, window: int) -> list[int]:
    """An image's tokens as Pixtral's processor writes them: every row of merged windows as that many `[IMG]`
    tokens closed by `[IMG_BREAK]`, the last row closed by `[IMG_END]` instead."""
    row = [MISTRAL3_TOKENS["image"]] * (width // window) + [MISTRAL3_TOKENS["image_break"]]
    tokens = row * (height // window)
    tokens[-1] = MISTRAL3_TOKENS["image_end"]
    return tokens


def make_mistral3_batch(config, sizes: list[list[int]] = MISTRAL3_SIZES, images_per_row: tuple[int, ...] = (1, 1, 1),
                        text_len: int = 4, left_pad: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """A left-padded batch in Mistral 3's layout: row r is `[BOS]`, two prompt tokens, its next `images_per_row[r]`
    images (`pixtral_image_tokens`, back to back), then `text_len` answer tokens, the only supervised ones; rows
    differ in length (`left_pad` more padding per row).

    Returns `input_ids`, `attention_mask`, `labels` `(B, L)`, `pixel_values` `(num_images, 3, H_max, W_max)` (each
    image in its top-left corner, zero elsewhere, as Pixtral's image processor pads) and `image_sizes`
    `(num_images, 2)`."""
    generator = torch.Generator().manual_seed(seed)
    window = config.vision_config.patch_size * config.spatial_merge_size
    bodies, image = [], 0
    for row, count in enumerate(images_per_row):
        prompt = [MISTRAL3_TOKENS["bos"], *torch.randint(20, 120, (2,), generator=generator).tolist()]
        for height, width in sizes[image:image + count]:
            prompt += pixtral_image_tokens(height, width, window)
        image += count
        answer = torch.randint(20, 120, (text_len + left_pad * (len(images_per_row) - 1 - row),),
                               generator=generator).tolist()
        bodies.append((prompt, answer))
    length = max(len(prompt) + len(answer) for prompt, answer in bodies)
    input_ids = torch.full((len(bodies), length), MISTRAL3_TOKENS["pad"])
    attention_mask = torch.zeros(len(bodies), length, dtype=torch.long)
    labels = torch.full((len(bodies), length), IGNORE_INDEX)
    for row, (prompt, answer) in enumerate(bodies):
        start = length - len(prompt) - len(answer)
        input_ids[row, start:] = torch.tensor(prompt + answer)
        attention_mask[row, start:] = 1
        labels[row, start + len(prompt):] = torch.tensor(answer)
    height, width = map(max, zip(*sizes))
    pixel_values = torch.zeros(len(sizes), 3, height, width)
    for index, (h, w) in enumerate(sizes):
        pixel_values[index, :, :h, :w] = torch.randn(3, h, w, generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "pixel_values": pixel_values,
            "image_sizes": torch.tensor(sizes, dtype=torch.long)}


__all__ = ["MISTRAL3_SIZES", "MISTRAL3_TOKENS", "make_mistral3_batch", "pixtral_image_tokens",
           "tiny_croc_mistral3_config"]
