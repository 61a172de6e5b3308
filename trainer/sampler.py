"""Modality-grouped, length-grouped sampling: every batch is all image rows or all text-only rows.

A batch mixing the two would send a partial image batch through the vision tower and pad text rows to the
length of image rows; LLaVA groups them the same way (`LengthGroupedSampler(group_by_modality=True)`), but its
leftover batch mixes modalities, which this sampler never does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class ModalityGroupedSampler(Sampler[int]):
    """Indices ordered so that each run of `batch_size` consecutive indices (one device batch) holds one modality.

    Args:
        lengths: per-row length estimates, > 0 for image rows and <= 0 for text-only rows
            (`CrocSupervisedDataset.modality_lengths`).
        batch_size: the per-device batch size.
        world_size: number of data-parallel processes. A step is `world_size` consecutive device batches (one per
            process, as the Trainer's dataloader shards them); all batches of a step share a modality, and a
            step's rows are spread over the processes so that their summed lengths are close.
        generator: the source of randomness; without one, a seed is drawn from torch's global generator at each
            iteration (deterministic after `torch.manual_seed`, as `transformers.set_seed` does).
        megabatch_mult: steps whose rows are sorted by length together. 1 (LLaVA's choice) keeps batches fully
            random; larger values put rows of similar length in a batch, which cuts padding.

    Each modality is shuffled, then padded with some of its own rows repeated up to a multiple of
    `world_size * batch_size` (like `DistributedSampler`), so no batch is short or mixed; the steps of both
    modalities are then shuffled together. ``len(sampler)`` counts the repeats.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        world_size: int = 1,
        generator: torch.Generator | None = None,
        megabatch_mult: int = 1,
    ) -> None:
        if batch_size < 1 or world_size < 1 or megabatch_mult < 1:
            raise ValueError("batch_size, world_size and megabatch_mult must be positive")
        self.lengths = torch.as_tensor(list(lengths), dtype=torch.long)
        self.batch_size = batch_size
        self.world_size = world_size
        self.generator = generator
        self.megabatch_mult = megabatch_mult
        step = batch_size * world_size
        # Row indices of each modality present: image rows, then text-only rows.
        self._groups = [
            torch.nonzero(mask).flatten() for mask in (self.lengths > 0, self.lengths <= 0) if mask.any()
        ]
        self._num_samples = sum(-(-len(group) // step) * step for group in self._groups)

    def __len__(self) -> int:
        return self._num_samples

    def __iter__(self) -> Iterator[int]:
        generator = self.generator
        if generator is None:
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
            generator = torch.Generator().manual_seed(seed)
        step = self.batch_size * self.world_size
        steps: list[list[int]] = []
        for group in self._groups:
            order = group[torch.randperm(len(group), generator=generator)]
            padded = -(-len(order) // step) * step
            order = order.repeat(-(-padded // len(order)))[:padded]
            megabatch = step * self.megabatch_mult
            for start in range(0, padded, megabatch):
                members = order[start : start + megabatch]
                members = members[torch.argsort(self.lengths[members].abs(), descending=True, stable=True)]
                steps.extend(self._balanced_step(members[i : i + step]) for i in range(0, len(members), step))
        for position in torch.randperm(len(steps), generator=generator).tolist():
            yield from steps[position]

    def _balanced_step(self, members: torch.Tensor) -> list[int]:
        """`members` (longest first) dealt into `world_size` device batches of `batch_size`, each row going to the
        batch with the smallest summed length that still has room, concatenated in process order."""
        if self.world_size == 1:
            return members.tolist()
        batches: list[list[int]] = [[] for _ in range(self.world_size)]
        totals = [0] * self.world_size
        for index, length in zip(members.tolist(), self.lengths[members].abs().tolist()):
            target = min(
                (rank for rank in range(self.world_size) if len(batches[rank]) < self.batch_size),
                key=totals.__getitem__,
            )
            batches[target].append(index)
            totals[target] += length
        return [index for batch in batches for index in batch]


def grouped_epoch_rows(lengths: Sequence[int], batch_size: int, world_size: int = 1) -> int:
    """The rows an epoch of `ModalityGroupedSampler` yields (its `len`): each modality's rows, filled up to whole
    rounds of `world_size x batch_size` with some of its own rows again."""
    step = batch_size * world_size
    images = sum(1 for length in lengths if length > 0)
    return sum(-(-count // step) * step for count in (images, len(lengths) - images))


__all__ = ["ModalityGroupedSampler", "grouped_epoch_rows"]
