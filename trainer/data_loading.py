"""Training rows from a data_recipes build folder, a pushed (Hub-layout) dataset, a folder of Parquet files or any
LLaVA-format JSON/JSONL, checked before the model loads, and fitted to `model_max_length` before training.

Every source goes through the recipe builder's own validator (`data_recipes.validate_dataset`) with the run's
options (`data.image_check`, the image limits, `data.strict`): every rejected row is counted per reason, logged and
written to `<output_dir>/rejects.jsonl`. Then every row is fitted to `model_max_length` with the stage's tokenizer
(`fit_rows`): trained whole, trained cut, or rejected like any other bad row. The run stops before the model loads,
under `data.strict` or when more than `data.max_reject_fraction` of the rows were rejected.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from itertools import chain
from pathlib import Path
from typing import Any

import datasets

from data_recipes import (
    REJECT_REASONS,
    DataError,
    ValidationReport,
    build_dropped,
    format_counts,
    kept_rows,
    recorded_image_root,
    rejected_rows,
    validate_dataset,
)
from data_recipes.row_cache import cached_llava_json
from data_recipes.validation import Progress, display_id
from modeling_croc.images import IMAGE_REJECT_REASONS, ImageLimits
from modeling_croc.provenance import card_metadata

from .checkpoint_io import checkpoint_folders
from .data import CrocSupervisedDataset, RowFit
from .data_report import REJECTS_FILE, RUN_REJECT_REASONS, DataReport
from .run_record import FIT_VERDICTS, START_REJECTIONS, read_run_record
from .script_args import DataArguments
from .training_args import CrocTrainingArguments
from .validation import is_saved_build

logger = logging.getLogger(__name__)


@dataclass
class TrainingRows:
    """The rows a run trains on, the folder their image paths are relative to, the limits their images are held to,
    and what happened to the others."""

    rows: datasets.Dataset
    image_root: Path
    report: DataReport
    image_limits: ImageLimits | None = None
    # `{reason: [index of the row as read]}` of the rows the start check rejected (`run_record.START_REJECTIONS`).
    start_rejections: dict[str, list[int]] = field(default_factory=dict)
    # How the rows fit model_max_length, as the run record keeps them (`run_record.FIT_VERDICTS`; set by
    # `build_train_dataset`), so that a resume need not tokenise every row again.
    fit_verdicts: dict[str, Any] | None = None


def load_training_rows(data_args: DataArguments, args: CrocTrainingArguments | None = None,
                       image_processor: Any = None) -> TrainingRows:
    """Read, validate and report the training rows; raises `DataError` (one line) for a source that does not read as
    rows, no rows left, or more rejected rows than the run accepts. Without `args` (a tool reading rows outside a
    run) no rejects file is written. `image_processor`: the stage's, whose preprocessing sets the pixel limit of
    `data.image_check=header|decode` (None: the largest of this project's processors).

    `data.path` is one of: a build folder (`datasets.save_to_disk`), which records its (absolute) image root in
    `summary.json`; a LLaVA-format JSON/JSONL file, whose images are taken relative to the file's folder; a folder in
    the Hub's dataset layout (`data/train-*.parquet` and its card, as `data_recipes ... --hub-folder` writes and
    `--push-to-hub` uploads) or a Hub dataset id, whose rows carry their images. `data.image_root` overrides the
    folder for path rows. Relative paths are made absolute here, against the working directory the run was started
    from. Every source goes through the same validator (`data_recipes.validate_dataset`) with the same options
    (`data.image_check`, `data.strict`, `data.max_reject_fraction`).
    """
    given = Path(data_args.path).expanduser()
    path = given.absolute() if given.exists() else given
    report = DataReport(source=str(path), max_reject_fraction=data_args.max_reject_fraction, strict=data_args.strict,
                        rejects_path=Path(args.output_dir).absolute() / REJECTS_FILE if args else None,
                        writes=bool(args and args.should_save), logs=not args or args.should_log)
    rows, image_root = _read_source(path, data_args, args)
    report.built = _dropped_by_the_build(path)
    rows = _first(rows, data_args.max_samples)
    validation = _validated_once(rows, image_root, data_args, args, image_processor)
    report.rows_read, report.rejected, report.notices = len(rows), {**report.rejected, **validation.counts}, \
        validation.notices
    if report.writes:  # written once the run may write its output folder (a build's own rejects.jsonl stays there)
        report.start_rejects.extend(rejected_rows(rows, validation))
    report.hint = _missing_image_hint(rows, validation, image_root, path)
    rows = kept_rows(rows, validation)
    report.check_start()
    if len(rows) == 0:
        # The message names the rejects file: written first, as `check_start` does.
        rejected = (f" (all {report.rows_read:,} rejected, with their reasons: {report.write_refused_start()})"
                    if report.rows_read else "")
        raise DataError(f"no training rows in {path}{rejected}" + (f"; {report.hint}" if report.hint else ""))
    start_rejections: dict[str, list[int]] = {}
    for index in validation.rejected_indices:
        start_rejections.setdefault(validation.reasons[index], []).append(index)
    return TrainingRows(rows, image_root, report, data_args.image_limits, start_rejections)


# Entries `_image_root_candidate` looks at, at most, under the data file's folder: enough for a dataset's folder of
# annotation files and image subfolders, bounded where the folder is a whole disk of images.
_CANDIDATE_SCAN_ENTRIES = 200_000


def _dropped_by_the_build(path: Path) -> str:
    """What the build `path` is (a build folder, or its data.jsonl) dropped, for the start's line; "" for nothing."""
    build = path if path.is_dir() else path.parent if path.name == "data.jsonl" else None
    dropped = build_dropped(build) if build is not None else None
    if not dropped or not dropped[1]:
        return ""
    read, count, reasons = dropped
    return (f"the build dropped {count:,} of the {read:,} rows it read before this ({format_counts(reasons)}; "
            f"with their reasons in {build / REJECTS_FILE})")


