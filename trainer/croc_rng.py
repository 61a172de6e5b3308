"""Reproducible random token masks for stage 1.5, independent of how a step's batch is split.

The model draws an image's mask from `croc_generator` as T uniforms (one per visual token, images in batch order,
`modeling_croc.replaced_positions.draw_replaced_positions`). The trainer gives every micro-batch a CPU generator seeded from
`(args.seed, global_step)` only, then skips the uniforms of the images that come before this micro-batch in the
step's global order (micro-step major, then process: the order in which accelerate deals batches to processes).
The k-th image of an optimiser step therefore gets the same mask whether the step runs as one batch, as several
accumulation micro-batches or on several processes, every image of the step still gets its own draw, and a resumed
run draws exactly what the uninterrupted run drew (the seed depends on the restored global step only).

CPU generators make the draws identical across devices and split-invariant: consecutive `torch.rand` calls on
the CPU (mt19937) generator continue one stream, so drawing a+b numbers equals drawing a then b. The trainer tests
guard this (accumulation and two-process equivalence).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

# Uniforms are skipped in chunks so a large offset never allocates one big tensor.
_SKIP_CHUNK = 1 << 20


@dataclass(frozen=True)
class MicroBatchDraws:
    """What one micro-batch needs to draw its masks and normalise its VTR loss.

    Attributes:
        draw_offset: uniforms drawn for the images before this micro-batch in the step's global order.
        num_vtr_items: VTR target tokens in the whole optimiser step (all micro-batches; all processes when the
            Trainer averages tokens across devices), the counterpart of `num_items_in_batch`.
        step_vtr_items: VTR target tokens in the whole optimiser step on every process, either way: whether the step
            reconstructs anything (the logged VTR terms average such steps, `trainer.metrics`).
    """

    draw_offset: int
    num_vtr_items: torch.Tensor
    step_vtr_items: torch.Tensor | None = None


def step_seed(seed: int, global_step: int) -> int:
    """A 63-bit seed for the masks of optimiser step `global_step` of a run seeded with `seed`."""
    digest = hashlib.sha256(f"croc-token-mask:{seed}:{global_step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def mask_generator(seed: int, global_step: int, draw_offset: int) -> torch.Generator:
    """The CPU generator for a micro-batch whose images start `draw_offset` uniforms into the step's stream."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(step_seed(seed, global_step))
    remaining = draw_offset
    while remaining > 0:
        chunk = min(remaining, _SKIP_CHUNK)
        torch.rand(chunk, generator=generator)
        remaining -= chunk
    return generator


def step_draw_offsets(counts: torch.Tensor, process_index: int) -> list[int]:
    """Offsets of this process's micro-batches in the step's global draw order.

    Args:
        counts: `(num_processes, num_micro_batches)` visual tokens (= uniforms drawn) of every micro-batch of the
            step on every process.
        process_index: this process's rank.

    Returns:
        One offset per micro-batch of this process.
    """
    num_processes, num_micro = counts.shape
    # Global order: micro-step m of process r is batch m * num_processes + r of the step.
    ordered = counts.t().reshape(-1).to(torch.long)
    before = torch.cumsum(ordered, 0) - ordered
    return [int(before[m * num_processes + process_index]) for m in range(num_micro)]
