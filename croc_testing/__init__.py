"""Fixtures of the repository's tools: tiny Croc models built in code, an offline Llama SentencePiece tokenizer and
random LLaVA-layout batches, for the test suite, the CPU demo and the benchmarks.

This package is not installed with `croc-transformers` and nothing under `modeling_croc`, `trainer` or
`data_recipes` imports it. The offline tokenizer needs the `test` extra (`mistral-common` ships its model file).
"""

from .batches import PAD_TOKEN_ID, make_batch
from .tiny import (
    LLAVA_VOCAB,
    TINY_SIZES,
    llama_sentencepiece_tokenizer,
    save_tiny_croc,
    tiny_croc_config,
    tiny_croc_processor,
)

__all__ = [
    "LLAVA_VOCAB",
    "PAD_TOKEN_ID",
    "TINY_SIZES",
    "llama_sentencepiece_tokenizer",
    "make_batch",
    "save_tiny_croc",
    "tiny_croc_config",
    "tiny_croc_processor",
]
