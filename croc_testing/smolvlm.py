"""Tiny SmolVLM Croc models and batches, built in code (nothing downloaded): a 2-layer SigLIP-style tower on 16-px
views of 4-px patches (16 patches, 4 tokens a view after the 2x pixel shuffle), a 2-layer language model, and
batches in SmolVLM's token layout (tiles introduced by `<row_r_col_c>`, the global view by `<global-img>`)."""

from __future__ import annotations

from typing import Any

import torch

from modeling_croc import CrocSmolVLMConfig

from .backbones import text_config
from .batches import left_padded

# SmolVLM's special tokens in a 128-entry vocabulary; `<row_r_col_c>` is `row_col + 2 * (r - 1) + (c - 1)` for the
# grids up to 2 x 2 used here.
SMOLVLM_TOKENS = {"bos": 1, "eos": 2, "newline": 19, "row_col": 100, "image": 120, "fake": 121, "global": 122,
                  "pad": 127}
# (rows, cols) tile grid of each image of the default batch: a 1 x 2 split, a small image (its global view alone), a
# 2 x 2 split; each image also has its global view: 3, 1 and 5 views.
SMOLVLM_GRIDS = [(1, 2), (0, 0), (2, 2)]
# View side in pixels.
SMOLVLM_VIEW_SIZE = 16


def tiny_croc_smolvlm_config(text: str = "llama", config_class: type = CrocSmolVLMConfig,
                             **croc_fields: Any) -> CrocSmolVLMConfig:
    """A tiny `CrocSmolVLMConfig`: a text model of width 32 (2 layers; `text` a key of
    `croc_testing.backbones.TEXT_BACKBONES`: `"llama"` as SmolVLM ships, `"qwen2"` for a global and a sliding layer)
    and a vision tower of width 16 (2 heads) on 16-px views of 4-px patches, shuffled by 2 (4 tokens a view);
    `croc_fields` on top (pool of 64, linear VTR head by default). `config_class` builds another config of these
    fields (`CrocIdefics3Config`: Idefics3's are SmolVLM's)."""
    text_fields = text_config(text, vocab_size=128, pad_token_id=SMOLVLM_TOKENS["pad"])
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": SMOLVLM_VIEW_SIZE, "patch_size": 4}
    croc_fields.setdefault("prompt_pool_size", 64)
    croc_fields.setdefault("vtr_head", "linear")
    return config_class(text_config=text_fields, vision_config=vision, image_token_id=SMOLVLM_TOKENS["image"],
                        scale_factor=2, **croc_fields)


def smolvlm_image_tokens(rows: int, cols: int, view_tokens: int) -> list[int]:
    """An image's tokens as SmolVLM's processor writes them: every tile as `<fake_token_around_image>`,
    `<row_r_col_c>` and its placeholders, a newline closing each grid row, then (after one more newline when split)
    `<fake_token_around_image>`, `<global-img>`, the global view's placeholders, `<fake_token_around_image>`."""
    tokens = []
    for row in range(rows):
        for col in range(cols):
            tokens += [SMOLVLM_TOKENS["fake"], SMOLVLM_TOKENS["row_col"] + 2 * row + col,
                       *[SMOLVLM_TOKENS["image"]] * view_tokens]
        tokens.append(SMOLVLM_TOKENS["newline"])
    if rows:
        tokens.append(SMOLVLM_TOKENS["newline"])
    return tokens + [SMOLVLM_TOKENS["fake"], SMOLVLM_TOKENS["global"], *[SMOLVLM_TOKENS["image"]] * view_tokens,
                     SMOLVLM_TOKENS["fake"]]


def make_smolvlm_batch(config, grids: list[tuple[int, int]] = SMOLVLM_GRIDS, images_per_row: tuple[int, ...] = (1, 2),
                       text_len: int = 3, left_pad: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """A left-padded batch in SmolVLM's layout: row r is `<bos>`, two prompt tokens, its next `images_per_row[r]`
    images (`smolvlm_image_tokens`, back to back), then answer tokens, the only supervised ones; rows differ in
    length (`left_pad` more padding per row).

    Returns `input_ids`, `attention_mask`, `labels` `(B, L)`, `pixel_values` `(B, max views, 3, 16, 16)` (each row's
    views: every image's tiles in grid order then its global view; all-zero views pad shorter rows, as SmolVLM's
    image processor pads them) and `pixel_attention_mask` `(B, max views, 16, 16)` (0 on the padding views)."""
    generator = torch.Generator().manual_seed(seed)
    view_tokens = config.view_tokens()
    bodies, views, image = [], [], 0
    for row, count in enumerate(images_per_row):
        prompt = [SMOLVLM_TOKENS["bos"], *torch.randint(20, 95, (2,), generator=generator).tolist()]
        row_views = 0
        for rows, cols in grids[image:image + count]:
            prompt += smolvlm_image_tokens(rows, cols, view_tokens)
            row_views += rows * cols + 1
        image += count
        views.append(row_views)
        answer = torch.randint(20, 95, (text_len + left_pad * (len(images_per_row) - 1 - row),),
                               generator=generator).tolist()
        bodies.append((prompt, answer))
    input_ids, attention_mask, labels = left_padded(bodies, SMOLVLM_TOKENS["pad"])
    size = config.vision_config.image_size
    pixel_values = torch.zeros(len(bodies), max(views), 3, size, size)
    pixel_attention_mask = torch.zeros(len(bodies), max(views), size, size, dtype=torch.long)
    for row, count in enumerate(views):
        pixel_values[row, :count] = torch.randn(count, 3, size, size, generator=generator)
        pixel_attention_mask[row, :count] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "pixel_values": pixel_values,
            "pixel_attention_mask": pixel_attention_mask}


