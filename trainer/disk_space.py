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
    """Lower bounds, in bytes, of one checkpoint, of the final folder in output_dir and of a LoRA run's merged
    model (`<output_dir>-merged`; 0 without LoRA)."""

    checkpoint: int
    final: int
    merged: int = 0


def optimizer_state_bytes(optim: str, trainable_numel: int, trainable_bytes: int) -> int:
    """The least the optimiser's state takes in a checkpoint: two moments per trainable parameter for the Adam
    family (a byte each in the 8-bit ones), nothing known for the others (SGD without momentum, Adafactor's factored
    moments), so that no run is refused on a guess."""
    name = str(getattr(optim, "value", optim))
    if "adam" not in name:
        return 0
    return 2 * (trainable_numel if "8bit" in name else trainable_bytes)


def save_sizes(model: torch.nn.Module, adapter_only: bool, optim: str = "adamw_torch") -> SaveSizes:
    """The least one checkpoint and the final folder of `model` take on disk; `adapter_only` when the run saves a
    LoRA adapter (its checkpoints and output_dir), the whole model going to the merged folder. ZeRO-3 partitioned
    parameters count at full size."""
    whole = trainable = trainable_numel = 0
    for param in model.parameters():
        numel = getattr(param, "ds_numel", param.numel())
        whole += numel * param.element_size()
        if param.requires_grad:
            trainable += numel * param.element_size()
            trainable_numel += numel
    saved = trainable if adapter_only else whole
    return SaveSizes(checkpoint=saved + optimizer_state_bytes(optim, trainable_numel, trainable), final=saved,
                     merged=whole if adapter_only else 0)


def planned_checkpoints(args) -> int:
    """How many checkpoints a run keeps on disk at its fullest: one per `save_steps` up to `max_steps`, at most
    `save_total_limit` plus the one being written before the oldest goes. 0 when it saves none; 1 when the count
    is not known ahead (epochs), as a preemption or a timed save writes one."""
    strategy = getattr(args.save_strategy, "value", args.save_strategy)
    if strategy == "no":
        return 0
    count = 1
    if strategy == "steps" and args.max_steps and args.max_steps > 0 and args.save_steps:
        # a ratio of max_steps, as the Trainer reads it
        steps = args.save_steps if args.save_steps >= 1 else max(1, math.ceil(args.save_steps * args.max_steps))
        count = max(1, int(args.max_steps // steps))
    if args.save_total_limit and args.save_total_limit > 0:
        count = min(count, args.save_total_limit + 1)
    return count


def _sizes(*sizes: int) -> list[str]:
    """`sizes` written alike (GB, or MB for small ones); in bytes where the rounding would show two as equal."""
    unit, scale = ("GB", 1e9) if max(sizes) >= 1e8 else ("MB", 1e6)
    written = [f"{size / scale:,.2f} {unit}" for size in sizes]
    return written if len(set(written)) == len(written) else [f"{size:,} bytes" for size in sizes]


def _free(folder: str | Path) -> int:
    """Free bytes on the disk that holds (or will hold) `folder`."""
    path = Path(folder).expanduser()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def check_disk_space(model: torch.nn.Module, args, adapter_only: bool, merged_dir: str | Path | None = None) -> None:
    """Refuse, in one line, a run whose first save cannot fit on `args.output_dir`'s disk, or whose final writes
    elsewhere cannot fit there (a LoRA run's `merged_dir`, the `--hub_dry_run` folder's copy of the final folder);
    warn when what it keeps on output_dir's disk (its checkpoints and the final folder) may not."""
    sizes = save_sizes(model, adapter_only, args.optim)
    free = _free(args.output_dir)
    checkpoints = planned_checkpoints(args)
    first = sizes.checkpoint if checkpoints else sizes.final
    if free < first:
        what = "its first checkpoint" if checkpoints else "the final model"
        has, needs = _sizes(free, first)
        raise ConfigError(f"output_dir {args.output_dir} has {has} free, and {what} needs at least {needs}: free "
                          "space or choose an output_dir on a larger disk (nothing was trained)")
    for folder, size, what in ((merged_dir, sizes.merged, "the merged model"),
                               (args.hub_dry_run or None, sizes.final, "the dry run's copy of the final folder")):
        if folder is None or not size:
            continue
        elsewhere = _free(folder)
        if elsewhere < size:
            has, needs = _sizes(elsewhere, size)
            raise ConfigError(f"{folder} is on a disk with {has} free, and {what} needs at least {needs}: free space "
                              "or choose a folder on a larger disk (nothing was trained)")
    needed = checkpoints * sizes.checkpoint + sizes.final
    if free < needed:
        has, needs = _sizes(free, needed)
        logger.warning("output_dir %s has %s free; the %d checkpoint(s) this run keeps at once and its final model "
                       "need at least %s: free space before then, or lower save_total_limit", args.output_dir, has,
                       checkpoints, needs)
