"""Training rows from a data_recipes build folder, a pushed (Hub-layout) dataset or any LLaVA-format JSON, turned into
the stage's dataset."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import datasets

from data_recipes import load_llava_json

from .data import CrocSupervisedDataset
from .script_args import DataArguments
from .training_args import CrocTrainingArguments

logger = logging.getLogger(__name__)


def load_rows(data_args: DataArguments) -> tuple[datasets.Dataset, Path]:
    """The rows and the folder their image paths are relative to.

    `data.path` is one of: a build folder (`datasets.save_to_disk`), which records its image root in
    `summary.json`; a LLaVA-format JSON file, whose images are taken relative to the file's folder; a folder in the
    Hub's dataset layout (`data/train-*.parquet` and its card, as `data_recipes ... --hub-folder` writes and
    `--push-to-hub` uploads) or a Hub dataset id, whose rows carry their images (`datasets.Image`). `image_root`
    overrides the folder for path rows.
    """
    path = Path(data_args.path).expanduser()
    if is_saved_build(path):
        rows = datasets.load_from_disk(str(path))
        image_root = data_args.image_root or _recorded_image_root(path) or path
    elif path.is_file():
        rows = load_llava_json(path)
        image_root = data_args.image_root or path.parent
    else:
        # The Hub layout, local or remote: `load_dataset` reads the card's `configs` and decodes the Image column.
        rows = datasets.load_dataset(str(data_args.path), split="train")
        image_root = data_args.image_root or (path if path.is_dir() else Path("."))
    if data_args.max_samples is not None:
        rows = rows.select(range(min(int(data_args.max_samples), len(rows))))
    return rows, Path(image_root)


def is_saved_build(path: Path) -> bool:
    """A folder written by `Dataset.save_to_disk` (a data_recipes build)."""
    return (path / "dataset_info.json").is_file() and (path / "state.json").is_file()


def _recorded_image_root(build: Path) -> str | None:
    summary = build / "summary.json"
    if not summary.is_file():
        return None
    return json.loads(summary.read_text(encoding="utf-8")).get("image_root")


def build_train_dataset(data_args: DataArguments, processor, args: CrocTrainingArguments) -> CrocSupervisedDataset:
    """The stage's supervised dataset: its template and length budget (`processor` prepares images the stage's way)."""
    rows, image_root = load_rows(data_args)
    logger.info("training rows: %d from %s (images under %s)", len(rows), data_args.path, image_root)
    return CrocSupervisedDataset(
        rows,
        processor,
        template=args.template,
        image_root=image_root,
        model_max_length=args.model_max_length,
    )