def _missing_image_hint(rows: datasets.Dataset, validation: ValidationReport, image_root: Path, path: Path) -> str:
    """Where most of the start's rejects are `missing_image`, the likely cause is the image root, not the images: say
    where the first missing image was looked for and, when exactly one folder under the data's own folder holds it
    at the row's relative path, name that folder as the `data.image_root` to set. "" otherwise. Raising
    `data.max_reject_fraction`, which the budget's message suggests, would have trained on the few rows left."""
    missing = validation.counts.get("missing_image", 0)
    # Rows of a `datasets.Image` column carry their images (reading one would decode it): the hint is for path rows.
    if not missing or 2 * missing <= validation.num_rejected or _has_image_feature(rows):
        return ""
    first = validation.reasons.index("missing_image")
    image = rows[first]["image"]
    if not isinstance(image, str):
        return ""
    # A resume's verdicts, taken from its record, hold no detail: the path is the root's join then.
    looked = validation.details[first] or str(image_root / os.path.normpath(image))
    hint = (f"most rejects are missing_image: the first, {image!r}, was looked for at {looked} "
            f"(images are read relative to data.image_root, here {image_root})")
    candidate = _image_root_candidate(path if path.is_dir() else path.parent, image, image_root)
    if candidate is not None:
        hint += f"; {candidate / image} exists: set data.image_root={candidate} (--data.image_root={candidate})"
    return hint


def _image_root_candidate(base: Path, image: str, image_root: Path) -> Path | None:
    """The one folder under `base` (hidden folders left out) where `image`, a relative path, names a file, other
    than `image_root`; None when there is none, several, or the bounded scan (`_CANDIDATE_SCAN_ENTRIES`) ends first."""
    parts = Path(os.path.normpath(image)).parts
    if not parts or parts[0] == os.pardir:
        return None
    found: set[Path] = set()
    seen = 0
    for folder, subfolders, files in os.walk(base):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        seen += len(subfolders) + len(files)
        here = Path(folder)
        # The file's folders must end as the row's path does (`sub/a.png` under `.../images/sub`): the root is above.
        if parts[-1] in files and len(here.parts) >= len(parts) \
                and here.parts[len(here.parts) - len(parts) + 1:] == parts[:-1]:
            candidate = here.parents[len(parts) - 2] if len(parts) > 1 else here
            if candidate.absolute() != image_root.absolute():
                found.add(candidate)
        if len(found) > 1 or seen > _CANDIDATE_SCAN_ENTRIES:
            return None
    return next(iter(found)) if found else None


