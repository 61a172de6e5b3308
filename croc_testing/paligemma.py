"""A tiny PaliGemma for Croc, built in code (nothing downloaded): config and batch builders of the PaliGemma family,
on a Gemma 2 text model (PaliGemma 2) or a Gemma one (PaliGemma 1)."""

from __future__ import annotations

from typing import Any

import torch

from modeling_croc import CrocPaliGemmaConfig

# PaliGemma's special tokens in a 160-entry vocabulary: padding, end and start of text, the image placeholder.
PALIGEMMA_TOKENS = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2, "image_token_index": 150}
# The sliding window of Gemma 2's sliding layer: shorter than the test rows, so the window shows in the masks.
PALIGEMMA_SLIDING_WINDOW = 6
# Visual tokens per image: the tower's 2x2 patch grid (16x16 images of 8x8 patches).
PALIGEMMA_TOKENS_PER_IMAGE = 4


def tiny_paligemma_fields(gemma: int = 2) -> dict[str, Any]:
    """PaliGemma config fields of a tiny model: a 2-layer text model of width 32 (4 heads of 8, 2 KV heads), Gemma 2
    (`gemma=2`: its first layer sliding with window `PALIGEMMA_SLIDING_WINDOW`, its second global, attention and
    final logits soft-capped, as Gemma 2 has them) or Gemma (`gemma=1`: global layers, no soft-capping); a 1-layer
    SigLIP tower of width 16 on 16x16 images of 8x8 patches, `PALIGEMMA_TOKENS_PER_IMAGE` tokens each."""
    text = {"vocab_size": 160, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
            **{name: value for name, value in PALIGEMMA_TOKENS.items() if name.endswith("_id")}}
    if gemma == 2:
        text.update(model_type="gemma2", query_pre_attn_scalar=8, sliding_window=PALIGEMMA_SLIDING_WINDOW,
                    layer_types=["sliding_attention", "full_attention"], attn_logit_softcapping=50.0,
                    final_logit_softcapping=30.0)
    else:
        text.update(model_type="gemma")
    vision = {"model_type": "siglip_vision_model", "hidden_size": 16, "intermediate_size": 32,
              "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 16, "patch_size": 8,
              "vision_use_head": False}
    return {"text_config": text, "vision_config": vision, "projection_dim": 32, "hidden_size": 32,
            "image_token_index": PALIGEMMA_TOKENS["image_token_index"], "vocab_size": 160}


def tiny_croc_paligemma_config(gemma: int = 2, **croc_fields: Any) -> CrocPaliGemmaConfig:
    """A tiny `CrocPaliGemmaConfig` (`tiny_paligemma_fields`) with `croc_fields` on top (pool of 64 by default)."""
    croc_fields.setdefault("prompt_pool_size", 64)
    croc_fields.setdefault("vtr_head", "linear")
    return CrocPaliGemmaConfig(**tiny_paligemma_fields(gemma), **croc_fields)


