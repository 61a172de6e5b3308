"""Tiny Idefics3 Croc models and processors, built in code (nothing downloaded): SmolVLM's tiny towers, batches and
tokens (`croc_testing.smolvlm`: SmolVLM is built from Idefics3, and its token layout is Idefics3's), on Idefics3's
config, model and processor classes, the tokenizer opening conversations with Llama 3's BOS as Idefics3-8B-Llama3's
does."""

from __future__ import annotations

from typing import Any

from modeling_croc import CrocIdefics3Config

from .smolvlm import (
    SMOLVLM_MAX_GRID,
    SMOLVLM_VIEW_SIZE,
    save_tiny_smolvlm,
    smolvlm_bpe_tokenizer,
    tiny_croc_smolvlm_config,
)

# Llama 3's BOS, which Idefics3-8B-Llama3's chat template writes first (the `idefics3` template's system text).
IDEFICS3_BOS = "<|begin_of_text|>"


def idefics3_chat_template() -> str:
    """Idefics3-8B-Llama3's chat template as its Hub `processor_config.json` holds it (read through a stored copy;
    transformers ships none): transformers' SmolVLM default (`processing_smolvlm.DEFAULT_CHAT_TEMPLATE`) with
    `<|begin_of_text|>` where SmolVLM opens with `<|im_start|>`; SmolVLM's string-content and video branches render
    nothing for the list-of-parts image and text messages Idefics3's template takes."""
    from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE

    return DEFAULT_CHAT_TEMPLATE.replace("<|im_start|>", IDEFICS3_BOS)


def tiny_croc_idefics3_config(text: str = "llama", **croc_fields: Any) -> CrocIdefics3Config:
    """A tiny `CrocIdefics3Config` of `tiny_croc_smolvlm_config`'s fields (`text`, `croc_fields` as there)."""
    return tiny_croc_smolvlm_config(text, config_class=CrocIdefics3Config, **croc_fields)


def tiny_idefics3_processor():
    """A `CrocIdefics3Processor` available offline: `smolvlm_bpe_tokenizer` with `<|begin_of_text|>` its BOS,
    Idefics3's PIL image processor splitting images of up to `SMOLVLM_MAX_GRID * SMOLVLM_VIEW_SIZE` px into
    `SMOLVLM_VIEW_SIZE`-px tiles plus the global view, 4 placeholders a view (the tiny tower's), and the checkpoint's
    chat template (`idefics3_chat_template`)."""
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    from modeling_croc.processing_croc_idefics3 import CrocIdefics3Processor

    tokenizer = smolvlm_bpe_tokenizer()
    tokenizer.add_special_tokens({"bos_token": IDEFICS3_BOS})
    image_processor = Idefics3ImageProcessorPil(size={"longest_edge": SMOLVLM_MAX_GRID * SMOLVLM_VIEW_SIZE},
                                                max_image_size={"longest_edge": SMOLVLM_VIEW_SIZE})
    return CrocIdefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                 image_seq_len=tiny_croc_idefics3_config().view_tokens(),
                                 chat_template=idefics3_chat_template())


def save_tiny_idefics3(folder, seed: int = 0):
    """Write a random tiny plain Idefics3 folder (`Idefics3ForConditionalGeneration` and the files of an
    `Idefics3Processor` with `tiny_idefics3_processor`'s parts, naming transformers' class), laid out as a Hub
    checkpoint is (`save_tiny_smolvlm` on Idefics3's classes)."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    return save_tiny_smolvlm(folder, seed=seed, processor=tiny_idefics3_processor(),
                             plain_config_class=Idefics3Config, plain_model_class=Idefics3ForConditionalGeneration)


__all__ = ["IDEFICS3_BOS", "idefics3_chat_template", "save_tiny_idefics3", "tiny_croc_idefics3_config",
           "tiny_idefics3_processor"]
