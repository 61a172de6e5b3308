"""Tiny Mistral 3 Croc models and batches, built in code (nothing downloaded): a 2-block Pixtral tower of 4-px
patches (8-px merged windows), a 2-layer Mistral language model, and batches in Pixtral's token layout."""

from __future__ import annotations

from typing import Any

import torch

from modeling_croc import CrocMistral3Config

from .backbones import SLIDING_WINDOW, text_config
from .batches import left_padded

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
    input_ids, attention_mask, labels = left_padded(bodies, MISTRAL3_TOKENS["pad"])
    height, width = map(max, zip(*sizes))
    pixel_values = torch.zeros(len(sizes), 3, height, width)
    for index, (h, w) in enumerate(sizes):
        pixel_values[index, :, :h, :w] = torch.randn(3, h, w, generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "pixel_values": pixel_values,
            "image_sizes": torch.tensor(sizes, dtype=torch.long)}


# Mistral's control tokens the tiny tokenizer holds (`mistral3_bpe_tokenizer`), as the Tekken tokenizers of
# Mistral-Small-3.1 name them.
MISTRAL3_SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "[INST]", "[/INST]", "[IMG]", "[IMG_BREAK]", "[IMG_END]",
                           "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]")
# The tiny folder's largest image side in pixels (`PixtralImageProcessorPil`'s `size["longest_edge"]`).
MISTRAL3_LONGEST_EDGE = 32


def mistral3_bpe_tokenizer():
    """A Mistral-style tokenizer available offline: byte-level BPE (trained here, in milliseconds, on the text of
    `croc_testing.tiny.chatml_bpe_tokenizer`) with Mistral's control tokens (`MISTRAL3_SPECIAL_TOKENS`), BOS `<s>`
    added in front of every text (as Mistral's tokenizers do), EOS `</s>`, pad `<pad>`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [
        "You are a helpful assistant. Please generate detailed descriptions of the given image.",
        "A red square on grey. Two blue circles. The picture shows a small cat sitting on a wooden table.",
        "What is in the picture? What colour is it? And the shape? Name a prime number. Seven. Eleven. Yes.",
    ] * 20
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=list(MISTRAL3_SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(corpus, trainer)
    bos = backend.token_to_id("<s>")
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", bos)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", pad_token="<pad>",
                                        additional_special_tokens=list(MISTRAL3_SPECIAL_TOKENS[4:]))
    tokenizer.model_max_length = 2048
    return tokenizer


def tiny_mistral3_processor():
    """A `CrocMistral3Processor` available offline: `mistral3_bpe_tokenizer`, Pixtral's PIL image processor (images
    up to `MISTRAL3_LONGEST_EDGE` px, resized to 8-px merged windows) for the tiny tower's 4-px patches merged 2 x 2,
    the `mistral3` chat template."""
    from transformers.models.pixtral.image_processing_pil_pixtral import PixtralImageProcessorPil

    from modeling_croc import get_template
    from modeling_croc.processing_croc_mistral3 import CrocMistral3Processor

    tokenizer = mistral3_bpe_tokenizer()
    config = tiny_croc_mistral3_config()
    return CrocMistral3Processor(
        image_processor=PixtralImageProcessorPil(size={"longest_edge": MISTRAL3_LONGEST_EDGE}),
        tokenizer=tokenizer, patch_size=config.vision_config.patch_size, spatial_merge_size=config.spatial_merge_size,
        chat_template=get_template("mistral3").chat_template(tokenizer.eos_token, "[IMG]"))


def save_tiny_mistral3(folder, seed: int = 0):
    """Write a random tiny plain Mistral 3 folder (`Mistral3ForConditionalGeneration` with
    `tiny_croc_mistral3_config`'s towers, global layers as Mistral-Small-3.1's, and the files of a `PixtralProcessor`
    with `tiny_mistral3_processor`'s parts, naming that class), laid out as a Hub checkpoint is: what a user starts
    Croc's stage 1.5 from."""
    from pathlib import Path

    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    from modeling_croc.convert.to_llava import name_parent_processor

    folder = Path(folder)
    processor = tiny_mistral3_processor()
    tokenizer = processor.tokenizer
    croc = tiny_croc_mistral3_config(sliding=False)
    text = text_config("mistral", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    text.update(head_dim=8, sliding_window=None, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id)
    config = Mistral3Config(text_config=text, vision_config=croc.vision_config.to_dict(),
                            image_token_index=processor.image_token_id, spatial_merge_size=croc.spatial_merge_size)
    torch.manual_seed(seed)
    Mistral3ForConditionalGeneration(config).save_pretrained(folder)
    # The Hub's image processor files hold the tower's patch size; the processor merges it.
    processor.image_processor.patch_size = {"height": processor.patch_size, "width": processor.patch_size}
    processor.save_pretrained(folder)
    # A Hub folder's processor files name the parent class (which loads them natively), not this package's.
    name_parent_processor(folder, type(processor))
    return folder


__all__ = ["MISTRAL3_LONGEST_EDGE", "MISTRAL3_SIZES", "MISTRAL3_SPECIAL_TOKENS", "MISTRAL3_TOKENS",
           "make_mistral3_batch", "mistral3_bpe_tokenizer", "pixtral_image_tokens", "save_tiny_mistral3",
           "tiny_croc_mistral3_config", "tiny_mistral3_processor"]