def _read_source(path: Path, data_args: DataArguments,
                 args: CrocTrainingArguments | None = None) -> tuple[datasets.Dataset, Path]:
    """The rows of `data.path` in the row schema, and the folder their image paths are relative to.

    Whatever the source holds, reading it either gives rows or raises `DataError` naming it. The LLaVA JSON reader
    says what is wrong itself (`data_recipes.io`); the `datasets` readers' own errors (a folder of the wrong
    files, Parquet files of conflicting schemas, zero rows) are the user's data, not a bug, and become one line.
    """
    if path.exists() and not (path.is_file() or path.is_dir()):
        raise DataError(f"data.path {path} is neither a file nor a folder (a device, pipe or socket): name a "
                        "LLaVA-format JSON/JSONL file, a build folder or a folder of Parquet files")
    if path.is_file():
        rows = _read_llava_file(path, args)
        # A build's own `data.jsonl` names its images as the build does: relative to the root the build recorded.
        built = recorded_image_root(path.parent) if path.name == "data.jsonl" else None
        image_root = Path(data_args.image_root or built or path.parent)
        return _in_row_schema(rows, path), image_root.expanduser().absolute()
    if is_saved_build(path) and _holds_no_shard(path):
        # `load_from_disk` fails on a save of zero rows with a bare IndexError; such a build holds no row to train.
        raise DataError(f"no training rows in {path} (the build holds none: rebuild it from a source with rows)")
    held = _HeldRecords()
    try:
        with _datasets_logs_held(held):
            rows, image_root = _read_folder_or_hub_id(path, data_args)
    except DataError:
        raise
    except Exception as error:  # the `datasets` readers raise many types for bad files: see the docstring
        if not path.exists():  # read as a Hub dataset id: say first that no such local path exists
            # Most often a recipe build not made yet (the stage YAMLs read `builds/<recipe>`): say how one is made.
            raise DataError(f"{path} is no local folder or file (nothing at {path.expanduser().absolute()}) and, as a "
                            f"Hub dataset id, cannot be read: {_cause(error)}; a recipe build is made with `python -m "
                            f"data_recipes build RECIPE --data-root DIR --out {path}` (docs/DATA.md)") from None
        raise DataError(f"{path} cannot be read as training rows: {_cause(error)}{held.first_error()}") from None
    return _in_row_schema(rows, path), image_root.expanduser().absolute()


def _read_folder_or_hub_id(path: Path, data_args: DataArguments) -> tuple[datasets.Dataset, Path]:
    """The rows of a saved build, a folder of Parquet files or a Hub dataset id, as `datasets` reads them, and
    their image root."""
    if is_saved_build(path):
        rows = datasets.load_from_disk(str(path))
        return rows, Path(data_args.image_root or recorded_image_root(path) or path)
    # A pushed dataset (Hub layout, local or remote) or any folder of Parquet files: `load_dataset` reads the card's
    # `configs` when there is one. The folder as found (`~` expanded, made absolute): `load_dataset` reads `~/set` as
    # a Hub id.
    with contextlib.ExitStack() as stack:
        cache_dir = _private_cache_dir(path, stack)
        if path.is_dir():
            _account_for_files_not_read(path, cache_dir)
        rows = datasets.load_dataset(str(path) if path.exists() else str(data_args.path), split="train",
                                     cache_dir=cache_dir, keep_in_memory=True if cache_dir else None)
    return rows, Path(data_args.image_root or (path if path.is_dir() else "."))


class _HeldRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def first_error(self) -> str:
        """`; datasets said: ` the first line of the first ERROR held (which names the file that failed), or ""."""
        for record in self.records:
            if record.levelno >= logging.ERROR:
                return f"; datasets said: {(record.getMessage().splitlines() or [''])[0][:300]}"
        return ""


@contextlib.contextmanager
def _datasets_logs_held(held: _HeldRecords) -> Iterator[None]:
    """Hold what `datasets` logs while it reads the rows: said after a read that succeeds, dropped after one that
    fails. Its readers log a failed file as a multi-line ERROR (a Parquet schema printed in full, once by its own
    handler and once more through the root logger) before raising; the run's one line names that error."""
    library = logging.getLogger("datasets")
    handlers, propagate = library.handlers[:], library.propagate
    library.handlers, library.propagate = [held], False
    try:
        yield
    finally:
        library.handlers, library.propagate = handlers, propagate
    for record in held.records:  # reached only when the read succeeded
        library.handle(record)


def _read_llava_file(path: Path, args: CrocTrainingArguments | None) -> datasets.Dataset:
    """The rows of a LLaVA-format file, memory-mapped from their Arrow file in `datasets`' cache
    (`data_recipes.row_cache`). In a run of several processes the first process of each node writes it while the
    others wait, then they map it: one parse per node, not one per process."""
    if args is None or args.world_size <= 1:
        return cached_llava_json(path)
    with args.main_process_first(local=True, desc=f"reading {path}"):
        return cached_llava_json(path)


def _private_cache_dir(path: Path, stack: contextlib.ExitStack) -> str | None:
    """None where `datasets`' cache (`HF_DATASETS_CACHE`) can be written; otherwise a temporary folder, deleted when
    `stack` closes, for `load_dataset` to prepare the rows in, which are then read into memory. `load_dataset` writes
    its Arrow files and lock files into the cache even for a local folder: a read-only home or an uncreatable cache
    refused a Parquet source as rows that "cannot be read", where a JSON file is read by each process itself (with
    one warning, as here)."""
    cache = Path(datasets.config.HF_DATASETS_CACHE).expanduser()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=cache):
            return None
    except OSError as error:
        logger.warning("rows of %s: cannot prepare them in %s (%s); this process reads them itself, in memory", path,
                       cache, error.strerror or error)
    return stack.enter_context(tempfile.TemporaryDirectory(prefix="croc-rows-"))


