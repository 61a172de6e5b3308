"""Small Croc models built in code: for tests, the CPU demo and benchmarks (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from modeling_croc import CrocConfig, CrocForConditionalGeneration, CrocProcessor
from modeling_croc.convert.common import add_llava_tokens as add_llava_tokens_to

# The LLaVA-1.5 vocabulary layout: Vicuna's 32000 pieces + <image> (32000) + <pad> (32001).
LLAVA_VOCAB = {"vocab_size": 32002, "image_token_id": 32000, "pad_token_id": 32001}
# The tiny model of the cpu_tiny training configs and the trainer tests.
TINY_SIZES = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "vision_hidden_size": 24, "vision_layers": 2}
# flex_attention's Triton kernels need a head dimension of at least 16 (TINY_SIZES has 8 and 6): the CUDA tests
# compare it with sdpa on this size.
FLEX_SIZES = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "vision_hidden_size": 64, "vision_layers": 2,
              "vision_heads": 4}
# A 1B-class model for GPU benchmarks: the TinyLlama-1.1B language model (22 layers of width 2048, 32 heads, 4 KV
# heads, MLP 5632) behind CLIP ViT-L/14 at 336 px (24 layers of width 1024, 16 heads, MLP 4096): LLaVA-1.5's image
# geometry (576 visual tokens) and vocabulary, random weights.
ONE_B_SIZES = {"hidden_size": 2048, "num_layers": 22, "num_heads": 32, "num_key_value_heads": 4,
               "intermediate_size": 5632, "vision_hidden_size": 1024, "vision_layers": 24, "vision_heads": 16,
               "vision_intermediate_size": 4096, "image_size": 336, "patch_size": 14}


def tiny_croc_config(
    vocab_size: int = 128,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    vision_hidden_size: int = 24,
    vision_layers: int = 2,
    image_size: int = 56,
    patch_size: int = 14,
    image_token_id: int | None = None,
    pad_token_id: int | None = None,
    num_key_value_heads: int | None = None,
    intermediate_size: int | None = None,
    vision_heads: int = 4,
    vision_intermediate_size: int | None = None,
    **croc_fields: Any,
) -> CrocConfig:
    """A randomly initialisable Croc config: a CLIP-style vision tower and a Llama-style LM.

    The image token and the pad token are the last two vocabulary entries unless given (LLaVA-1.5 appends
    `<image>` and `<pad>` to the Vicuna vocabulary the same way). Unset, the key-value heads equal the heads and
    the MLP widths are twice the hidden widths. `croc_fields` are CrocConfig fields.
    """
    image_token_id = vocab_size - 2 if image_token_id is None else image_token_id
    pad_token_id = vocab_size - 1 if pad_token_id is None else pad_token_id
    text_config = {
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size or 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_key_value_heads or num_heads,
        "max_position_embeddings": 4096,
        "pad_token_id": pad_token_id,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    vision_config = {
        "model_type": "clip_vision_model",
        "hidden_size": vision_hidden_size,
        "intermediate_size": vision_intermediate_size or 2 * vision_hidden_size,
        "num_hidden_layers": vision_layers,
        "num_attention_heads": vision_heads,
        "image_size": image_size,
        "patch_size": patch_size,
        "projection_dim": vision_hidden_size,
    }
    croc_fields.setdefault("prompt_pool_size", 64)
    return CrocConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_index=image_token_id,
        **croc_fields,
    )


def llama_sentencepiece_tokenizer(add_llava_tokens: bool = True):
    """A real Llama-family SentencePiece tokenizer available offline: the 32K-piece Llama/Mistral v1 model that the
    `mistral-common` package ships. With `add_llava_tokens`, `<image>` (32000) and `<pad>` (32001) are appended as
    LLaVA-1.5 does for Vicuna."""
    import importlib.resources
    import shutil
    import tempfile

    from transformers import LlamaTokenizer

    source = importlib.resources.files("mistral_common") / "data" / "tokenizer.model.v1"
    with tempfile.TemporaryDirectory() as folder, importlib.resources.as_file(source) as model_file:
        shutil.copy(model_file, f"{folder}/tokenizer.model")
        tokenizer = LlamaTokenizer.from_pretrained(folder, legacy=False, add_bos_token=True, add_eos_token=False)
    if add_llava_tokens:
        add_llava_tokens_to(tokenizer)
    tokenizer.model_max_length = 2048
    return tokenizer


def tiny_croc_processor(image_size: int = 56, patch_size: int = 14, tokenizer=None):
    """A `CrocProcessor` for `tiny_croc_config(vocab_size=32002, image_token_id=32000, pad_token_id=32001)`: CLIP
    preprocessing (PIL backend) at `image_size` and the SentencePiece tokenizer above; `<image>` expands to
    `(image_size // patch_size) ** 2` tokens (576 at 336/14)."""
    from transformers import CLIPImageProcessorPil

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return CrocProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer if tokenizer is not None else llama_sentencepiece_tokenizer(),
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, which the "default" strategy drops again
    )


def save_tiny_parts(root: str | Path) -> dict[str, Path]:
    """A tiny 1-layer CLIP tower (with its image processor) and a tiny Llama (with the offline SentencePiece
    tokenizer) saved under `root` as `clip/` and `llm/`: the two sources of a stage 1 or of `convert from-parts`."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    clip, llm = Path(root) / "clip", Path(root) / "llm"
    CLIPVisionModel(CLIPVisionConfig(hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4,
                                     image_size=56, patch_size=14)).save_pretrained(clip)
    tiny_croc_processor().image_processor.save_pretrained(clip)
    LlamaForCausalLM(LlamaConfig(vocab_size=32000, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=4)).save_pretrained(llm)
    llama_sentencepiece_tokenizer(add_llava_tokens=False).save_pretrained(llm)
    return {"clip": clip, "llm": llm}


