"""Random per-image choice of the visual tokens that stage 1.5 replaces with prompt-pool tokens (a token-level draw,
not to be confused with the attention mask of `attention_mask.py`)."""

from __future__ import annotations

import torch


def draw_replaced_positions(
    num_images: int,
    num_tokens: int,
    num_masked: int | torch.Tensor,
    device: torch.device,
    generator: torch.Generator | None = None,
    token_counts: torch.Tensor | None = None,
    draw_order: torch.LongTensor | None = None,
) -> torch.BoolTensor:
    """Choose `num_masked` of an image's tokens uniformly at random, independently for every image.

    Args:
        num_images: number of images (rows of the result).
        num_tokens: visual tokens per image T, or the longest image's count when `token_counts` is given.
        num_masked: tokens to mask per image M (0 <= M <= T), or a `(num_images,)` long tensor of per-image counts.
        device: device of the returned mask.
        generator: source of randomness. Callers that need reproducible, per-rank, per-step draws pass a seeded
            generator (the trainer does); `None` uses torch's global RNG on `device`.
        token_counts: `(num_images,)` long, each image's own token count when images differ (AnyRes); its tokens
            are the first `token_counts[i]` of its row and the rest is padding, which is never chosen.
        draw_order: `(num_images,)` a permutation: image i takes the `draw_order[i]`-th row of the random draw, so a
            batch whose images were reordered (packing) gets the masks of its arrival order.

    Returns:
        `(num_images, num_tokens)` bool tensor with exactly `num_masked[i]` True values in row i, all among its
        first `token_counts[i]` positions.
    """
    draw_device = generator.device if generator is not None else device
    if draw_order is not None:
        draw_order = draw_order.to(draw_device)
        if not torch.equal(draw_order.sort().values, torch.arange(num_images, device=draw_device)):
            raise ValueError(f"draw_order must be a permutation of range({num_images}), got {draw_order.tolist()}")
    if token_counts is None and not isinstance(num_masked, torch.Tensor):
        if not 0 <= num_masked <= num_tokens:
            raise ValueError(f"cannot mask {num_masked} of {num_tokens} tokens")
        scores = torch.rand(num_images, num_tokens, generator=generator, device=draw_device)
        if draw_order is not None:
            scores = scores[draw_order]
        # The M smallest of T i.i.d. uniforms are a uniformly random M-subset: one vectorised topk, no loop.
        chosen = scores.topk(num_masked, dim=1, largest=False).indices
        mask = torch.zeros(num_images, num_tokens, dtype=torch.bool, device=draw_device)
        mask.scatter_(1, chosen, True)
        return mask.to(device)
    counts = torch.full((num_images,), num_tokens) if token_counts is None else token_counts.to("cpu")
    masked = torch.as_tensor(num_masked).expand(num_images).to("cpu")
    if bool((masked < 0).any() or (masked > counts).any() or (counts > num_tokens).any()):
        raise ValueError(f"cannot mask {masked.tolist()} of {counts.tolist()} tokens (at most {num_tokens} per image)")
    # One uniform per real token, the images' draws back to back in draw (arrival) order: an image's draw starts
    # after the tokens of the images before it, never after their padding, so the stream a batch consumes is its
    # visual-token count (what the trainer's draw offsets skip) and with equal counts this is `rand(num_images, T)`.
    order = torch.arange(num_images) if draw_order is None else draw_order.to("cpu")
    arrival_counts = torch.empty_like(counts)
    arrival_counts[order] = counts
    starts = (torch.cumsum(arrival_counts, 0) - arrival_counts)[order]
    uniforms = torch.rand(int(counts.sum()), generator=generator, device=draw_device)
    own = torch.arange(num_tokens)[None, :] < counts[:, None]
    index = (starts[:, None] + torch.arange(num_tokens)[None, :])[own].to(draw_device)
    # Padding scores above every uniform draw, so it ranks after all real tokens; the M_i smallest scores of row i
    # are then the same uniformly random subset `topk` picks, with a different M per row.
    scores = torch.full((num_images, num_tokens), 2.0, device=draw_device)
    scores[own.to(draw_device)] = uniforms[index]
    ranks = scores.argsort(dim=1).argsort(dim=1)
    return (ranks < masked.to(draw_device)[:, None]).to(device)