def _account_for_files_not_read(folder: Path, cache_dir: str | None = None) -> None:
    """`load_dataset(folder, split="train")` reads the files that `datasets` assigns to the train split by their names
    (`train*`, `data/train-*`, or the card's `configs`). A file of the same type whose name puts it in no split
    (`more.parquet` beside `train.parquet`) was dropped without a word, its rows neither trained nor counted: refused
    here, in one line. The files of other splits (validation, test) and of the card's other configs (a Hub dataset's
    subsets: the default one is read) are not trained, as there is no evaluation here: said in one line."""
    builder = datasets.load_dataset_builder(str(folder), cache_dir=cache_dir)
    if builder.name != "parquet":
        # `datasets` reads a folder as its most common file type: the images of path rows, in the folder their paths
        # are relative to by default, outnumber a few Parquet shards, and the folder was read as an image folder (its
        # rows refused for "no `conversations` column (found ['image'])", the Parquet files not read at all).
        shards = sum(1 for file in folder.rglob("*.parquet") if file.is_file())
        raise DataError(f"data.path {folder}: datasets reads a folder as its most common file type and reads this one "
                        f"as {builder.name}, not its {shards} Parquet file(s); put the Parquet files in a folder of "
                        "their own (data.image_root names the folder of the rows' images)")
    splits = {str(name): [Path(file) for file in files] for name, files in (builder.config.data_files or {}).items()}
    read = {file.resolve() for files in splits.values() for file in files}
    suffixes = {file.suffix for files in splits.values() for file in files}
    # A card's other configs name their own files: a snapshot of a Hub dataset with several subsets trained its
    # default one, and was refused for the others' files as "in no split".
    card_configs = card_metadata(folder).get("configs")
    other_configs = sorted({str(config.get("config_name", "default")) for config in card_configs
                            if isinstance(config, dict)} - {builder.config.name}) if isinstance(card_configs, list) else []
    for name in other_configs:
        try:
            files_of = datasets.load_dataset_builder(str(folder), name, cache_dir=cache_dir).config.data_files or {}
        except FileNotFoundError:  # a snapshot downloaded with the default config's files only
            continue
        read |= {Path(file).resolve() for files in files_of.values() for file in files}
    unread = sorted(file for file in folder.rglob("*") if file.suffix in suffixes and file.is_file()
                    and file.resolve() not in read
                    and not any(part.startswith(".") for part in file.relative_to(folder).parts))
    if unread:
        names = ", ".join(str(file.relative_to(folder)) for file in unread[:3]) + (", ..." if len(unread) > 3 else "")
        raise DataError(f"data.path {folder}: {len(unread)} file(s) are in no split, so their rows would be neither "
                        f"trained nor counted ({names}); "
                        + ("its card's configs name the files of each split: add them to the train split's data_files"
                           if card_configs else "datasets assigns a folder's files to splits by their names and the "
                           "run trains the train split: rename them train-*")
                        + ", or move them out of the folder")
    others = [f"its {name} split ({len(files)} file(s))" for name, files in splits.items() if name != "train"]
    others += [f"its {name} config" for name in other_configs]
    if others and "train" in splits:
        logger.warning("data.path %s: only its train split%s is trained (trainer.train has no evaluation); not read: "
                       "%s", folder, f" of its {builder.config.name} config" if other_configs else "", ", ".join(others))


def _holds_no_shard(path: Path) -> bool:
    """Whether the `save_to_disk` folder `path` lists no Arrow file (a dataset of zero rows); False when its
    state.json does not read, which `load_from_disk` then reports."""
    try:
        return json.loads((path / "state.json").read_text(encoding="utf-8")).get("_data_files") == []
    except (OSError, ValueError, AttributeError):
        return False


