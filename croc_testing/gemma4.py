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


# Gemma 4's special tokens, as its tokenizer names them: padding, end and start of text, unknown, the turn markers, the
# image block's begin / end and its placeholder, the video placeholder (`Gemma4Processor` adds it if missing) and the
# audio block's begin / end and placeholder (which `Gemma4Processor` reads from the tokenizer whether or not it has
# audio).
GEMMA4_SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<|turn>", "<turn|>", "<|image>", "<image|>",
                         "<|image|>", "<|video|>", "<|audio>", "<audio|>", "<|audio|>")
# The image processor of the tiny folder: 4x4-pixel patches pooled 2x2, at most 70 soft tokens an image (the smallest
# `max_soft_tokens` it accepts): a 56x56 data image becomes 64x64 pixels, 16x16 patches, 64 soft tokens.
GEMMA4_MAX_SOFT_TOKENS = 70


def gemma4_bpe_tokenizer(vocab_size: int = 300):
    """A Gemma-4-style tokenizer available offline (`croc_testing.gemma3.gemma_bpe_tokenizer`) with Gemma 4's special
    tokens (`GEMMA4_SPECIAL_TOKENS`, ids 0-12) and the image and audio tokens under the names `Gemma4Processor` reads
    (`boi_token`, `eoi_token`, `image_token`, `boa_token`, `eoa_token`, `audio_token`)."""
    from .gemma3 import gemma_bpe_tokenizer

    return gemma_bpe_tokenizer(GEMMA4_SPECIAL_TOKENS, {
        "boi_token": "<|image>", "eoi_token": "<image|>", "image_token": "<|image|>",
        "boa_token": "<|audio>", "eoa_token": "<audio|>", "audio_token": "<|audio|>"}, vocab_size)


def tiny_gemma4_processor():
    """A `CrocGemma4Processor` available offline: `gemma4_bpe_tokenizer`, Gemma 4's PIL image processor at the tiny
    tower's patches (4x4 pixels pooled 2x2, `GEMMA4_MAX_SOFT_TOKENS`), the `gemma4` chat template."""
    from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil

    from modeling_croc.conversation import get_template
    from modeling_croc.processing_croc_gemma4 import CrocGemma4Processor

    tokenizer = gemma4_bpe_tokenizer()
    image_processor = Gemma4ImageProcessorPil(patch_size=GEMMA4_PATCH_SIZE, pooling_kernel_size=GEMMA4_POOLING,
                                              max_soft_tokens=GEMMA4_MAX_SOFT_TOKENS)
    return CrocGemma4Processor(image_processor=image_processor, tokenizer=tokenizer,
                               chat_template=get_template("gemma4").chat_template(tokenizer.eos_token, "<|image|>"),
                               image_seq_length=GEMMA4_MAX_SOFT_TOKENS)


def save_tiny_gemma4(folder, seed: int = 0):
    """Write a random tiny plain Gemma 4 folder (`Gemma4ForConditionalGeneration` and the files of its processor with
    `tiny_gemma4_processor`'s parts), laid out as a Hub checkpoint is: what a user starts Croc's stage 1.5 from. Its
    vision tower's position table covers the longest side an image can have at `GEMMA4_MAX_SOFT_TOKENS` (a strip of
    70 x 1 soft tokens: 140 patches)."""
    from pathlib import Path

    from transformers import Gemma4Config, Gemma4ForConditionalGeneration

    from modeling_croc.convert.to_llava import name_parent_processor

    folder = Path(folder)
    processor = tiny_gemma4_processor()
    tokenizer = processor.tokenizer
    fields = tiny_gemma4_fields()
    fields.update({name: tokenizer.convert_tokens_to_ids(token) for name, token in (
        ("image_token_id", "<|image|>"), ("boi_token_id", "<|image>"), ("eoi_token_id", "<image|>"),
        ("video_token_id", "<|video|>"), ("audio_token_id", "<|audio|>"), ("boa_token_id", "<|audio>"),
        ("eoa_token_index", "<audio|>"))})
    fields["text_config"].update(vocab_size=len(tokenizer), vocab_size_per_layer_input=len(tokenizer),
                                 pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
    fields["vision_config"]["position_embedding_size"] = GEMMA4_MAX_SOFT_TOKENS * GEMMA4_POOLING
    torch.manual_seed(seed)
    Gemma4ForConditionalGeneration(Gemma4Config(**fields)).save_pretrained(folder)
    processor.save_pretrained(folder)
    # A Hub folder's processor files name the parent class (which loads them natively), not this package's.
    name_parent_processor(folder, type(processor))
    return folder


__all__ = ["GEMMA4_GRIDS", "GEMMA4_IMAGES_PER_ROW", "GEMMA4_MAX_PATCHES", "GEMMA4_MAX_SOFT_TOKENS",
           "GEMMA4_SLIDING_WINDOW", "GEMMA4_SPECIAL_TOKENS", "GEMMA4_TOKENS", "gemma4_bpe_tokenizer",
           "gemma4_image_inputs", "make_gemma4_batch", "save_tiny_gemma4", "tiny_croc_gemma4_config",
           "tiny_gemma4_fields", "tiny_gemma4_processor"]
