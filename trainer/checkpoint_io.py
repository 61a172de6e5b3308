"""Reading a Trainer checkpoint's weights back into a live Croc model, and writing checkpoints atomically.

`save_pretrained` writes a Llava-family model in the Hub layout (`language_model.model.*`, `vision_tower.*`, ...:
transformers reverses its checkpoint conversion mapping on save), but `Trainer._load_from_checkpoint` feeds the
file's keys straight to `load_state_dict`, so on resume every renamed weight is reported missing and silently keeps
its pre-resume value. Here the keys go through the model's own conversion mapping first, and any weight still
missing is an error.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers.conversion_mapping import get_model_conversion_mapping
from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

logger = logging.getLogger(__name__)

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"


def has_full_weights(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / SAFE_WEIGHTS).is_file() or (folder / SAFE_INDEX).is_file()


def read_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a (possibly sharded) safetensors checkpoint, on the CPU, with the file's key names."""
    folder = Path(folder)
    if (folder / SAFE_WEIGHTS).is_file():
        return load_file(str(folder / SAFE_WEIGHTS), device="cpu")
    shards = sorted(set(json.loads((folder / SAFE_INDEX).read_text(encoding="utf-8"))["weight_map"].values()))
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(load_file(str(folder / shard), device="cpu"))
    return state


def to_model_names(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename checkpoint keys to the model's parameter names with the model's conversion mapping."""
    transforms = get_model_conversion_mapping(model, add_legacy=False)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    if converters:
        raise NotImplementedError("checkpoints whose conversion merges or splits tensors are not supported here")
    return {rename_source_key(key, renamings, converters)[0]: tensor for key, tensor in state.items()}


def load_weights_into(model: torch.nn.Module, folder: str | Path) -> None:
    """Load a checkpoint folder's weights into `model` in place; raise if any parameter is left without a value."""
    state = to_model_names(model, read_weights(folder))
    result = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "all_tied_weights_keys", {}) or {})
    missing = [key for key in result.missing_keys if key not in tied]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"checkpoint {folder} does not match the model: missing {missing[:8]}, unexpected "
            f"{result.unexpected_keys[:8]}"
        )


# ---- atomic checkpoints ----
# A checkpoint is written under `<output_dir>/STAGING_DIR/checkpoint-N` and renamed to `<output_dir>/checkpoint-N` only
# once every file is on disk, so a `checkpoint-N` folder is always complete: a save killed at any moment leaves at
# most a staging folder, which the next save or resume removes. The name matches neither transformers' checkpoint
# pattern (`checkpoint-<digits>`) nor its rotation glob (`checkpoint-*`), so nothing else ever reads it.
STAGING_DIR = ".checkpoint-staging"
# The file the Trainer writes last into a checkpoint: a folder without a readable one is incomplete (a checkpoint
# written without staging, e.g. by an earlier version of this project, and killed mid-save).
TRAINER_STATE = "trainer_state.json"
_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def is_complete_checkpoint(folder: str | Path) -> bool:
    """True when `folder` holds a readable `trainer_state.json`, the file the Trainer writes last."""
    try:
        state = json.loads((Path(folder) / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and "global_step" in state


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete `checkpoint-N` in `output_dir` (highest N), warning about each newer incomplete one it
    passes over; None when there is none."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    found = sorted(((int(match.group(1)), path) for path in output_dir.iterdir()
                    if path.is_dir() and (match := _CHECKPOINT.match(path.name))), reverse=True)
    for _, folder in found:
        if is_complete_checkpoint(folder):
            return str(folder)
        logger.warning("skipping incomplete checkpoint %s (no readable %s: its save was interrupted); resuming from "
                       "the newest complete one", folder, TRAINER_STATE)
    return None


def discard_staging(output_dir: str | Path) -> None:
    """Remove what an interrupted save left in `output_dir` (main process only)."""
    staging = Path(output_dir) / STAGING_DIR
    if staging.exists():
        leftovers = sorted(path.name for path in staging.iterdir())
        if leftovers:
            logger.warning("removing the unfinished checkpoint save %s left by an interrupted run",
                           ", ".join(str(staging / name) for name in leftovers))
        shutil.rmtree(staging)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def promote_checkpoint(staged: str | Path, final: str | Path) -> None:
    """Make the fully written `staged` folder the checkpoint `final`, in one rename.

    Files and folders are flushed first, so the rename cannot reach the disk before their contents (a machine that
    loses power right after still has either no `final` or a complete one). An older `final` (a checkpoint of the
    same step from an earlier attempt) is replaced."""
    staged, final = Path(staged), Path(final)
    for path in sorted(staged.rglob("*"), reverse=True):
        _fsync(path)
    _fsync(staged)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staged, final)
    _fsync(final.parent)