def _cause(error: BaseException) -> str:
    """The innermost cause of a reader's error, in one line (`DatasetGenerationError` wraps the Arrow error that says
    what is wrong)."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = " ".join(str(error).split()) or "no message"
    if len(text) > 300:  # the end says why as often as the start (Arrow's "... because column names don't match")
        text = f"{text[:150]} ... {text[-150:]}"
    return f"{type(error).__name__}: {text}"


# The row schema a source's columns must have (a LLaVA-format row); anything else is refused before any row is read.
_TURN_FIELDS = ("from", "value")
_SCHEMA_HELP = ("each row needs `conversations`: a list of {from, value} turns (from = human/gpt), and optionally "
                "`id` and `image` (a path string or a datasets.Image)")


def _in_row_schema(rows: datasets.Dataset, path: Path) -> datasets.Dataset:
    """`rows` with the columns the validator reads, or `DataError` naming the column that has another type.

    `conversations` must be a list of `{from, value}` turns; a missing `id` is numbered by position; a missing
    `image` (a text-only set) is filled with None; an `image` column of raw bytes or of `{bytes, path}` values
    written without the `datasets.Image` type is read as one.
    """
    if "conversations" not in rows.column_names:
        raise DataError(f"{path}: no `conversations` column (found {rows.column_names}); {_SCHEMA_HELP}")
    turns = rows.features["conversations"]
    turn = getattr(turns, "feature", None)
    if not isinstance(turn, dict) or not all(field in turn for field in _TURN_FIELDS):
        raise DataError(f"{path}: the `conversations` column is {turns}, not a list of {{from, value}} turns; "
                        f"{_SCHEMA_HELP}")
    if "id" not in rows.column_names:
        rows = rows.add_column("id", [f"row-{i}" for i in range(len(rows))])
    if "image" not in rows.column_names:
        rows = rows.add_column("image", [None] * len(rows), feature=datasets.Value("string"))
    image = rows.features["image"]
    if image == datasets.Value("binary") or image == datasets.Value("large_binary") or (
            isinstance(image, dict) and set(image) == {"bytes", "path"}):
        rows = rows.cast_column("image", datasets.Image(decode=False))
    elif not (isinstance(image, datasets.Image) or image in (datasets.Value("string"), datasets.Value("large_string"),
                                                              datasets.Value("null"))):
        raise DataError(f"{path}: the `image` column is {image}, not image paths or images; {_SCHEMA_HELP}")
    return rows


def _validated_once(rows: datasets.Dataset, image_root: Path, data_args: DataArguments,
                    args: CrocTrainingArguments | None, image_processor: Any = None):
    """`validate_dataset` of the rows, run by the main process alone and sent to the others: every process keeps
    the same rows, and the image files are checked once, not once per process."""
    def validate():
        earlier = None if args is None else _recorded_start_rejections(args)
        image_check = data_args.image_check
        if image_check in ("header", "decode") and _recorded_reasons(earlier, len(rows)) is not None:
            # A resume trains on the interrupted run's rows (`_as_the_run_started`): this check only warns of the rows
            # that fail since (a record that does not read lets this check decide, in full). Whether each file is
            # still there says so without opening it again; re-reading every image (1.2M of them for stage 1.5, hours
            # of decoding) on every resume of a multi-day run bought only that warning, and a file that no longer
            # decodes is replaced and counted when training meets it.
            image_check = "exists"
        fresh = validate_dataset(rows, image_root, image_check=image_check, limits=data_args.image_limits,
                                 image_processor=image_processor, num_proc=data_args.num_proc)
        return _as_the_run_started(fresh, earlier)

    if args is None or args.world_size <= 1:
        return validate()
    from accelerate.utils import broadcast_object_list

    payload = [validate() if args.process_index == 0 else None]
    broadcast_object_list(payload, from_process=0)
    return payload[0]


def _recorded_start_rejections(args: CrocTrainingArguments) -> Any:
    """On a resume, the start check's outcome the interrupted run recorded (`run_record.START_REJECTIONS`, from the
    record of the checkpoint named, or of the newest checkpoint of `output_dir` when the run resumes from there);
    None for a fresh run or where no checkpoint records one."""
    folders = _resume_folders(args)
    if folders is None:
        return None
    return next((record[START_REJECTIONS] for folder in folders if folder.is_dir()
                 and (record := read_run_record(folder)) is not None and START_REJECTIONS in record), None)


def _resume_folders(args: CrocTrainingArguments) -> list[Path] | None:
    """The checkpoint named, or those of `output_dir` newest first when the run resumes from there; None for a fresh
    run."""
    explicit = args.resume_from_checkpoint
    if isinstance(explicit, str):
        return [Path(explicit)]
    if (explicit is True or args.auto_resume) and args.output_dir:
        return checkpoint_folders(args.output_dir)  # a run's checkpoints share its record
    return None


def _as_the_run_started(fresh: ValidationReport, earlier: Any) -> ValidationReport:
    """On a resume, the start check's outcome of the interrupted run (`earlier`, as `_recorded_start_rejections`
    found it; None for a fresh run, which keeps its own start check): the same rows rejected, every other row
    kept, so the rows trained on and their order are that run's. A kept row that fails now (an image deleted since)
    stays in place and is replaced when training meets it, counted, as a failure in the middle of the run is.
    Whether the rows are the same is the run record's `data_rows` comparison, which follows this
    (`trainer.resume.plan_resume`)."""
    if earlier is None:
        return fresh
    reasons = _recorded_reasons(earlier, len(fresh.reasons))
    if reasons is None:
        logger.warning("the checkpoint's record of the rows its start check rejected cannot be read; this start "
                       "check decides")
        return fresh
    details = ["rejected when the run first started" if reasons[index] is not None and fresh.reasons[index] is None
               else detail for index, detail in enumerate(fresh.details)]
    failing = [index for index, reason in enumerate(fresh.reasons) if reason is not None and reasons[index] is None]
    # An image that no longer reads fails again when training loads it, and is replaced there; a row whose text
    # fails a rule added since (an invisible-only answer) still reads, and trains as the interrupted run trained it.
    unreadable = [index for index in failing if fresh.reasons[index] in IMAGE_REJECT_REASONS]
    still_read = [index for index in failing if fresh.reasons[index] not in IMAGE_REJECT_REASONS]
    for rows, outcome in ((unreadable, "they keep their place and are replaced when training meets them, counted in "
                                       "the data report"),
                          (still_read, "a check this version added or tightened; they keep their place and train as the "
                           "interrupted run trained them, so that it stays on its loss curve (a new run rejects them)")):
        if rows:
            logger.warning("%d row(s) the interrupted run trained with now fail the start check (first: row %d, %s: "
                           "%s): %s", len(rows), rows[0], fresh.reasons[rows[0]], fresh.details[rows[0]], outcome)
    return replace(fresh, reasons=reasons, details=details)


def _recorded_reasons(recorded: Any, num_rows: int) -> list[str | None] | None:
    """Per row, the reason a recorded `{reason: [index, ...]}` rejected it, or None where it kept it; None when the
    record is not such a mapping over these rows (known reasons, whole-number indices in range, each row once)."""
    if not isinstance(recorded, dict):
        return None
    reasons: list[str | None] = [None] * num_rows
    for reason, indices in recorded.items():
        if reason not in REJECT_REASONS or not isinstance(indices, list):
            return None
        for index in indices:
            if type(index) is not int or not 0 <= index < num_rows or reasons[index] is not None:
                return None
            reasons[index] = reason
    return reasons


def _first(rows: datasets.Dataset, count: int | None) -> datasets.Dataset:
    # Before validation: a quick run on the first rows of a large file need not check all of them.
    return rows if count is None else rows.select(range(min(int(count), len(rows))))


# ---- how the rows fit model_max_length ----
_WHOLE, _TRUNCATED, _UNKNOWN = "whole", "truncated", "unknown"
_FIT_BATCH = 4096


def _fit_range(dataset: CrocSupervisedDataset, start: int, stop: int, parts: int = 1) -> list[RowFit]:
    """`fit_row` of rows [start, stop): their turns read in Arrow batches, the image's presence from
    `modality_lengths` (reading a `datasets.Image` column would decode every image). The first of `parts` equal
    ranges, which run side by side, logs the progress of all of them."""
    rows, signs = dataset.rows, dataset.modality_lengths
    progress = Progress("rows fitted to model_max_length", len(dataset)) if start == 0 else None
    if hasattr(rows, "select_columns"):
        part = rows.select(range(start, stop)).select_columns(["conversations"])
        turns = (conv for batch in part.iter(batch_size=_FIT_BATCH) for conv in batch["conversations"])
    else:
        turns = (rows[i]["conversations"] for i in range(start, stop))
    fits: list[RowFit] = []
    batch: list[dict[str, Any]] = []
    for i, conversations in zip(range(start, stop), turns):
        batch.append({"id": i, "conversations": conversations, "image": True if signs[i] > 0 else None})
        if len(batch) == _FIT_BATCH:
            fits += dataset.fit_rows(batch)
            batch = []
            if progress is not None:
                progress.update(len(fits) * parts)
    return fits + (dataset.fit_rows(batch) if batch else [])


def _fit_all(dataset: CrocSupervisedDataset, num_proc: int) -> list[RowFit]:
    size = len(dataset)
    if num_proc <= 1 or size < 2 * _FIT_BATCH:
        return _fit_range(dataset, 0, size)
    import multiprocessing

    bounds = [(size * k // num_proc, size * (k + 1) // num_proc) for k in range(num_proc)]
    dataset.modality_lengths  # noqa: B018  (computed once here, inherited by the forked workers)
    with multiprocessing.get_context("fork").Pool(num_proc) as pool:
        parts = pool.starmap(_fit_range, [(dataset, start, stop, num_proc) for start, stop in bounds])
    return [fit for part in parts for fit in part]


def fit_rows(dataset: CrocSupervisedDataset, report: DataReport, args: CrocTrainingArguments | None = None,
             num_proc: int = 1) -> CrocSupervisedDataset:
    """Decide, before training, how every row fits `model_max_length` (`CrocSupervisedDataset.fit_row`, no image
    read): rows that cannot fit are rejected (counted in `report` with their reason, written to the rejects file,
    inside the run's reject budget: `DataError` past it), rows that fit only cut are counted as truncated. Returns
    the dataset of the rows that stay. The main process decides and the others follow (one pass, the same rows
    everywhere)."""
    return _fitted(dataset, report, args, num_proc)[0]


def _fitted(dataset: CrocSupervisedDataset, report: DataReport, args: CrocTrainingArguments | None = None,
            num_proc: int = 1) -> tuple[CrocSupervisedDataset, dict[str, Any]]:
    """`fit_rows`, and its verdicts as the run record keeps them (`run_record.FIT_VERDICTS`, `_compact`). In a run
    (`args`), a checkpoint's recorded verdicts whose key equals this fit's inputs are taken instead of tokenising
    every row again (`_reused_verdicts`): the same report, rejects and rows, without the pass that took most of a
    resume's start (749 s of 944 s on mix665K)."""
    def decide() -> dict[str, Any]:
        key = _fit_key(dataset, args) if args is not None else None
        reused = _reused_verdicts(args, key, len(dataset)) if args is not None else None
        return reused if reused is not None else _compact(_fit_all(dataset, num_proc), key)

    if args is None or args.world_size <= 1:
        verdicts = decide()
    else:
        from accelerate.utils import broadcast_object_list

        payload = [decide() if args.process_index == 0 else None]
        broadcast_object_list(payload, from_process=0)
        verdicts = payload[0]
    rejected = {index: (reason, detail) for index, reason, detail in verdicts["rejected"]}
    ids = _ids(dataset.rows)
    for i in verdicts["truncated"]:
        report.add_truncated(ids[i])
    for reason, _ in rejected.values():
        report.add_rejected(reason)
    if rejected and report.writes:
        for i, (reason, detail) in rejected.items():
            row = dataset.rows[i] if not _has_image_feature(dataset.rows) else {"id": ids[i]}
            report.start_rejects.append({"reason": reason, "detail": detail, **_plain(row)})
    if verdicts["unknown"]:
        logger.info("%d image row(s) have a token count that depends on the image (AnyRes crops, native "
                    "resolution): they are fitted to model_max_length when training reads them", verdicts["unknown"])
    if not rejected:
        return dataset, verdicts
    keep = [i for i in range(len(dataset)) if i not in rejected]
    rows = dataset.rows.select(keep) if hasattr(dataset.rows, "select") else [dataset.rows[i] for i in keep]
    return CrocSupervisedDataset(rows, dataset.processor, template=dataset.template, image_root=dataset.image_root,
                                 model_max_length=dataset.model_max_length, image_limits=dataset.image_limits), verdicts


def _compact(fits: list[RowFit], key: dict[str, str] | None) -> dict[str, Any]:
    """The verdicts of `fits` as the run record keeps them: the rows cut and those rejected (with reason and detail)
    by index, ascending, and how many wait for their image; every other row is whole. 1.5M rows of which 1% are not
    whole make some 150 kB. `key`: what they were decided from (`_fit_key`; None: nothing a resume can compare)."""
    return {"key": key, "rows": len(fits),
            "truncated": [i for i, fit in enumerate(fits) if fit.verdict == _TRUNCATED],
            "rejected": [[i, fit.reason, fit.detail] for i, fit in enumerate(fits) if fit.verdict == "rejected"],
            "unknown": sum(fit.verdict == _UNKNOWN for fit in fits)}


def _fit_key(dataset: CrocSupervisedDataset, args: CrocTrainingArguments) -> dict[str, str] | None:
    """Every input of the length check, each by a digest (`CrocSupervisedDataset.fit_inputs`, the rows it fits, the
    image aspect ratio the processor's image token count follows); None where the tokenizer has no exact one."""
    inputs = dataset.fit_inputs()
    if inputs is None:
        return None
    return {**inputs, "rows": dataset.rows_fingerprint["content_sha256"] + f"/{len(dataset)}",
            "image_aspect_ratio": str(getattr(args, "image_aspect_ratio", None))}


def _reused_verdicts(args: CrocTrainingArguments, key: dict[str, str] | None, num_rows: int) -> dict[str, Any] | None:
    """The verdicts a record of this run holds (a checkpoint the resume may pick, or output_dir's own) when they
    were decided from exactly `key`'s inputs, else None; a record that holds none, holds unreadable ones or other
    inputs' is said in one line (the rows are then fitted in full), a fresh output_dir is not."""
    records = _records(args)
    first = next(records, None)
    if first is None:  # a fresh output_dir: nothing to take, nothing to say
        return None
    recorded = next((record[FIT_VERDICTS] for record in chain([first], records) if FIT_VERDICTS in record), None)
    why = None
    if key is None:
        why = "the length check cannot compare its inputs with the recorded ones (the tokenizer has no exact " \
              "fingerprint: no `tokenizers` backend)"
    elif recorded is None:
        why = "the run's record holds no length-check verdicts (written before they were recorded)"
    elif not _well_formed(recorded, num_rows):
        why = "the recorded length-check verdicts cannot be read"
    elif recorded["key"] != key:
        changed = sorted(part for part in {*key, *recorded["key"]} if key.get(part) != recorded["key"].get(part))
        why = f"the length check's inputs changed since they were recorded ({', '.join(changed)})"
    if why is not None:
        logger.info("%s: every row is fitted to model_max_length again", why)
        return None
    logger.info("length check: the %d row(s) as the run recorded them (%d truncated, %d rejected), from the same rows, "
                "tokenizer, template, model_max_length and image tokens; nothing tokenised", num_rows,
                len(recorded["truncated"]), len(recorded["rejected"]))
    return recorded


def _records(args: CrocTrainingArguments) -> Iterator[dict[str, Any]]:
    """The run records a start may take recorded outcomes from, read one at a time (a run that keeps every
    checkpoint has hundreds): those of the checkpoints a resume picks among (`_resume_folders`), then output_dir's
    own (a run stopped before its first checkpoint)."""
    folders = [*(_resume_folders(args) or []), *([Path(args.output_dir)] if args.output_dir else [])]
    return (record for folder in folders if folder.is_dir() and (record := read_run_record(folder)) is not None)


def _well_formed(recorded: Any, num_rows: int) -> bool:
    """Whether `recorded` is verdicts as `_compact` writes them over `num_rows` rows: a key of digests, indices in
    range and ascending, each row at most once, known reasons, a count of unknown rows that the others leave room for."""
    if not isinstance(recorded, dict) or set(recorded) != {"key", "rows", "truncated", "rejected", "unknown"}:
        return False
    key, truncated, rejected, unknown = recorded["key"], recorded["truncated"], recorded["rejected"], recorded["unknown"]
    if not (isinstance(key, dict) and all(isinstance(v, str) for v in key.values()) and _count(recorded["rows"])
            and recorded["rows"] == num_rows and isinstance(truncated, list) and isinstance(rejected, list)):
        return False
    # Any reason the report counts: besides `LENGTH_REJECT_REASONS`, `fit_rows` rejects a row whose text holds the
    # family's own image token as `too_many_image_markers` (a start-check reason); refusing it made one such row (a
    # forum's `[IMG]` tag under Pixtral) cost every resume the full check, said as verdicts that "cannot be read".
    if not all(isinstance(entry, list) and len(entry) == 3 and entry[1] in RUN_REJECT_REASONS
               and isinstance(entry[2], str) for entry in rejected):
        return False
    indices = [truncated, [entry[0] for entry in rejected]]
    if not all(_count(i) and i < num_rows for part in indices for i in part):
        return False
    if any(part != sorted(set(part)) for part in indices) or set(indices[0]) & set(indices[1]):
        return False
    return _count(unknown) and unknown <= num_rows - len(truncated) - len(rejected)


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _ids(rows) -> list[str]:
    """The rows' ids as the data report shows them (`display_id`)."""
    if hasattr(rows, "column_names"):
        if "id" not in rows.column_names:
            return [str(i) for i in range(len(rows))]
        # The column read at once, in Arrow (the rows' order after a `select`): `rows["id"]` is a lazy column that
        # `datasets` formats row by row, about 10 s of a 2-minute resume's start at mix665K, to name 5 cut rows.
        return [str(display_id(value)) for value in rows.with_format("arrow")["id"].to_pylist()]
    return [str(display_id(row.get("id", i))) for i, row in enumerate(rows)]


def _has_image_feature(rows) -> bool:
    features = getattr(rows, "features", None)
    return features is not None and isinstance(features.get("image"), datasets.Image)


def _plain(row: Any) -> dict[str, Any]:
    plain = {key: value for key, value in dict(row).items() if key != "problem"}
    if "id" in plain:
        plain["id"] = display_id(plain["id"])
    return plain


def build_train_dataset(training_rows: TrainingRows, processor: Any, args: CrocTrainingArguments,
                        num_proc: int = 1) -> CrocSupervisedDataset:
    """The stage's supervised dataset: its template and length budget (`processor` prepares images the stage's way),
    over the rows that fit it (`fit_rows`; the start's reject budget applies to them with the validator's rejects)."""
    dataset = CrocSupervisedDataset(
        training_rows.rows,
        processor,
        template=args.template,
        image_root=training_rows.image_root,
        model_max_length=args.model_max_length,
        image_limits=training_rows.image_limits,
    )
    report = training_rows.report
    dataset, training_rows.fit_verdicts = _fitted(dataset, report, args, num_proc=num_proc)
    report.log_start()
    report.check_start()
    if len(dataset) == 0:
        # The file the message names is written first (as in `load_training_rows`).
        raise DataError(f"no training rows left in {report.source}: all {report.rows_read:,} rejected, with their "
                        f"reasons: {report.write_refused_start()}")
    logger.info("training rows: %d (images under %s)", len(dataset), training_rows.image_root)
    return dataset
