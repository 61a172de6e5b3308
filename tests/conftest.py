"""Shared fixtures: tiny Croc/Llava models built in code, and the offline SentencePiece tokenizer."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import modeling_croc  # noqa: E402,F401  (registers the Auto classes)
from modeling_croc.tiny import llama_sentencepiece_tokenizer, tiny_croc_config  # noqa: E402


@pytest.fixture
def make_config():
    """Factory for tiny Croc configs (vocab 128, 16 visual tokens per 56-px image) with eager attention."""

    def factory(**fields):
        fields.setdefault("attn_implementation", "eager")
        return tiny_croc_config(**fields)

    return factory


@pytest.fixture(scope="session")
def sp_tokenizer():
    return llama_sentencepiece_tokenizer()
