"""Tiny LLaVA-NeXT Croc models and batches, built in code (nothing downloaded): a 28-px CLIP tower of 14-px patches
(4 tokens a view after dropping the class token), AnyRes grids up to 2 x 2 views, a Llama or Mistral language
model (`croc_testing.backbones`); a tiny plain folder with an offline processor (`save_tiny_llava_next`)."""

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


def tiny_llava_next_processor():
    """A `CrocLlavaNextProcessor` available offline for the tiny models here: the LLaVA SentencePiece tokenizer
    (`croc_testing.tiny.llama_sentencepiece_tokenizer`: `<image>` 32000, `<pad>` 32001) and LLaVA-NeXT's PIL image
    processor at 28 px over `LLAVA_NEXT_PINPOINTS`; CLIP's class token counted and dropped (`default`), as the
    llava-v1.6 checkpoints' processors say."""
    from transformers import LlavaNextImageProcessorPil

    from modeling_croc.processing_croc_llava_next import CrocLlavaNextProcessor

    from .tiny import llama_sentencepiece_tokenizer

    image_processor = LlavaNextImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                                 image_grid_pinpoints=LLAVA_NEXT_PINPOINTS)
    return CrocLlavaNextProcessor(image_processor=image_processor, tokenizer=llama_sentencepiece_tokenizer(),
                                  patch_size=14, vision_feature_select_strategy="default",
                                  num_additional_image_tokens=1)


def save_tiny_llava_next(folder, seed: int = 0):
    """Write a random tiny plain LLaVA-NeXT folder (`LlavaNextForConditionalGeneration` on a Llama LM, as
    llava-v1.6-vicuna, and its processor files naming `LlavaNextProcessor`), laid out as a Hub checkpoint is: what a
    user starts Croc's stage 1.5 from. The vocabulary is LLaVA's (32,002 entries, `<image>` 32000)."""
    from pathlib import Path

    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

    from modeling_croc.convert.to_llava import name_parent_processor

    from .backbones import backbone_fields

    folder = Path(folder)
    processor = tiny_llava_next_processor()
    tokenizer = processor.tokenizer
    fields = backbone_fields("llama", "clip", vocab_size=len(tokenizer))
    fields["vision_config"].update(image_size=28, patch_size=14)
    fields["text_config"].update(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
    fields["image_token_index"] = processor.image_token_id
    config = LlavaNextConfig(**fields, image_grid_pinpoints=LLAVA_NEXT_PINPOINTS)
    torch.manual_seed(seed)
    LlavaNextForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    # A Hub folder's processor files name the parent class (which loads them natively), not this package's.
    name_parent_processor(folder, type(processor))
    return folder


def make_llava_next_batch(model, sizes: list[list[int]] = LLAVA_NEXT_SIZES, images_per_row: tuple[int, ...] = (1, 1, 1),
                          left_pad: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """A left-padded batch in LLaVA-NeXT's layout: row r holds the next `images_per_row[r]` images, each as its own
    run of `<image>` tokens (as many as LLaVA-NeXT's packing gives for its size: `model.image_token_counts`), then
    answer tokens, the only supervised ones; rows differ in length (`left_pad` more padding per row).

    Returns `input_ids`, `attention_mask`, `labels` `(B, L)`, `pixel_values` `(num_images, max crops, 3, 28, 28)`
    (each image's crops first, zero-padded as the image processor pads them) and `image_sizes` `(num_images, 2)`."""
    counts = model.image_token_counts(None, len(sizes), image_sizes=torch.tensor(sizes))
    return make_anyres_batch(model.config, sizes, counts, list(images_per_row), left_pad=left_pad, seed=seed)


__all__ = ["LLAVA_NEXT_PINPOINTS", "LLAVA_NEXT_SIZES", "make_llava_next_batch", "save_tiny_llava_next",
           "tiny_croc_llava_next_config", "tiny_llava_next_processor"]
