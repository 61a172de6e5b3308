"""Croc on Idefics3: an `Idefics3Config` (a SigLIP tower on fixed-size views, a pixel-shuffle connector, a Llama
language model) with the Croc fields of `CrocFieldsMixin`; what it declares beyond them is SmolVLM's
(`CrocSmolVLMConfigMixin`: SmolVLM is built from Idefics3, and its images are split and counted as Idefics3's)."""

from huggingface_hub.dataclasses import strict
from transformers import Idefics3Config

from .configuration_croc import CrocFieldsMixin
from .configuration_croc_smolvlm import CrocSmolVLMConfigMixin


@strict
class CrocIdefics3Config(CrocSmolVLMConfigMixin, CrocFieldsMixin, Idefics3Config):
    r"""
    Configuration of a Croc model on `Idefics3ForConditionalGeneration` (Idefics3-8B-Llama3, and the first SmolVLM
    releases, whose Hub folders are `idefics3` ones): the Idefics3 fields (vision tower, `scale_factor`, the image
    token) plus the Croc fields of `CrocFieldsMixin`. Images are counted as SmolVLM's (`CrocSmolVLMConfig`): a grid of
    tiles plus a global view, `view_tokens()` placeholders a view, `(rows * cols + 1) * view_tokens()` an image.
    """

    model_type = "croc_idefics3"


__all__ = ["CrocIdefics3Config"]
