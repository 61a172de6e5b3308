"""Tiny InternVL Croc models and batches, built in code (nothing downloaded): a 2-layer InternViT tower on 16-px
tiles of 4-px patches (16 patches, 4 tokens a tile after the pixel shuffle), a 2-layer Qwen2 language model whose
top layer slides, and batches in InternVL's token layout (`<img>`, the tiles' `<IMG_CONTEXT>` tokens, `</img>`)."""

from __future__ import annotations

from typing import Any

import torch

from modeling_croc import CrocInternVLConfig

from .backbones import text_config
from .batches import left_padded

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
    input_ids, attention_mask, labels = left_padded(bodies, INTERNVL_TOKENS["pad"])
    size = config.vision_config.image_size
    pixel_values = torch.randn(sum(tiles), 3, size[0], size[1], generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "pixel_values": pixel_values}


# InternVL's image tokens as its tokenizer names them (`InternVLProcessor` reads them under these names): the image
# start and end, the context placeholder the image's tiles replace, and the video marker.
INTERNVL_IMAGE_TOKENS = {"start_image_token": "<img>", "end_image_token": "</img>",
                         "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}
# Most tiles of an image in the tiny folder (the thumbnail comes on top when an image is tiled).
INTERNVL_MAX_TILES = 4

# The chat template of the transformers-format InternVL checkpoints (`OpenGVLab/InternVL3-*-hf`, written by
# transformers' `convert_internvl_weights_to_hf.py`), restated here: ChatML turns, no default system message, each image
# as `<IMG_CONTEXT>\n` at its place in the turn (the processor expands the placeholder to `<img>...</img>`).
INTERNVL_HF_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def internvl_bpe_tokenizer():
    """An InternVL-style tokenizer available offline: `croc_testing.tiny.chatml_bpe_tokenizer` (Qwen's ChatML tokens,
    EOS `<|im_end|>`, no BOS) plus InternVL's image tokens as special tokens, under the names `InternVLProcessor`
    reads (`INTERNVL_IMAGE_TOKENS`), as the Hub's InternVL3 tokenizers have them."""
    from transformers import PreTrainedTokenizerFast

    from .tiny import chatml_bpe_tokenizer

    chatml = chatml_bpe_tokenizer()
    backend = chatml.backend_tokenizer
    backend.add_special_tokens(list(INTERNVL_IMAGE_TOKENS.values()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=chatml.eos_token,
                                        pad_token=chatml.pad_token, additional_special_tokens=["<|im_start|>"],
                                        extra_special_tokens=dict(INTERNVL_IMAGE_TOKENS))
    tokenizer.model_max_length = chatml.model_max_length
    return tokenizer


def tiny_internvl_processor():
    """A `CrocInternVLProcessor` available offline: `internvl_bpe_tokenizer`, GotOcr2's PIL image processor on
    `INTERNVL_TILE_SIZE`-px tiles (up to `INTERNVL_MAX_TILES` tiles and the thumbnail), 4 placeholders a tile (the
    tiny tower's), the -hf checkpoints' chat template."""
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    from modeling_croc.processing_croc_internvl import CrocInternVLProcessor

    image_processor = GotOcr2ImageProcessorPil(
        size={"height": INTERNVL_TILE_SIZE, "width": INTERNVL_TILE_SIZE}, max_patches=INTERNVL_MAX_TILES,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    return CrocInternVLProcessor(image_processor=image_processor, tokenizer=internvl_bpe_tokenizer(),
                                 image_seq_length=tiny_croc_internvl_config().tile_tokens(),
                                 chat_template=INTERNVL_HF_CHAT_TEMPLATE)


def save_tiny_internvl(folder, seed: int = 0):
    """Write a random tiny plain InternVL folder (`InternVLForConditionalGeneration` with `tiny_croc_internvl_config`'s
    towers, and the files of an `InternVLProcessor` with `tiny_internvl_processor`'s parts, naming transformers' class),
    laid out as a Hub (-hf) checkpoint is: what a user starts Croc's stage 1.5 from."""
    from pathlib import Path

    from transformers import InternVLConfig, InternVLForConditionalGeneration

    from modeling_croc.convert.to_llava import name_parent_processor

    folder = Path(folder)
    processor = tiny_internvl_processor()
    tokenizer = processor.tokenizer
    croc = tiny_croc_internvl_config()
    text = text_config("qwen2", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    text.update(bos_token_id=None, eos_token_id=tokenizer.eos_token_id)
    config = InternVLConfig(text_config=text, vision_config=croc.vision_config.to_dict(),
                            image_token_id=processor.image_token_id, downsample_ratio=croc.downsample_ratio,
                            image_seq_length=processor.image_seq_length)
    torch.manual_seed(seed)
    InternVLForConditionalGeneration(config).save_pretrained(folder)
    # The Hub's image processor files leave tiling to the processor's default (`crop_to_patches` off here).
    processor.image_processor.crop_to_patches = False
    processor.save_pretrained(folder)
    # A Hub folder's processor files name the parent class (which loads them natively), not this package's.
    name_parent_processor(folder, type(processor))
    return folder


__all__ = ["INTERNVL_HF_CHAT_TEMPLATE", "INTERNVL_IMAGE_TOKENS", "INTERNVL_MAX_TILES", "INTERNVL_TILES",
           "INTERNVL_TILE_SIZE", "INTERNVL_TOKENS", "internvl_bpe_tokenizer", "internvl_image_tokens",
           "make_internvl_batch", "save_tiny_internvl", "tiny_croc_internvl_config", "tiny_internvl_processor"]
