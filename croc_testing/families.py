"""Tiny models and batches of the Croc families beyond LLaVA-1.5 and OneVision, built in code (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from modeling_croc import CrocLlavaOnevision15Config, CrocQwen2_5_VLConfig, CrocQwen2VLConfig

# Qwen2.5-VL's special tokens in a 160-entry vocabulary: padding, the image placeholder, video, vision start / end.
QWEN_TOKENS = {"pad_token_id": 0, "image_token_id": 150, "video_token_id": 151, "vision_start_token_id": 152,
               "vision_end_token_id": 153}
# The sliding window of the sliding-layer variant: shorter than the test rows, so the window shows in the masks.
QWEN_SLIDING_WINDOW = 6


def tiny_qwen2_5_vl_fields(sliding: bool = False) -> dict[str, Any]:
    """Qwen2.5-VL config fields of a tiny model: a 2-layer text model of width 32 (4 heads, 2 KV heads, M-RoPE
    sections 2/1/1 over its head dimension 8) and a 2-block vision tower (one windowed, one full-attention block)
    whose 2x2 merger outputs width 32. `sliding`: the top layer slides (`use_sliding_window`, `max_window_layers=1`),
    as Qwen2.5-VL's text model can."""
    text = {"vocab_size": 160, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "pad_token_id": QWEN_TOKENS["pad_token_id"],
            "bos_token_id": 1, "eos_token_id": 2,
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 1, 1]}}
    if sliding:
        text.update(use_sliding_window=True, sliding_window=QWEN_SLIDING_WINDOW, max_window_layers=1)
    vision = {"depth": 2, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2, "out_hidden_size": 32,
              "fullatt_block_indexes": [1], "window_size": 56, "patch_size": 14, "temporal_patch_size": 2,
              "spatial_merge_size": 2}
    return {"text_config": text, "vision_config": vision,
            **{name: value for name, value in QWEN_TOKENS.items() if name != "pad_token_id"}}


# Qwen2-VL's vision tower at tiny sizes: 2 blocks of width 16 (`embed_dim`; full attention in every block, Qwen2-VL
# has no windows), MLP ratio 2, a 2x2 merger whose output (`hidden_size`, Qwen2-VL's name for it) is the text width.
TINY_QWEN2_VL_VISION = {"depth": 2, "embed_dim": 16, "hidden_size": 32, "mlp_ratio": 2, "num_heads": 2,
                        "patch_size": 14, "temporal_patch_size": 2, "spatial_merge_size": 2}


def tiny_qwen2_vl_fields(sliding: bool = False) -> dict[str, Any]:
    """Qwen2-VL config fields of a tiny model: Qwen2.5-VL's text model and tokens (`tiny_qwen2_5_vl_fields`, its
    text model is Qwen2-VL's) and Qwen2-VL's own vision tower (`TINY_QWEN2_VL_VISION`)."""
    return {**tiny_qwen2_5_vl_fields(sliding), "vision_config": dict(TINY_QWEN2_VL_VISION)}


# LLaVA-OneVision-1.5's RICE-ViT tower at tiny sizes: 2 blocks of width 16 (2 heads: 2D RoPE needs the width divisible
# by 4 * heads), one 14-px frame per patch (no temporal patches), a 2x2 merger whose output is the text width.
TINY_LLAVA_ONEVISION1_5_VISION = {"depth": 2, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2,
                                  "out_hidden_size": 32, "patch_size": 14, "spatial_merge_size": 2}


def tiny_llava_onevision1_5_fields(sliding: bool = False) -> dict[str, Any]:
    """LLaVA-OneVision-1.5 config fields of a tiny model: Qwen2.5-VL's tiny text sizes and tokens
    (`tiny_qwen2_5_vl_fields`) on a Qwen3 text model (head dimension 8, plain 1D RoPE: no M-RoPE sections) and its own
    vision tower (`TINY_LLAVA_ONEVISION1_5_VISION`). `sliding`: the top layer slides, as Qwen3's text model can."""
    fields = tiny_qwen2_5_vl_fields(sliding)
    text = {**fields["text_config"], "model_type": "qwen3", "head_dim": 8, "rope_parameters": {"rope_type": "default"}}
    return {**fields, "text_config": text, "vision_config": dict(TINY_LLAVA_ONEVISION1_5_VISION)}