def make_paligemma_batch(config, prefix_lengths: list[int], suffix_lengths: list[int], left_pad: int = 0,
                         seed: int = 0) -> dict[str, torch.Tensor]:
    """A left-padded batch in the layout `PaliGemmaProcessor` builds from a prefix and a suffix: one image's
    placeholders, `<bos>`, `prefix_lengths[row]` prefix tokens and a newline-like token (`token_type_ids` 0: the
    bidirectional prefix), then `suffix_lengths[row]` suffix tokens and `<eos>` (type 1: the causal suffix), labels
    on the suffix only, as PaliGemma trains.

    Returns what its processor returns (`input_ids`, `attention_mask`, `pixel_values` `(num_images, 3, H, W)`,
    `token_type_ids`) plus `labels`."""
    generator = torch.Generator().manual_seed(seed)
    tokens = (config.vision_config.image_size // config.vision_config.patch_size) ** 2
    rows, types = [], []
    for prefix_length, suffix_length in zip(prefix_lengths, suffix_lengths):
        prefix = [config.image_token_index] * tokens + [PALIGEMMA_TOKENS["bos_token_id"]] \
            + torch.randint(10, 140, (prefix_length,), generator=generator).tolist() + [3]
        suffix = torch.randint(10, 140, (suffix_length,), generator=generator).tolist() \
            + [PALIGEMMA_TOKENS["eos_token_id"]]
        rows.append(prefix + suffix)
        types.append([0] * len(prefix) + [1] * len(suffix))
    length = max(map(len, rows)) + left_pad
    input_ids = torch.full((len(rows), length), PALIGEMMA_TOKENS["pad_token_id"])
    attention_mask = torch.zeros(len(rows), length, dtype=torch.long)
    token_type_ids = torch.zeros(len(rows), length, dtype=torch.long)
    for index, (row, kinds) in enumerate(zip(rows, types)):
        input_ids[index, length - len(row):] = torch.tensor(row)
        attention_mask[index, length - len(row):] = 1
        token_type_ids[index, length - len(row):] = torch.tensor(kinds)
    labels = torch.where(token_type_ids == 1, input_ids, -100)
    vision = config.vision_config
    pixel_values = torch.randn(len(rows), vision.num_channels, vision.image_size, vision.image_size,
                               generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "pixel_values": pixel_values,
            "token_type_ids": token_type_ids}


# PaliGemma's special tokens as its tokenizer names them: padding, end and start of text, unknown, the image
# placeholder (`PaliGemmaProcessor` reads it as the tokenizer's `image_token`).
PALIGEMMA_SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<image>")


def tiny_paligemma_processor():
    """A `CrocPaliGemmaProcessor` available offline: a Gemma-style BPE tokenizer (`croc_testing.gemma3.
    gemma_bpe_tokenizer`) with `PALIGEMMA_SPECIAL_TOKENS` (the processor adds PaliGemma's 1152 `<locNNNN>` /
    `<segNNN>` tokens and turns the tokenizer's own BOS off, as it does to a checkpoint's), SigLIP's PIL image
    processor at the tiny tower's 16x16 with `PALIGEMMA_TOKENS_PER_IMAGE` tokens an image, the `paligemma` chat
    template."""
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    from modeling_croc.conversation import get_template
    from modeling_croc.processing_croc_paligemma import CrocPaliGemmaProcessor

    from .gemma3 import gemma_bpe_tokenizer

    tokenizer = gemma_bpe_tokenizer(PALIGEMMA_SPECIAL_TOKENS, {"image_token": "<image>"})
    image_processor = SiglipImageProcessorPil(size={"height": 16, "width": 16})
    image_processor.image_seq_length = PALIGEMMA_TOKENS_PER_IMAGE  # a checkpoint's preprocessor_config.json has it
    return CrocPaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                  chat_template=get_template("paligemma").chat_template(tokenizer.eos_token, "<image>"))


def save_tiny_paligemma(folder, seed: int = 0):
    """Write a random tiny plain PaliGemma 2 folder (`PaliGemmaForConditionalGeneration` on Gemma 2, `tiny_paligemma_
    fields`, and the files of a `PaliGemmaProcessor` with `tiny_paligemma_processor`'s parts), laid out as a Hub
    checkpoint is: what a user starts Croc's stage 1.5 from."""
    from pathlib import Path

    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor

    folder = Path(folder)
    parts = tiny_paligemma_processor()
    tokenizer = parts.tokenizer
    fields = tiny_paligemma_fields(gemma=2)
    fields.update(image_token_index=tokenizer.image_token_id, vocab_size=len(tokenizer))
    fields["text_config"].update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                 bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    PaliGemmaForConditionalGeneration(PaliGemmaConfig(**fields)).save_pretrained(folder)
    PaliGemmaProcessor(image_processor=parts.image_processor, tokenizer=tokenizer,
                       chat_template=parts.chat_template).save_pretrained(folder)
    return folder


__all__ = ["PALIGEMMA_SLIDING_WINDOW", "PALIGEMMA_SPECIAL_TOKENS", "PALIGEMMA_TOKENS", "PALIGEMMA_TOKENS_PER_IMAGE",
           "make_paligemma_batch", "save_tiny_paligemma", "tiny_croc_paligemma_config", "tiny_paligemma_fields",
           "tiny_paligemma_processor"]
