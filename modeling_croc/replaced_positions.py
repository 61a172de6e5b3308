"""Random per-image choice of the visual tokens that stage 1.5 replaces with prompt-pool tokens (a token-level draw,
not to be confused with the attention mask of `attention_mask.py`)."""

from __future__ import annotations

import torch


def draw_replaced_positions(
    num_images: int,
    num_tokens: int,
    num_masked: int,
    device: torch.device,
    generator: torch.Generator | None = None,
    draw_order: torch.LongTensor | None = None,
) -> torch.BoolTensor:
    """Choose `num_masked` of `num_tokens` positions uniformly at random, independently for every image.

    Args:
        num_images: number of images (rows of the result).
        num_tokens: visual tokens per image T.
        num_masked: tokens to mask per image M (0 <= M <= T).
        device: device of the returned mask.
        generator: source of randomness. Callers that need reproducible, per-rank, per-step draws pass a seeded
            generator (the trainer does); `None` uses torch's global RNG on `device`.

    Returns:
        `(num_images, num_tokens)` bool tensor with exactly `num_masked` True values per row.
    """
    if not 0 <= num_masked <= num_tokens:
        raise ValueError(f"cannot mask {num_masked} of {num_tokens} tokens")
    draw_device = generator.device if generator is not None else device
    scores = torch.rand(num_images, num_tokens, generator=generator, device=draw_device)
    if draw_order is not None:
        draw_order = draw_order.to(draw_device)
        if not torch.equal(draw_order.sort().values, torch.arange(num_images, device=draw_device)):
            raise ValueError(f"draw_order must be a permutation of range({num_images}), got {draw_order.tolist()}")
        scores = scores[draw_order]
    # The M smallest of T i.i.d. uniforms are a uniformly random M-subset: one vectorised topk, no loop.
    chosen = scores.topk(num_masked, dim=1, largest=False).indices
    mask = torch.zeros(num_images, num_tokens, dtype=torch.bool, device=draw_device)
    mask.scatter_(1, chosen, True)
    return mask.to(device)
