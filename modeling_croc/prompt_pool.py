"""The learnable prompt-token pool T_p of Croc and the replacement of masked visual tokens by pool tokens."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .configuration_croc import CrocConfig
from .matching import assign_pool_tokens
from .profiling import croc_region
from .replaced_positions import draw_replaced_positions


class PromptedVisualTokens(NamedTuple):
    """Result of `CrocPromptPool.forward`. A NamedTuple, not a dataclass: DeepSpeed ZeRO-3 finds the output tensors
    of a module only in tuples, lists and dicts, and without them it does not re-gather the pool for the backward.

    Attributes:
        tokens: `(num_images, T, D)` visual tokens with the masked positions replaced by their pool tokens.
        replaced: `(num_images, T)` bool, True where a pool token replaced the visual token.
        pool_ids: `(num_images, M)` long, the pool row assigned to each replaced position, in row-major order of
            `replaced`; when images mask different counts, M is the largest and the rest of a row is -1.
    """

    tokens: torch.Tensor
    replaced: torch.BoolTensor
    pool_ids: torch.LongTensor


class CrocPromptPool(nn.Module):
    """A pool of `prompt_pool_size` learnable tokens of the LM width.

    The pool is an ordinary parameter of this module, so ZeRO-3 / FSDP shard it and gather it when `forward` runs.
    """

    def __init__(self, config: CrocConfig):
        super().__init__()
        self.config = config
        self.weight = nn.Parameter(torch.empty(config.prompt_pool_size, config.text_config.hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = 1.0 if self.config.prompt_pool_init == "normal" else self.config.text_config.initializer_range
        nn.init.normal_(self.weight, mean=0.0, std=std)

    @torch.no_grad()
    def calibrate(self, visual_tokens: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Redraw the pool with the per-feature mean and std of `visual_tokens` (`(..., D)`), so pool tokens live
        at the scale of the tokens they stand in for (the `visual_stats` initialisation)."""
        flat = visual_tokens.reshape(-1, visual_tokens.shape[-1]).float()
        mean, std = flat.mean(0), flat.std(0, unbiased=False)
        noise_device = generator.device if generator is not None else flat.device
        noise = torch.randn(self.weight.shape, generator=generator, device=noise_device).to(flat.device)
        self.weight.copy_(mean + std * noise)

    def forward(
        self,
        visual_tokens: torch.Tensor,
        generator: torch.Generator | None = None,
        token_counts: torch.LongTensor | None = None,
        image_rows: torch.LongTensor | None = None,
        draw_order: torch.LongTensor | None = None,
    ) -> PromptedVisualTokens:
        """Mask `mask_ratio` of every image's tokens at random and put the assigned pool tokens in their place.

        Args:
            visual_tokens: `(num_images, T, D)` projected visual tokens (may be empty along `num_images`); with
                `token_counts`, each image's tokens first and zero padding after them, T the longest image's count.
            generator: seeded generator for the random mask (see `draw_replaced_positions`).
            token_counts: `(num_images,)` long, each image's token count when images differ (AnyRes); None when
                every image has T tokens.
            image_rows: `(num_images,)` long, non-decreasing, the batch row of each image; with
                `matching_scope="row"` all masked tokens of a row form one Hungarian problem (ViCToR).
            draw_order: `(num_images,)` which draw of the stream each image takes (packed batches; see
                `draw_replaced_positions`).

        The assignment is computed without gradient on detached tokens; the chosen pool rows enter the output
        through indexing, so they receive gradient from everything downstream.
        """
        num_images, num_tokens, hidden = visual_tokens.shape
        by_row = self.config.matching_scope == "row" and image_rows is not None
        if num_images == 0 or (token_counts is None and not by_row):
            return self._replace_uniform(visual_tokens, generator, draw_order)
        device = visual_tokens.device
        counts = (torch.full((num_images,), num_tokens, dtype=torch.long, device=device) if token_counts is None
                  else token_counts.to(device))
        masked = self.config.num_masked_tokens_per_image(counts)
        with croc_region("masking"):
            replaced = draw_replaced_positions(num_images, num_tokens, masked, device, generator, token_counts=counts,
                                               draw_order=draw_order)
        # The replaced tokens in row-major order: image by image, each in token order.
        flat_queries = visual_tokens.detach()[replaced]
        image_of = torch.repeat_interleave(torch.arange(num_images, device=device), masked)
        if by_row:
            # Consecutive group ids (rows without images take no group), one Hungarian problem per row.
            _, image_groups = torch.unique_consecutive(image_rows.to(device), return_inverse=True)
        else:
            image_groups = torch.arange(num_images, device=device)
        query_groups = image_groups[image_of]
        group_sizes = torch.bincount(query_groups, minlength=int(image_groups.max()) + 1)
        position = _positions_within(query_groups, group_sizes)
        groups, width = group_sizes.numel(), int(group_sizes.max())
        queries = flat_queries.new_zeros(groups, width, hidden)
        queries[query_groups, position] = flat_queries
        valid = torch.zeros(groups, width, dtype=torch.bool, device=device)
        valid[query_groups, position] = True
        flat_ids = assign_pool_tokens(queries, self.weight.detach(), self.config.token_matching, valid)[
            query_groups, position]
        tokens = visual_tokens.masked_scatter(replaced.unsqueeze(-1), self.weight[flat_ids].to(visual_tokens.dtype))
        pool_ids = torch.full((num_images, int(masked.max())), -1, dtype=torch.long, device=device)
        pool_ids[image_of, _positions_within(image_of, masked)] = flat_ids
        return PromptedVisualTokens(tokens=tokens, replaced=replaced, pool_ids=pool_ids)

    def _replace_uniform(self, visual_tokens: torch.Tensor, generator: torch.Generator | None,
                         draw_order: torch.LongTensor | None = None) -> PromptedVisualTokens:
        """Every image has the same token count and is its own matching group: no padding anywhere."""
        num_images, num_tokens, hidden = visual_tokens.shape
        num_masked = self.config.num_masked_tokens(num_tokens)
        with croc_region("masking"):
            replaced = draw_replaced_positions(
                num_images, num_tokens, num_masked, visual_tokens.device, generator, draw_order=draw_order
            )
        queries = visual_tokens.detach()[replaced].view(num_images, num_masked, hidden)
        pool_ids = assign_pool_tokens(queries, self.weight.detach(), self.config.token_matching)
        chosen = self.weight[pool_ids.reshape(-1)].to(visual_tokens.dtype)
        tokens = visual_tokens.masked_scatter(replaced.unsqueeze(-1), chosen)
        return PromptedVisualTokens(tokens=tokens, replaced=replaced, pool_ids=pool_ids)


def _positions_within(owners: torch.LongTensor, sizes: torch.LongTensor) -> torch.LongTensor:
    """For items sorted by owner (`owners`, non-decreasing), each item's index among its owner's items."""
    starts = torch.cumsum(sizes, dim=0) - sizes
    return torch.arange(owners.numel(), device=owners.device) - starts[owners]