# SmolVLM's image tokens as its tokenizer names them (`SmolVLMProcessor` reads them under these names): the marker
# around each view, the placeholder, the global view's introducer, the turn end.
SMOLVLM_IMAGE_TOKENS = {"fake_image_token": "<fake_token_around_image>", "image_token": "<image>",
                        "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"}
# The tiny folder's largest grid a side: images up to `SMOLVLM_MAX_GRID * SMOLVLM_VIEW_SIZE` px on their longest edge,
# split into tiles of `SMOLVLM_VIEW_SIZE` px (at most 2 x 2 tiles and the global view).
SMOLVLM_MAX_GRID = 2


def smolvlm_bpe_tokenizer():
    """A SmolVLM-style tokenizer available offline: `croc_testing.tiny.chatml_bpe_tokenizer` (byte-level BPE with
    `<|im_start|>`, no BOS) plus SmolVLM's image tokens (`SMOLVLM_IMAGE_TOKENS`, under the names `SmolVLMProcessor`
    reads) and the `<row_r_col_c>` tile tokens of grids up to `SMOLVLM_MAX_GRID` a side, as special tokens; EOS is
    `<end_of_utterance>`, which closes every turn of SmolVLM's chat format."""
    from transformers import PreTrainedTokenizerFast

    from .tiny import chatml_bpe_tokenizer

    chatml = chatml_bpe_tokenizer()
    backend = chatml.backend_tokenizer
    tiles = [f"<row_{row}_col_{col}>" for row in range(1, SMOLVLM_MAX_GRID + 1)
             for col in range(1, SMOLVLM_MAX_GRID + 1)]
    backend.add_special_tokens([*SMOLVLM_IMAGE_TOKENS.values(), *tiles])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<end_of_utterance>",
                                        pad_token=chatml.pad_token, additional_special_tokens=["<|im_start|>", *tiles],
                                        extra_special_tokens=dict(SMOLVLM_IMAGE_TOKENS))
    tokenizer.model_max_length = chatml.model_max_length
    return tokenizer


def tiny_smolvlm_processor():
    """A `CrocSmolVLMProcessor` available offline: `smolvlm_bpe_tokenizer`, SmolVLM's PIL image processor splitting
    images of up to `SMOLVLM_MAX_GRID * SMOLVLM_VIEW_SIZE` px into `SMOLVLM_VIEW_SIZE`-px tiles plus the global view,
    4 placeholders a view (the tiny tower's), transformers' SmolVLM chat template (`processing_smolvlm`'s default)."""
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil
    from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE

    from modeling_croc.processing_croc_smolvlm import CrocSmolVLMProcessor

    image_processor = SmolVLMImageProcessorPil(size={"longest_edge": SMOLVLM_MAX_GRID * SMOLVLM_VIEW_SIZE},
                                               max_image_size={"longest_edge": SMOLVLM_VIEW_SIZE})
    return CrocSmolVLMProcessor(image_processor=image_processor, tokenizer=smolvlm_bpe_tokenizer(),
                                image_seq_len=tiny_croc_smolvlm_config().view_tokens(),
                                chat_template=DEFAULT_CHAT_TEMPLATE)


def save_tiny_smolvlm(folder, seed: int = 0, processor=None, plain_config_class: type | None = None,
                      plain_model_class: type | None = None):
    """Write a random tiny plain SmolVLM folder (`SmolVLMForConditionalGeneration` with `tiny_croc_smolvlm_config`'s
    towers, and the files of a `SmolVLMProcessor` with `tiny_smolvlm_processor`'s parts, naming transformers' class),
    laid out as a Hub checkpoint is (without its video processor file): what a user starts Croc's stage 1.5 from.
    `processor`, `plain_config_class` and `plain_model_class` write another family of these towers and files
    (`croc_testing.idefics3.save_tiny_idefics3`)."""
    from pathlib import Path

    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration

    from modeling_croc.convert.to_llava import name_parent_processor

    folder = Path(folder)
    processor = processor if processor is not None else tiny_smolvlm_processor()
    plain_config_class = plain_config_class or SmolVLMConfig
    plain_model_class = plain_model_class or SmolVLMForConditionalGeneration
    tokenizer = processor.tokenizer
    croc = tiny_croc_smolvlm_config()
    text = text_config("llama", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    text.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    config = plain_config_class(text_config=text, vision_config=croc.vision_config.to_dict(),
                                image_token_id=processor.image_token_id, scale_factor=croc.scale_factor,
                                pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    plain_model_class(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    # A Hub folder's processor files name the parent class (which loads them natively), not this package's.
    name_parent_processor(folder, type(processor))
    return folder


__all__ = ["SMOLVLM_GRIDS", "SMOLVLM_IMAGE_TOKENS", "SMOLVLM_MAX_GRID", "SMOLVLM_TOKENS", "SMOLVLM_VIEW_SIZE",
           "make_smolvlm_batch", "save_tiny_smolvlm", "smolvlm_bpe_tokenizer", "smolvlm_image_tokens",
           "tiny_croc_smolvlm_config", "tiny_smolvlm_processor"]
