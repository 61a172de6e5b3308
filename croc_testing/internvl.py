"""Tiny InternVL Croc models and batches, built in code (nothing downloaded): a 2-layer InternViT tower on 16-px
tiles of 4-px patches (16 patches, 4 tokens a tile after the pixel shuffle), a 2-layer Qwen2 language model whose
top layer slides, and batches in InternVL's token layout (`<img>`, the tiles' `<IMG_CONTEXT>` tokens, `</img>`)."""

from __future__ import annotations

from typing import Any

import torch

from modeling_croc import CrocInternVLConfig
from modeling_croc.constants import IGNORE_INDEX

from .backbones import text_config

# InternVL's special tokens in a 128-entry vocabulary: the image context placeholder, the image start and end.
INTERNVL_TOKENS = {"bos": 1, "eos": 2, "image": 120, "image_start": 121, "image_end": 122, "pad": 127}
# Tiles of each image of the default batch: a single-tile image, a 3-tile one (2 tiles and the thumbnail, as the
# processor tiles a wide image), a 2-tile one.
INTERNVL_TILES = [1, 3, 2]
# Tile side in pixels.
INTERNVL_TILE_SIZE = 16


def tiny_croc_internvl_config(**croc_fields: Any) -> CrocInternVLConfig:
    """A tiny `CrocInternVLConfig`: a Qwen2 text model of width 32 (2 layers, the top one sliding with a window of
    `croc_testing.backbones.SLIDING_WINDOW`: `layer_types` full then sliding; tied embeddings) and an InternViT tower
    of width 16 (2 heads) on 16-px tiles of 4-px patches, pixel-shuffled by 0.5 (4 tokens a tile); `croc_fields` on
    top (pool of 64, linear VTR head by default)."""
    text = text_config("qwen2", vocab_size=128, pad_token_id=INTERNVL_TOKENS["pad"])
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": INTERNVL_TILE_SIZE, "patch_size": 4}
    croc_fields.setdefault("prompt_pool_size", 64)
    croc_fields.setdefault("vtr_head", "linear")
    return CrocInternVLConfig(text_config=text, vision_config=vision, image_token_id=INTERNVL_TOKENS["image"],
                              downsample_ratio=0.5, image_seq_length=4, **croc_fields)


def internvl_image_tokens(tiles: int, tile_tokens: int) -> list[int]:
    """An image's tokens as InternVL's processor writes them: `<img>`, `tiles * tile_tokens` `<IMG_CONTEXT>`,
    `</img>`."""
    return [INTERNVL_TOKENS["image_start"], *[INTERNVL_TOKENS["image"]] * (tiles * tile_tokens),
            INTERNVL_TOKENS["image_end"]]


def make_internvl_batch(config, tiles: list[int] = INTERNVL_TILES, images_per_row: tuple[int, ...] = (1, 2),
                        text_len: int = 3, left_pad: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """A left-padded batch in InternVL's layout: row r is `<bos>`, two prompt tokens, its next `images_per_row[r]`
    images (`internvl_image_tokens`, a newline-like text token after each), then answer tokens, the only supervised
    ones; rows differ in length (`left_pad` more padding per row).

    Returns `input_ids`, `attention_mask`, `labels` `(B, L)` and `pixel_values` `(sum tiles, 3, 16, 16)`: every
    image's tiles, images in order, as InternVL's processor concatenates them."""
    generator = torch.Generator().manual_seed(seed)
    tile_tokens = config.tile_tokens()
    bodies, image = [], 0
    for row, count in enumerate(images_per_row):
        prompt = [INTERNVL_TOKENS["bos"], *torch.randint(20, 110, (2,), generator=generator).tolist()]
        for image_tiles in tiles[image:image + count]:
            prompt += internvl_image_tokens(image_tiles, tile_tokens) + [19]
        image += count
        answer = torch.randint(20, 110, (text_len + left_pad * (len(images_per_row) - 1 - row),),
                               generator=generator).tolist()
        bodies.append((prompt, answer))
    length = max(len(prompt) + len(answer) for prompt, answer in bodies)
    input_ids = torch.full((len(bodies), length), INTERNVL_TOKENS["pad"])
    attention_mask = torch.zeros(len(bodies), length, dtype=torch.long)
    labels = torch.full((len(bodies), length), IGNORE_INDEX)
    for row, (prompt, answer) in enumerate(bodies):
        start = length - len(prompt) - len(answer)
        input_ids[row, start:] = torch.tensor(prompt + answer)
        attention_mask[row, start:] = 1
        labels[row, start + len(prompt):] = torch.tensor(answer)
    size = config.vision_config.image_size
    pixel_values = torch.randn(sum(tiles), 3, size[0], size[1], generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "pixel_values": pixel_values}


__all__ = ["INTERNVL_TILES", "INTERNVL_TILE_SIZE", "INTERNVL_TOKENS", "internvl_image_tokens", "make_internvl_batch",
           "tiny_croc_internvl_config"]