def save_tiny_croc(folder: str | Path, seed: int = 0, image_size: int = 56, patch_size: int = 14,
                   **sizes: Any) -> Path:
    """Write a random-init tiny Croc model with the LLaVA vocabulary and its offline processor to `folder`: the
    "stage 0" a cpu_tiny stage 1 starts from. `sizes` override `TINY_SIZES`; the weights depend on `seed` only."""
    folder = Path(folder)
    config = tiny_croc_config(**LLAVA_VOCAB, **{**TINY_SIZES, **sizes}, image_size=image_size, patch_size=patch_size)
    torch.manual_seed(seed)
    CrocForConditionalGeneration(config).save_pretrained(folder)
    tiny_croc_processor(image_size=image_size, patch_size=patch_size).save_pretrained(folder)
    return folder


# ChatML's special tokens, in the order Qwen2's tokenizer lists them.
CHATML_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def chatml_bpe_tokenizer(vocab_size: int = 400):
    """A Qwen-style tokenizer available offline: byte-level BPE (trained here, in milliseconds, on a fixed English
    text) with ChatML's special tokens, EOS `<|im_end|>`, pad `<|endoftext|>` and no BOS, as Qwen2.5-Instruct's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [
        "You are a helpful assistant. Please generate detailed descriptions of the given image.",
        "A red square on grey. Two blue circles. The picture shows a small cat sitting on a wooden table.",
        "What is in the picture? What colour is it? And the shape? Name a prime number. Seven. Eleven. Yes.",
    ] * 20
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(CHATML_SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        additional_special_tokens=["<|im_start|>"])
    tokenizer.model_max_length = 2048
    return tokenizer


# The tiny OneVision model's views: 28-px crops of 14-px patches (4 tokens a view), grids up to 2 x 2 views.
TINY_ONEVISION_PINPOINTS = [[28, 28], [28, 56], [56, 28], [56, 56]]


def tiny_croc_onevision_config(vocab_size: int, **croc_fields: Any):
    """A tiny Croc OneVision config: a Qwen2-style LM (biases, tied embeddings) and a SigLIP tower at 28 px."""
    from modeling_croc import CrocOnevisionConfig

    from .backbones import backbone_fields

    fields = backbone_fields("qwen2", "siglip", vocab_size=vocab_size)
    fields["vision_config"].update(image_size=28, patch_size=14)
    croc_fields.setdefault("prompt_pool_size", 64)
    return CrocOnevisionConfig(**fields, image_grid_pinpoints=TINY_ONEVISION_PINPOINTS, **croc_fields)


def save_tiny_croc_onevision(folder: str | Path, seed: int = 0) -> Path:
    """Write a random tiny OneVision Croc model with its processor (the Qwen-style ChatML tokenizer with `<image>`,
    OneVision's AnyRes image processor, the `qwen_1_5` chat template) to `folder`."""
    from transformers import LlavaOnevisionImageProcessorPil

    from modeling_croc import CrocOnevisionForConditionalGeneration, CrocOnevisionProcessor, get_template
    from modeling_croc.convert.common import add_llava_tokens

    folder = Path(folder)
    tokenizer = chatml_bpe_tokenizer()
    image_token_id, pad_token_id = add_llava_tokens(tokenizer)
    config = tiny_croc_onevision_config(vocab_size=len(tokenizer) + 48)
    config.image_token_index = image_token_id
    config.text_config.pad_token_id = pad_token_id
    torch.manual_seed(seed)
    CrocOnevisionForConditionalGeneration(config).save_pretrained(folder)
    CrocOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessorPil(size={"height": 28, "width": 28},
                                                        image_grid_pinpoints=TINY_ONEVISION_PINPOINTS),
        tokenizer=tokenizer,
        num_image_tokens=config.visual_tokens_per_image(),
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        chat_template=get_template("qwen_1_5").chat_template(tokenizer.eos_token),
        vision_aspect_ratio=config.vision_aspect_ratio,
    ).save_pretrained(folder)
    return folder
