"""Reading a Trainer checkpoint's weights back into a live Croc model.

`save_pretrained` writes a Llava-family model in the Hub layout (`language_model.model.*`, `vision_tower.*`, ...:
transformers reverses its checkpoint conversion mapping on save), but `Trainer._load_from_checkpoint` feeds the
file's keys straight to `load_state_dict`, so on resume every renamed weight is reported missing and silently keeps
its pre-resume value. Here the keys go through the model's own conversion mapping first, and any weight still
missing is an error.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers.conversion_mapping import get_model_conversion_mapping
from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

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
