"""Room on `output_dir`'s disk for what a run will write, checked before the first step.

A disk that fills up mid-run costs the steps since the last checkpoint, and a run whose first checkpoint cannot fit
costs every step before it (hours, on a 7B model saving every 1000 steps). The sizes here are lower bounds, so a run
is refused only when it certainly cannot save: a checkpoint holds at least the weights it saves (the whole model, or
only the LoRA adapter) and two optimiser moments per trainable parameter (AdamW's; DeepSpeed adds fp32 master
weights on top), the final folder at least the whole model. A run that has room for its first save but not for all
it is set to keep is warned, once: whoever watches the log can free space before it is needed.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from .cli import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SaveSizes:
    """Lower bounds, in bytes, of one checkpoint and of the final model folder."""

    checkpoint: int
    final: int


def save_sizes(model: torch.nn.Module, adapter_only: bool) -> SaveSizes:
    """The least one checkpoint and the final folder of `model` take on disk; `adapter_only` when the checkpoints
    save a LoRA adapter rather than the whole model. ZeRO-3 partitioned parameters count at full size."""
    whole = trainable = 0
    for param in model.parameters():
        size = getattr(param, "ds_numel", param.numel()) * param.element_size()
        whole += size
        if param.requires_grad:
            trainable += size
    return SaveSizes(checkpoint=(trainable if adapter_only else whole) + 2 * trainable, final=whole)


def planned_checkpoints(args) -> int:
    """How many checkpoints a run keeps on disk at its fullest: one per `save_steps` up to `max_steps`, at most
    `save_total_limit` plus the one being written before the oldest goes. 0 when it saves none; 1 when the count
    is not known ahead (epochs), as a preemption or a timed save writes one."""
    strategy = getattr(args.save_strategy, "value", args.save_strategy)
    if strategy == "no":
        return 0
    count = 1
    if strategy == "steps" and args.max_steps and args.max_steps > 0 and args.save_steps:
        steps = args.save_steps if args.save_steps >= 1 else max(1, math.ceil(args.save_steps * args.max_steps))  # as the Trainer reads a ratio
        count = max(1, int(args.max_steps // steps))
    if args.save_total_limit and args.save_total_limit > 0:
        count = min(count, args.save_total_limit + 1)
    return count


def _sizes(*sizes: int) -> list[str]:
    """`sizes` written alike (GB, or MB for small ones); in bytes where the rounding would show two as equal."""
    unit, scale = ("GB", 1e9) if max(sizes) >= 1e8 else ("MB", 1e6)
    written = [f"{size / scale:,.2f} {unit}" for size in sizes]
    return written if len(set(written)) == len(written) else [f"{size:,} bytes" for size in sizes]


def check_disk_space(model: torch.nn.Module, args, adapter_only: bool) -> None:
    """Refuse, in one line, a run whose first save cannot fit on `args.output_dir`'s disk; warn when what it keeps
    (its checkpoints and the final folder) may not."""
    folder = Path(args.output_dir)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    sizes = save_sizes(model, adapter_only)
    free = shutil.disk_usage(folder).free
    checkpoints = planned_checkpoints(args)
    first = sizes.checkpoint if checkpoints else sizes.final
    if free < first:
        what = "its first checkpoint" if checkpoints else "the final model"
        has, needs = _sizes(free, first)
        raise ConfigError(f"output_dir {args.output_dir} has {has} free, and {what} needs at least {needs}: free "
                          "space or choose an output_dir on a larger disk (nothing was trained)")
    needed = checkpoints * sizes.checkpoint + sizes.final
    if free < needed:
        has, needs = _sizes(free, needed)
        logger.warning("output_dir %s has %s free; the %d checkpoint(s) this run keeps at once and its final model "
                       "need at least %s: free space before then, or lower save_total_limit", args.output_dir, has,
                       checkpoints, needs)
