"""Tiny LFM2-VL Croc models and batches, built in code (nothing downloaded): a 2-layer SigLIP2 NaFlex tower on views
of up to 16 patches of 4 px (a 4 x 4 patch tile gives 4 tokens after the 2x pixel unshuffle), a 2-layer LFM2 text
model (a short-convolution layer, then a full-attention one), and batches in LFM2-VL's token layout
(`<|image_start|>`, tiles introduced by `<|img_row_r_col_c|>`, the thumbnail by `<|img_thumbnail|>`,
`<|image_end|>`)."""

from __future__ import annotations

from typing import Any

import torch

from modeling_croc import CrocLfm2VlConfig

from .backbones import text_config
from .batches import left_padded, views_as_one_run

# LFM2-VL's special tokens in a 128-entry vocabulary; `<|img_row_r_col_c|>` is `row_col + 2 * (r - 1) + (c - 1)` for
# the grids up to 2 x 2 used here.
LFM2_VL_TOKENS = {"bos": 1, "eos": 2, "row_col": 100, "image": 120, "image_start": 121, "image_end": 122,
                  "thumbnail": 123, "pad": 127}
# Each image of the default batch: its tile grid (rows, cols; (1, 1) is a small image resized whole, no thumbnail)
# and the patch grid (h, w) of its thumbnail or whole view. Tiles are 4 x 4 patches (4 tokens): a 1 x 2 split with
# a 4 x 2 thumbnail (4 + 4 + 2 tokens), a small 4 x 4 image (4), a 2 x 2 split with a 2 x 4 thumbnail (16 + 2).
LFM2_VL_IMAGES = [((1, 2), (4, 2)), ((1, 1), (4, 4)), ((2, 2), (2, 4))]
# A tile's patch grid side, and the most patches a view has (the NaFlex padding of `pixel_values`).
LFM2_VL_TILE_PATCHES = 4
LFM2_VL_MAX_PATCHES = 16
LFM2_VL_PATCH_SIZE = 4


def tiny_croc_lfm2_vl_config(**croc_fields: Any) -> CrocLfm2VlConfig:
    """A tiny `CrocLfm2VlConfig`: an LFM2 text model of width 32 (2 layers, `layer_types` conv then full attention, a
    3-wide convolution; tied embeddings as LFM2's) and a SigLIP2 NaFlex tower of width 16 (2 heads) on 4-px patches,
    16 position embeddings, unshuffled by 2; `croc_fields` on top (pool of 64, linear VTR head by default)."""
    text = {key: value for key, value in text_config("llama", vocab_size=128, pad_token_id=LFM2_VL_TOKENS["pad"])
            .items() if key != "model_type"}
    text.update(model_type="lfm2", layer_types=["conv", "full_attention"], conv_L_cache=3,
                block_auto_adjust_ff_dim=False, tie_word_embeddings=True)
    vision = {"model_type": "siglip2_vision_model", "hidden_size": 16, "intermediate_size": 32,
              "num_hidden_layers": 2, "num_attention_heads": 2, "patch_size": LFM2_VL_PATCH_SIZE,
              "num_patches": LFM2_VL_MAX_PATCHES}
    croc_fields.setdefault("prompt_pool_size", 64)
    croc_fields.setdefault("vtr_head", "linear")
    return CrocLfm2VlConfig(text_config=text, vision_config=vision, image_token_id=LFM2_VL_TOKENS["image"],
                            downsample_factor=2, projector_hidden_size=32, **croc_fields)


def lfm2_vl_views(grid: tuple[int, int], whole: tuple[int, int]) -> list[tuple[int, int]]:
    """The patch grids of an image's views in the processor's order: every tile (`LFM2_VL_TILE_PATCHES` a side) in
    grid order, then the thumbnail; a small image (a 1 x 1 grid) is its whole view alone."""
    rows, cols = grid
    if rows * cols == 1:
        return [whole]
    return [(LFM2_VL_TILE_PATCHES, LFM2_VL_TILE_PATCHES)] * (rows * cols) + [whole]


