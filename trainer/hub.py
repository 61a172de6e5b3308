"""Publishing the final folder: `push_to_hub` through the Trainer, or a dry run that writes what would be uploaded.

`Trainer.push_to_hub` saves the model into `output_dir`, writes the model card and uploads `output_dir` with the
ignore patterns below (plus huggingface_hub's defaults). The dry run does the same first two steps and copies the
files those patterns select into a folder, so what tests inspect is exactly what a push would send.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from huggingface_hub import ModelCard
from huggingface_hub.utils import filter_repo_objects

logger = logging.getLogger(__name__)

# `Trainer.push_to_hub` (transformers 5.23) passes these; `HfApi.upload_folder` appends its defaults.
TRAINER_IGNORE_PATTERNS = ["_*", "checkpoint-*"]
HUB_DEFAULT_IGNORE_PATTERNS = [".git", ".git/*", "*/.git", "**/.git/**", ".cache/huggingface",
                               ".cache/huggingface/*", "*/.cache/huggingface", "**/.cache/huggingface/**"]


def files_to_upload(folder: str | Path) -> list[str]:
    """Relative paths of the files `upload_folder(folder, ignore_patterns=TRAINER_IGNORE_PATTERNS)` would send."""
    folder = Path(folder)
    paths = sorted(p.relative_to(folder).as_posix() for p in folder.glob("**/*") if p.is_file())
    return list(filter_repo_objects(paths, ignore_patterns=TRAINER_IGNORE_PATTERNS + HUB_DEFAULT_IGNORE_PATTERNS))


def hub_dry_run(trainer, target: str | Path) -> list[str]:
    """Save the model and card as `push_to_hub` would, then copy the files it would upload into `target`.

    Returns the copied relative paths. Runs the save on every process (ZeRO-3 gathers are collective); only the
    main process writes.
    """
    trainer.save_model(trainer.args.output_dir)
    if not trainer.is_world_process_zero():
        return []
    trainer.create_model_card(model_name=trainer.args.hub_model_id or Path(trainer.args.output_dir).name)
    ModelCard.load(Path(trainer.args.output_dir) / "README.md")  # parses the metadata block: fails early if broken
    target = Path(target)
    if target.exists():
        shutil.rmtree(target)
    copied = files_to_upload(trainer.args.output_dir)
    for relative in copied:
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(trainer.args.output_dir) / relative, destination)
    logger.info("hub dry run: %d files that push_to_hub would upload written to %s", len(copied), target)
    return copied


def push(trainer) -> None:
    """`Trainer.push_to_hub` with the Croc model card (CrocTrainer overrides `create_model_card`)."""
    trainer.push_to_hub(commit_message=f"Croc stage {trainer.args.stage}")
