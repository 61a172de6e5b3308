"""Croc training: trainer, data pipeline and stage configs.

    >>> from trainer import CrocTrainer, CrocTrainingArguments, resolve_config
    >>> model_args, data_args, training_args, stage = resolve_config(["trainer/configs/stage1_5.yaml"])  # doctest: +SKIP

`python -m trainer.train CONFIG.yaml [--key=value ...]` runs a whole stage; `resolve_config` gives the same checked
arguments without loading anything.
"""

from .cli import ConfigError
from .collator import build_collator
from .croc_trainer import CrocTrainer
from .resolve import ResolvedConfig, resolve_config, resolve_training_arguments
from .script_args import DataArguments, ModelArguments
from .stages import STAGES, StageSpec, get_stage
from .training_args import CrocTrainingArguments

__all__ = [
    "STAGES",
    "ConfigError",
    "CrocTrainer",
    "CrocTrainingArguments",
    "DataArguments",
    "ModelArguments",
    "ResolvedConfig",
    "StageSpec",
    "build_collator",
    "get_stage",
    "resolve_config",
    "resolve_training_arguments",
]