def tiny_croc_qwen2_5_vl_config(sliding: bool = False, qwen2_vl: bool = False, llava_onevision1_5: bool = False,
                                **croc_fields: Any
                                ) -> CrocQwen2_5_VLConfig | CrocQwen2VLConfig | CrocLlavaOnevision15Config:
    """A tiny `CrocQwen2_5_VLConfig` (`tiny_qwen2_5_vl_fields`), or with `qwen2_vl` a tiny `CrocQwen2VLConfig`
    (`tiny_qwen2_vl_fields`), or with `llava_onevision1_5` a tiny `CrocLlavaOnevision15Config`
    (`tiny_llava_onevision1_5_fields`), with `croc_fields` on top (pool of 64 by default)."""
    croc_fields.setdefault("prompt_pool_size", 64)
    croc_fields.setdefault("vtr_head", "linear")
    if llava_onevision1_5:
        return CrocLlavaOnevision15Config(**tiny_llava_onevision1_5_fields(sliding), **croc_fields)
    if qwen2_vl:
        return CrocQwen2VLConfig(**tiny_qwen2_vl_fields(sliding), **croc_fields)
    return CrocQwen2_5_VLConfig(**tiny_qwen2_5_vl_fields(sliding), **croc_fields)


def make_qwen_batch(config, grids: list[tuple[int, int, int]], text_lengths: list[int], left_pad: int = 0,
                    seed: int = 0) -> dict[str, torch.Tensor]:
    """A left-padded batch in Qwen2.5-VL's layout, one image per row: `<|vision_start|>`, the image's
    `t*h*w / merge**2` placeholders, `<|vision_end|>`, then `text_lengths[row]` text tokens, all supervised
    (GLM-4.1V's: the same between `<|begin_of_image|>` and `<|end_of_image|>`).

    Returns what its processor returns (`input_ids`, `attention_mask`, `pixel_values` as flattened patches,
    `image_grid_thw`, `mm_token_type_ids`: 1 at image placeholders) plus `labels`."""
    generator = torch.Generator().manual_seed(seed)
    vision = config.vision_config
    merge = vision.spatial_merge_size
    # GLM-4.1V's wrapper around an image's placeholders is `<|begin_of_image|>` / `<|end_of_image|>`
    # (`image_start_token_id`), where Qwen's is `<|vision_start|>` / `<|vision_end|>`.
    glm = not hasattr(config, "vision_start_token_id")
    start, end = ((config.image_start_token_id, config.image_end_token_id) if glm
                  else (config.vision_start_token_id, config.vision_end_token_id))
    rows = []
    for (t, h, w), text_length in zip(grids, text_lengths):
        text = torch.randint(10, 140, (text_length,), generator=generator).tolist()
        rows.append([3, start] + [config.image_token_id] * (t * h * w // merge**2) + [end] + text)
    length = max(map(len, rows)) + left_pad
    input_ids = torch.full((len(rows), length), QWEN_TOKENS["pad_token_id"])
    attention_mask = torch.zeros(len(rows), length, dtype=torch.long)
    for index, row in enumerate(rows):
        input_ids[index, length - len(row):] = torch.tensor(row)
        attention_mask[index, length - len(row):] = 1
    labels = torch.where(attention_mask.bool() & (input_ids >= 10) & (input_ids < 140), input_ids, -100)
    grid = torch.tensor(grids)
    # LLaVA-OneVision-1.5's tower patches one frame at a time (its config has no `temporal_patch_size`).
    patch_dim = vision.in_channels * getattr(vision, "temporal_patch_size", 1) * vision.patch_size**2
    pixel_values = torch.randn(int(grid.prod(-1).sum()), patch_dim, generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
            "pixel_values": pixel_values, "image_grid_thw": grid,
            "mm_token_type_ids": (input_ids == config.image_token_id).long()}


# Qwen2.5-VL's vision tokens, added to the offline ChatML tokenizer as its tokenizer has them.
QWEN_VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")


def qwen2_bpe_tokenizer():
    """The offline ChatML tokenizer's vocabulary under Qwen2's own tokenizer class (`transformers.Qwen2Tokenizer`),
    whose NFC normaliser and pre-tokenizer the offline one lacks (it keeps a run of newlines in one piece, where the
    offline one splits them as GPT-2 does), plus the "\\n\\n" token Qwen's vocabulary has and Qwen2.5-VL's vision
    tokens."""
    import json

    from transformers import Qwen2Tokenizer

    from .tiny import chatml_bpe_tokenizer

    model = json.loads(chatml_bpe_tokenizer().backend_tokenizer.to_str())["model"]
    vocab = {**model["vocab"], "ĊĊ": len(model["vocab"])}
    merges = [tuple(merge) for merge in model["merges"]] + [("Ċ", "Ċ")]
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", *QWEN_VISION_TOKENS]})
    return tokenizer


def tiny_qwen2_5_vl_processor(tokenizer=None, qwen2_vl: bool = False, llava_onevision1_5: bool = False):
    """A `CrocQwen2_5_VLProcessor` available offline: the ChatML byte-level BPE tokenizer of the tiny OneVision model
    plus Qwen2.5-VL's vision tokens, and Qwen2-VL's PIL image processor at tiny sizes (14-px patches, 2x2 merge,
    images resized to between 28x28 and 56x56 pixels: 1 to 4 merged tokens); `tokenizer` replaces the tokenizer
    (`qwen2_bpe_tokenizer`). With `qwen2_vl`, a `CrocQwen2VLProcessor` of the same parts (Qwen2-VL's tokens and image
    processor are these). With `llava_onevision1_5`, a `CrocLlavaOnevision15Processor` of the same parts, its image
    processor patching one frame at a time (`temporal_patch_size=1`), as its tower's 2D patch embedding takes them."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from modeling_croc.processing_croc_llava_onevision1_5 import CrocLlavaOnevision15Processor
    from modeling_croc.processing_croc_qwen2_5_vl import CrocQwen2_5_VLProcessor
    from modeling_croc.processing_croc_qwen2_vl import CrocQwen2VLProcessor

    from .tiny import chatml_bpe_tokenizer

    if tokenizer is None:
        tokenizer = chatml_bpe_tokenizer()
        tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", *QWEN_VISION_TOKENS]})
    image_processor = Qwen2VLImageProcessorPil(size={"shortest_edge": 28 * 28, "longest_edge": 56 * 56},
                                               patch_size=14, merge_size=2,
                                               temporal_patch_size=1 if llava_onevision1_5 else 2)
    processor_class = (CrocLlavaOnevision15Processor if llava_onevision1_5 else CrocQwen2VLProcessor if qwen2_vl
                       else CrocQwen2_5_VLProcessor)
    return processor_class(image_processor=image_processor, tokenizer=tokenizer)


def save_tiny_qwen2_5_vl(folder, seed: int = 0, qwen2_vl: bool = False, llava_onevision1_5: bool = False):
    """Write a random tiny plain Qwen2.5-VL folder (`Qwen2_5_VLForConditionalGeneration` and its processor files),
    laid out as a Hub checkpoint is: what a user starts Croc's stage 1.5 from. With `qwen2_vl`, a Qwen2-VL folder
    (`Qwen2VLForConditionalGeneration`, `tiny_qwen2_vl_fields`, its processor files naming `Qwen2VLProcessor`); with
    `llava_onevision1_5` a LLaVA-OneVision-1.5 folder (`LlavaOnevision15ForConditionalGeneration`,
    `tiny_llava_onevision1_5_fields`, its processor files naming `Exaone4_5_Processor`)."""
    from transformers import (
        LlavaOnevision15Config,
        LlavaOnevision15ForConditionalGeneration,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
    )

    processor = tiny_qwen2_5_vl_processor(qwen2_vl=qwen2_vl, llava_onevision1_5=llava_onevision1_5)
    tokenizer = processor.tokenizer
    fields = (tiny_llava_onevision1_5_fields() if llava_onevision1_5 else tiny_qwen2_vl_fields() if qwen2_vl
              else tiny_qwen2_5_vl_fields())
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in (
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"),
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"))}
    fields.update(ids)
    fields["text_config"].update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
                                 eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    config_class, model_class = (
        (LlavaOnevision15Config, LlavaOnevision15ForConditionalGeneration) if llava_onevision1_5
        else (Qwen2VLConfig, Qwen2VLForConditionalGeneration) if qwen2_vl
        else (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration))
    return write_plain_folder(folder, model_class(config_class(**fields)), processor)


def write_plain_folder(folder, model, processor) -> Path:
    """Save `model` and `processor` into `folder` laid out as a Hub checkpoint is: its processor files name the parent
    class (which loads them natively), not this package's."""
    from modeling_croc.convert.to_llava import name_parent_processor

    folder = Path(folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    name_parent_processor(folder, type(processor))
    return folder


def save_tiny_qwen2_vl(folder, seed: int = 0):
    """Write a random tiny plain Qwen2-VL folder laid out as a Hub checkpoint is (`save_tiny_qwen2_5_vl`)."""
    return save_tiny_qwen2_5_vl(folder, seed=seed, qwen2_vl=True)


def save_tiny_llava_onevision1_5(folder, seed: int = 0):
    """Write a random tiny plain LLaVA-OneVision-1.5 folder laid out as a Hub checkpoint is
    (`save_tiny_qwen2_5_vl`)."""
    return save_tiny_qwen2_5_vl(folder, seed=seed, llava_onevision1_5=True)


__all__ = ["QWEN_SLIDING_WINDOW", "QWEN_TOKENS", "QWEN_VISION_TOKENS", "TINY_LLAVA_ONEVISION1_5_VISION",
           "TINY_QWEN2_VL_VISION", "make_qwen_batch", "save_tiny_llava_onevision1_5", "save_tiny_qwen2_5_vl",
           "save_tiny_qwen2_vl", "tiny_croc_qwen2_5_vl_config", "tiny_llava_onevision1_5_fields",
           "tiny_qwen2_5_vl_fields", "tiny_qwen2_5_vl_processor", "tiny_qwen2_vl_fields", "write_plain_folder"]
