"""Croc training: trainer, data pipeline and stage configs.

    >>> from trainer import CrocTrainer, CrocTrainingArguments, resolve_config
    >>> model_args, data_args, training_args, stage = resolve_config(["trainer/configs/stage1_5.yaml"])  # doctest: +SKIP

`python -m trainer.train CONFIG.yaml [--key=value ...]` runs a whole stage; `resolve_config` gives the same checked
arguments without loading anything.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> the submodule that defines it, imported on first use (PEP 562), as transformers' own packages do:
# importing the package runs none of its modules, so `python -m trainer.model_card` (or `.merge_lora`) is not
# imported a first time by the package before runpy runs it as `__main__` (Python warns of that, and the module
# would exist twice).
_EXPORTS = {
    "ConfigError": "cli",
    "build_collator": "collator",
    "CrocTrainer": "croc_trainer",
    "ResolvedConfig": "resolve",
    "resolve_config": "resolve",
    "resolve_training_arguments": "resolve",
    "DataArguments": "script_args",
    "ModelArguments": "script_args",
    "STAGES": "stages",
    "StageSpec": "stages",
    "get_stage": "stages",
    "CrocTrainingArguments": "training_args",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # what type checkers and editors read; `X as X` marks a re-export
    from .cli import ConfigError as ConfigError
    from .collator import build_collator as build_collator
    from .croc_trainer import CrocTrainer as CrocTrainer
    from .resolve import ResolvedConfig as ResolvedConfig
    from .resolve import resolve_config as resolve_config
    from .resolve import resolve_training_arguments as resolve_training_arguments
    from .script_args import DataArguments as DataArguments
    from .script_args import ModelArguments as ModelArguments
    from .stages import STAGES as STAGES
    from .stages import StageSpec as StageSpec
    from .stages import get_stage as get_stage
    from .training_args import CrocTrainingArguments as CrocTrainingArguments


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
