"""Training rows from a data_recipes build folder, a pushed (Hub-layout) dataset or any LLaVA-format JSON/JSONL,
checked before the model loads.

A LLaVA file goes through the recipe builder's own validator (`data_recipes.validate_dataset`): every rejected row is
counted per reason, logged, written to `<output_dir>/rejects.jsonl`, and the run stops here, before anything is
loaded, under `data.strict` or when more than `data.max_reject_fraction` of the rows were rejected. A build folder
was validated when it was built (its own rejects.jsonl lists what it dropped); so was a pushed dataset, whose rows
carry their images (`datasets.Image`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from data_recipes import (
    DataError,
    kept_rows,
    load_llava_json,
    recorded_image_root,
    validate_dataset,
    write_rejects,
)

from .data import CrocSupervisedDataset
from .data_report import REJECTS_FILE, DataReport
from .script_args import DataArguments
from .training_args import CrocTrainingArguments
from .validation import is_saved_build

logger = logging.getLogger(__name__)


@dataclass
class TrainingRows:
    """The rows a run trains on, the folder their image paths are relative to, and what happened to the others."""

    rows: datasets.Dataset
    image_root: Path
    report: DataReport


def load_training_rows(data_args: DataArguments, args: CrocTrainingArguments | None = None) -> TrainingRows:
    """Read, validate and report the training rows; raises `DataError` (one line) for a file that does not read as
    rows, no rows left, or more rejected rows than the run accepts. Without `args` (a tool reading rows outside a
    run) no rejects file is written.

    `data.path` is one of: a build folder (`datasets.save_to_disk`), which records its (absolute) image root in
    `summary.json`; a LLaVA-format JSON/JSONL file, whose images are taken relative to the file's folder; a folder in
    the Hub's dataset layout (`data/train-*.parquet` and its card, as `data_recipes ... --hub-folder` writes and
    `--push-to-hub` uploads) or a Hub dataset id, whose rows carry their images. `data.image_root` overrides the
    folder for path rows. Relative paths are made absolute here, against the working directory the run was started
    from.
    """
    given = Path(data_args.path).expanduser()
    path = given.absolute() if given.exists() else given
    report = DataReport(source=str(path), max_reject_fraction=data_args.max_reject_fraction, strict=data_args.strict,
                        rejects_path=Path(args.output_dir).absolute() / REJECTS_FILE if args else None,
                        writes=bool(args and args.should_save))
    if is_saved_build(path):
        rows = _first(datasets.load_from_disk(str(path)), data_args.max_samples)
        image_root = Path(data_args.image_root or recorded_image_root(path) or path)
        if report.writes:  # a fresh file for this run's training-time rows (the build's rejects stay in the build)
            _reset(report.rejects_path)
    elif path.is_file():
        rows = _first(load_llava_json(path), data_args.max_samples)
        image_root = Path(data_args.image_root) if data_args.image_root else path.parent
        image_root = image_root.expanduser().absolute()
        validation = _validated_once(rows, image_root, data_args, args)
        report.rows_read, report.rejected, report.notices = len(rows), validation.counts, validation.notices
        if report.writes:
            _reset(report.rejects_path)
            write_rejects(report.rejects_path, rows, validation)
        rows = kept_rows(rows, validation)
    else:
        # A pushed dataset (Hub layout, local or remote) or any folder of Parquet files: `load_dataset` reads the
        # card's `configs` when there is one and decodes the Image column.
        rows = _first(datasets.load_dataset(str(data_args.path), split="train"), data_args.max_samples)
        image_root = Path(data_args.image_root or (path if path.is_dir() else "."))
        if report.writes:
            _reset(report.rejects_path)
    (logger.warning if sum(report.rejected.values()) else logger.info)("%s", report.start_message())
    report.check_start()
    if len(rows) == 0:
        raise DataError(f"no training rows in {path}" + (f" (all {report.rows_read:,} rejected, see "
                                                          f"{report.rejects_path})" if report.rows_read else ""))
    return TrainingRows(rows, image_root.expanduser().absolute(), report)


def _validated_once(rows: datasets.Dataset, image_root: Path, data_args: DataArguments,
                    args: CrocTrainingArguments | None):
    """`validate_dataset` of the rows, run by the main process alone and sent to the others: every process keeps
    the same rows, and the image files are checked once, not once per process."""
    def validate():
        return validate_dataset(rows, image_root, check_images=data_args.image_check != "none",
                                decode_images=data_args.image_check == "decode", num_proc=data_args.num_proc)

    if args is None or args.world_size <= 1:
        return validate()
    from accelerate.utils import broadcast_object_list

    payload = [validate() if args.process_index == 0 else None]
    broadcast_object_list(payload, from_process=0)
    return payload[0]


def _first(rows: datasets.Dataset, count: int | None) -> datasets.Dataset:
    # Before validation: a quick run on the first rows of a large file need not check all of them.
    return rows if count is None else rows.select(range(min(int(count), len(rows))))


def _reset(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("", encoding="utf-8")


def build_train_dataset(training_rows: TrainingRows, processor: Any,
                        args: CrocTrainingArguments) -> CrocSupervisedDataset:
    """The stage's supervised dataset: its template and length budget (`processor` prepares images the stage's way)."""
    logger.info("training rows: %d (images under %s)", len(training_rows.rows), training_rows.image_root)
    return CrocSupervisedDataset(
        training_rows.rows,
        processor,
        template=args.template,
        image_root=training_rows.image_root,
        model_max_length=args.model_max_length,
    )