def lfm2_vl_image_tokens(grid: tuple[int, int], whole: tuple[int, int], factor: int = 2) -> list[int]:
    """An image's tokens as LFM2-VL's processor writes them (`use_image_special_tokens`): `<|image_start|>`, every
    tile as `<|img_row_r_col_c|>` and its placeholders, then `<|img_thumbnail|>` and the thumbnail's (a small image:
    its placeholders alone), `<|image_end|>`."""
    rows, cols = grid
    tokens = [LFM2_VL_TOKENS["image_start"]]
    views = lfm2_vl_views(grid, whole)
    if rows * cols > 1:
        for row in range(rows):
            for col in range(cols):
                tokens += [LFM2_VL_TOKENS["row_col"] + 2 * row + col,
                           *[LFM2_VL_TOKENS["image"]] * (LFM2_VL_TILE_PATCHES // factor) ** 2]
        tokens.append(LFM2_VL_TOKENS["thumbnail"])
    height, width = views[-1]
    return tokens + [LFM2_VL_TOKENS["image"]] * ((height // factor) * (width // factor)) + [LFM2_VL_TOKENS["image_end"]]


def make_lfm2_vl_batch(config, images: list = LFM2_VL_IMAGES, images_per_row: tuple[int, ...] = (1, 2),
                       text_len: int = 3, left_pad: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """A left-padded batch in LFM2-VL's layout: row r is `<bos>`, two prompt tokens, its next `images_per_row[r]`
    images (`lfm2_vl_image_tokens`, back to back), then answer tokens, the only supervised ones; rows differ in
    length (`left_pad` more padding per row).

    Returns `input_ids`, `attention_mask`, `labels` `(B, L)`, `pixel_values` `(views, LFM2_VL_MAX_PATCHES, 3 * P * P)`
    (every image's views in order, each view's patches row-major, zero patches padding it as the image processor
    pads them), `pixel_attention_mask` `(views, LFM2_VL_MAX_PATCHES)` and `spatial_shapes` `(views, 2)`."""
    generator = torch.Generator().manual_seed(seed)
    bodies, shapes, image = [], [], 0
    for row, count in enumerate(images_per_row):
        prompt = [LFM2_VL_TOKENS["bos"], *torch.randint(20, 95, (2,), generator=generator).tolist()]
        for grid, whole in images[image:image + count]:
            prompt += lfm2_vl_image_tokens(grid, whole, config.downsample_factor)
            shapes += lfm2_vl_views(grid, whole)
        image += count
        answer = torch.randint(20, 95, (text_len + left_pad * (len(images_per_row) - 1 - row),),
                               generator=generator).tolist()
        bodies.append((prompt, answer))
    input_ids, attention_mask, labels = left_padded(bodies, LFM2_VL_TOKENS["pad"])
    patch = 3 * config.vision_config.patch_size ** 2
    pixel_values = torch.zeros(len(shapes), LFM2_VL_MAX_PATCHES, patch)
    pixel_attention_mask = torch.zeros(len(shapes), LFM2_VL_MAX_PATCHES, dtype=torch.long)
    for view, (height, width) in enumerate(shapes):
        pixel_values[view, :height * width] = torch.randn(height * width, patch, generator=generator)
        pixel_attention_mask[view, :height * width] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "pixel_values": pixel_values,
            "pixel_attention_mask": pixel_attention_mask, "spatial_shapes": torch.tensor(shapes)}


def lfm2_vl_images_as_one_run(input_ids: torch.LongTensor) -> torch.LongTensor:
    """`input_ids` with the tile markers inside every image (between two of its runs) turned into placeholders, so
    the per-run reference sees each image as one run. Inside an image a gap is one `<|img_row_r_col_c|>` or
    `<|img_thumbnail|>` token; between two images it is `<|image_end|>` and `<|image_start|>`."""
    inner = {LFM2_VL_TOKENS["thumbnail"], *range(LFM2_VL_TOKENS["row_col"], LFM2_VL_TOKENS["row_col"] + 4)}
    return views_as_one_run(input_ids, LFM2_VL_TOKENS["image"], lambda gap: set(gap) <= inner)


__all__ = ["LFM2_VL_IMAGES", "LFM2_VL_MAX_PATCHES", "LFM2_VL_TOKENS", "lfm2_vl_image_tokens",
           "lfm2_vl_images_as_one_run", "lfm2_vl_views", "make_lfm2_vl_batch", "tiny_croc_lfm2_vl_config"]
