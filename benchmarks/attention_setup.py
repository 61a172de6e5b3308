"""What the attention benchmark measures on: the model-shape and run-size profiles, the LLaVA-1.5 token
layout and the project's own mask path (`ours_mask`), shared by the questions, the references and the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import LlamaConfig

from modeling_croc.attention_mask import bidirectional_block_ids, build_mixed_attention_mask
from modeling_croc.constants import IGNORE_INDEX

# LLaVA-1.5 `vicuna_v1`: the system prompt and "USER: " take about 35 tokens before the image; "\n{question}
# ASSISTANT:" about a dozen after it, before the first supervised (answer) token.
IMAGE_START = 35
PROMPT_TAIL = 12


@dataclass(frozen=True)
class Profile:
    """Model shape and run sizes for one device/size choice."""

    name: str
    hidden: int
    layers: int
    heads: int
    intermediate: int
    lengths: tuple[int, ...]
    image_tokens: int
    dtype: str
    reps: dict[int, int]  # timed repetitions per variant, by sequence length
    eager_max_len: int  # longer eager runs are skipped (memory/time of the L x L attention probabilities)
    element_loop_max_len: int  # the per-element loop reference is timed only up to this length
    threads: int  # torch intra-op threads for the timed runs


def select_profile(device: torch.device, quick: bool, tiny: bool, threads: int | None) -> Profile:
    """The CPU profile keeps the full run to about 3 minutes on a shared 2-core machine; the CUDA one is 1B-class.

    CPU runs default to one thread: on this shared 2-vCPU machine a 2-thread step was measured 20-50x slower
    and 5x more spread than a 1-thread one (OpenMP barriers stall whenever the other vCPU is busy elsewhere),
    which would drown the ratios this benchmark exists for.
    """
    cpu_threads = threads or 1
    if tiny:
        # For the smoke test: 2 layers of width 64, a 64-token image so that it fits 256 tokens.
        reps = {256: 2, 512: 2}
        return Profile("tiny", 64, 2, 2, 128, (256, 512), 64, "float32", reps, 512, 512, cpu_threads)
    if device.type == "cuda":
        # TinyLlama-1.1B shape (22 layers, width 2048, 32 heads of 128, 4 KV heads), bf16.
        lengths = (1024, 2048) if quick else (1024, 2048, 4096, 8192)
        reps = {n: 3 if quick else 10 for n in lengths}
        # Eager keeps 32 heads x L x L probabilities per layer for backward: ~1 GB/layer in bf16 at 4K.
        return Profile(
            "cuda-1b",
            2048,
            22,
            32,
            5632,
            lengths,
            576,
            "bfloat16",
            reps,
            2048,
            2048,
            threads or torch.get_num_threads(),
        )
    lengths = (1024, 2048) if quick else (1024, 2048, 4096, 8192)
    # More repetitions where they are cheap: at 1K one round of the three variants takes ~0.3 s.
    reps = {1024: 9, 2048: 5, 4096: 3, 8192: 3} if not quick else {1024: 5, 2048: 3}
    # Width 128 in 2 heads of 64 (two heads exercise the mask's broadcast over heads), one layer: every layer
    # pays the same attention cost, so the ratios do not depend on the depth except through the one mask build
    # per step (reported apart: `mixed_build_ms`, `ratio_vs_default_excl_build`). Two layers took 3.5 min here.
    # Eager at 8K is skipped: 2 heads x 8K x 8K float32 scores and probabilities per layer kept for backward
    # (several GB), and its steps alone would take about the whole CPU time budget.
    # The per-element loop reference takes 3-5 s per call whatever the length (its work is block size squared):
    # it is timed at 1K only.
    return Profile("cpu", 128, 1, 2, 344, lengths, 576, "float32", reps, 4096, 1024, cpu_threads)


def llava_layout(
    length: int, image_tokens: int, image_start: int = IMAGE_START, device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Batch-1 LLaVA-style row: text, one image run, a short instruction, then supervised answer tokens."""
    first_supervised = image_start + image_tokens + PROMPT_TAIL
    if first_supervised >= length:
        raise ValueError(
            f"{length} tokens do not fit an image of {image_tokens} at {image_start} and an answer"
        )
    image_token_mask = torch.zeros(1, length, dtype=torch.bool, device=device)
    image_token_mask[:, image_start : image_start + image_tokens] = True
    labels = torch.full((1, length), IGNORE_INDEX, dtype=torch.long, device=device)
    labels[:, first_supervised:] = 1
    attention_mask = torch.ones(1, length, dtype=torch.long, device=device)
    return {"image_token_mask": image_token_mask, "labels": labels, "attention_mask": attention_mask}


def mask_config(backend: str, hidden: int = 64, heads: int = 2) -> LlamaConfig:
    """A config that only tells `create_causal_mask` which format to build."""
    config = LlamaConfig(hidden_size=hidden, num_attention_heads=heads, num_hidden_layers=1, vocab_size=16)
    config._attn_implementation = backend
    return config


def ours_mask(
    config: LlamaConfig, embeds: torch.Tensor, layout: dict[str, torch.Tensor], span: str
) -> torch.Tensor | Any:
    """The project's path: block ids, then `create_causal_mask(block_sequence_ids=...)`."""
    block_ids = bidirectional_block_ids(
        span, layout["image_token_mask"], layout["labels"], layout["attention_mask"]
    )
    return build_mixed_attention_mask(config, embeds, layout["attention_mask"], block_ids)
