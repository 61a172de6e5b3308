"""From `CONFIG.yaml [--key=value ...]` to the checked, resolved arguments of a run, without loading anything."""

from __future__ import annotations

import logging
from typing import NamedTuple

from .cli import build_arguments, load_raw_config
from .croc_config import CrocTrainingArguments
from .script_args import DataArguments, ModelArguments
from .stages import StageSpec
from .validation import validate_raw_config

logger = logging.getLogger(__name__)


class ResolvedConfig(NamedTuple):
    """A run's configuration as the trainer uses it: every stage and preset default filled in."""

    model: ModelArguments
    data: DataArguments
    training: CrocTrainingArguments
    stage: StageSpec


def resolve_config(argv: list[str]) -> ResolvedConfig:
    """Read, check and resolve `argv` (`CONFIG.yaml [--key=value ...]`) as `python -m trainer.train` does.

    Raises `ConfigError` for any problem the configuration alone shows (unknown keys, paths, batch arithmetic, ...).
    """
    raw = load_raw_config(argv)
    stage = validate_raw_config(raw)
    if raw["training"].get("hub_dry_run") and raw["training"].get("push_to_hub"):
        logger.warning("hub_dry_run given: nothing is pushed")
        raw["training"]["push_to_hub"] = False
    model_args, data_args, training_args = build_arguments(raw)
    return ResolvedConfig(model_args, data_args, training_args, stage)
