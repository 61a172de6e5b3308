"""Run a recipe end to end: read and sample the sources, validate, write the build folder, optionally push.

A build folder holds::

    state.json, dataset_info.json, data-*.arrow   `Dataset.save_to_disk` (load with `datasets.load_from_disk(out)`)
    data.jsonl                                    the kept rows in LLaVA format (text rows without `image`)
    README.md                                     the dataset card
    (with --hub-folder DIR: DIR/data/train-*.parquet + README.md, what --push-to-hub uploads, images embedded)
    summary.json                                  kept/dropped per source and per reason, parameters, provenance
    rejects.jsonl                                 every rejected row with its reason

A rebuild over a finished build (--overwrite) writes into a hidden `.rebuild-*` folder inside it and swaps the files
in only once the build succeeded: a failed or stopped rebuild leaves the previous build whole, its own summary.json
and rejects.jsonl in that folder (removed by the next rebuild).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, concatenate_datasets
from huggingface_hub import DatasetCard, is_offline_mode
from huggingface_hub.utils import HFValidationError, validate_repo_id

from modeling_croc.publish_folder import check_publish_folder, fill_publish_folder, prepare_publish_folder
from modeling_croc.upload_scan import UploadLeakError, check_upload_set
from modeling_croc.write_failures import NO_ROOM_ERRNOS, write_failure_reason

from . import hub, publish
from .card import build_card
from .parts import RecipeResult
from .registry import Recipe, get_recipe
from .schema import empty_dataset
from .validation import (
    NOTICES,
    RejectedRowsError,
    StrictValidationError,
    ValidationReport,
    counts_by_source,
    format_counts,
    kept_rows,
    validate_dataset,
    write_jsonl,
    write_rejects,
)

logger = logging.getLogger(__name__)

DEFAULT_SEED = 42
_OUTPUT_MARKER = "summary.json"  # a folder holding this is a previous build and may be replaced


@dataclass
class BuildResult:
    """What a build produced: the kept rows, the summary written to summary.json, and the card."""

    out_dir: Path
    dataset: Dataset
    summary: dict[str, Any]
    card: DatasetCard


# The status of summary.json from the moment a build starts replacing its folder until it ends.
_BUILDING = "building"
# The status of a build that ended without saving a dataset: its summary and rejects say why.
_FAILED = "failed"


def _build_summary(build_dir: str | Path) -> dict[str, Any] | None:
    """The summary.json a build wrote into `build_dir`, or None: none there, or one another tool wrote under that
    name (not an object with a build's keys)."""
    try:
        summary = json.loads((Path(build_dir) / _OUTPUT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and {"recipe", "status", "rows", "sources"} <= set(summary) else None


def recorded_image_root(build_dir: str | Path) -> str | None:
    """The image root a build folder's summary.json records (absolute since builds record it so), or None."""
    summary = _build_summary(build_dir)
    return None if summary is None else summary.get("image_root")


def build_dropped(build_dir: str | Path) -> tuple[int, int, dict[str, int]] | None:
    """(rows read, rows dropped, dropped per reason, those > 0) of the finished build in `build_dir`, from its
    summary.json; None for a folder that holds none, or one of a build that did not finish."""
    summary = _build_summary(build_dir)
    if summary is None or summary["status"] != "ok":
        return None
    rows, reasons = summary["rows"], summary.get("dropped_by_reason") or {}
    return rows["read"], rows["dropped"], {reason: n for reason, n in reasons.items() if n}


def unfinished_build(build_dir: str | Path) -> bool:
    """Whether `build_dir` is a build stopped before its end (killed, out of disk): its rows may be partial and its
    summary records no image root."""
    summary = _build_summary(build_dir)
    return summary is not None and summary["status"] == _BUILDING


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Fail before any reading if `out_dir` holds something we may not replace."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} is a file, not a folder: choose a new or empty folder for the build")
    if out_dir.exists() and any(out_dir.iterdir()):
        summary = _build_summary(out_dir)
        # A build that failed (every row rejected, --strict) left its summary and rejects to read and nothing to
        # keep: the corrected command replaces them as it is, not only with --overwrite.
        failed = summary is not None and summary["status"] == _FAILED
        if not overwrite and not failed:
            raise FileExistsError(f"{out_dir} is not empty; pass --overwrite (overwrite=True from Python) to replace "
                                  "the build there")
        if summary is None:
            # Refuse to wipe a folder that is not one of our builds (a typo could point at the data root).
            raise FileExistsError(f"{out_dir} is not empty and holds no {_OUTPUT_MARKER} of a build; refusing to delete it")
        foreign = sorted(path.name for path in out_dir.iterdir() if not _build_output(path.name))
        if foreign:
            # A build folder is where users keep runs and notes next to the rows (`--output_dir=builds/x/run1`):
            # --overwrite replaces only what a build writes, and says so before hours of reading, not after.
            names = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise FileExistsError(f"{out_dir} holds {len(foreign)} thing(s) no build writes ({names}); --overwrite "
                                  "replaces only a build's own files: move them out of it first")


# What a build writes into its folder (see the module docstring), and what one killed midway leaves: the marker's
# temporary file, `datasets`' cache files of the saved rows, the staging folder of a push.
_BUILD_FILES = frozenset({_OUTPUT_MARKER, "rejects.jsonl", "data.jsonl", "README.md", "state.json",
                          "dataset_info.json"})
_BUILD_PATTERN = re.compile(r"data-\d{5}-of-\d{5}\.arrow|cache-.*\.arrow|tmp.*\.arrow"
                            rf"|\.{re.escape(_OUTPUT_MARKER)}\.\d+\.tmp|\.hub-upload-.*|\.rebuild-.*")


def _build_output(name: str) -> bool:
    """Whether a file or folder of this name in a build folder is a build's own output, which --overwrite replaces."""
    return name in _BUILD_FILES or _BUILD_PATTERN.fullmatch(name) is not None


def _write_marker(out_dir: Path, summary: dict[str, Any]) -> None:
    """Write summary.json whole or not at all (a temporary file renamed over it, removed when it cannot be written:
    left in a new folder, it made the rerun refuse the folder as not a build's)."""
    temporary = out_dir / f".{_OUTPUT_MARKER}.{os.getpid()}.tmp"
    try:
        temporary.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        os.replace(temporary, out_dir / _OUTPUT_MARKER)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


class BuildWriteError(OSError):
    """The build folder could not be written (a full disk, a quota, a read-only folder); the message says what is
    left and how to go on, in one line."""


@contextlib.contextmanager
def _writing(out_dir: Path) -> Iterator[None]:
    """Turn an OSError of the writes into `out_dir` into a `BuildWriteError`: a full disk was a traceback (two, from
    `datasets`' Arrow writer: its close failed too)."""
    try:
        yield
    except BuildWriteError:
        raise
    except OSError as error:
        if isinstance(error, (FileNotFoundError, FileExistsError)):
            raise
        remedy = "free space there" if error.errno in NO_ROOM_ERRNOS - {errno.EROFS} else "make it writable"
        if unfinished_build(out_dir):
            left = ("the folder is marked as an unfinished build (summary.json status \"building\"), which the "
                    f"trainer refuses: {remedy} and rerun the same command with --overwrite")
        else:
            left = f"nothing in it was changed: {remedy} and rerun the same command"
        raise BuildWriteError(f"could not write the build into {out_dir}: {write_failure_reason(error)}; {left}") from None


def _reset_out_dir(out_dir: Path, name: str, keep: Path | None = None) -> None:
    """Remove a previous build (checked by :func:`_check_out_dir`) only once the new one has been read.

    The folder is marked as a build in progress (summary.json, status "building") before anything in it is removed
    and until the build's own summary replaces it: a build killed at any moment (a removal, rejects.jsonl, the
    Arrow files) leaves a folder that the same command with --overwrite replaces, instead of one it refuses to
    delete ("holds no summary.json of a build") until the user removes it by hand."""
    marker = {"recipe": name, "status": _BUILDING, "rows": None, "sources": {}}
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_marker(out_dir, marker)
    for path in list(out_dir.iterdir()):
        # Only a build's own files: anything put there while this build read its sources stays.
        if path.name == _OUTPUT_MARKER or not _build_output(path.name) or path == keep:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


_STAGING_PREFIX = ".rebuild-"


def _staging_folder(out_dir: Path) -> Path:
    """A new hidden folder inside `out_dir` that a rebuild over a good build writes into; the staging folders of
    earlier failed rebuilds (their rejects, outdated now) are removed."""
    for path in out_dir.glob(f"{_STAGING_PREFIX}*"):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
    return Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=out_dir))


def _swap_in(staging: Path, out_dir: Path, name: str) -> None:
    """Replace the build in `out_dir` by the complete one in `staging`: renames within one folder, summary.json last.
    Killed midway, `out_dir` is marked as building (`_reset_out_dir`), which the same command replaces."""
    _reset_out_dir(out_dir, name, keep=staging)
    for path in staging.iterdir():
        if path.name != _OUTPUT_MARKER:
            os.replace(path, out_dir / path.name)
    os.replace(staging / _OUTPUT_MARKER, out_dir / _OUTPUT_MARKER)
    staging.rmdir()


def _given_image_root(recipe: Recipe, data_root: Path, params: dict[str, Any] | None) -> Path | None:
    """The image root a recipe's `image_root` parameter names (absolute, or relative to the data root, as the recipes
    read it), known before any source is read; None for a recipe that takes none."""
    value = (params or {}).get("image_root", recipe.parameters().get("image_root"))
    if not isinstance(value, (str, Path)):
        return None
    return Path(value) if Path(value).is_absolute() else data_root / value


def _write_hub_folder(pushed: Dataset, card: DatasetCard, hub_folder: Path, num_shards: int, *, out_dir: Path,
                      folders: dict[str, str | Path | None], local: list, check_images: bool,
                      image_root: str | Path | None = None) -> list[str]:
    """Write what a push uploads into `hub_folder` (the publish-folder rule of `modeling_croc.publish_folder`) and
    return the written paths. The files are written and scanned in a hidden staging folder inside `out_dir` and
    moved into `hub_folder` only once the scan passed, as the trainer's dry run does: a build interrupted or killed
    while it writes or scans leaves no unscanned file in `hub_folder` ready to upload by hand, and a leak leaves the
    folder as it was. Raises `UploadLeakError` (naming `hub_folder`) or `PublishFolderError`, one line each."""
    staging = Path(tempfile.mkdtemp(prefix=".hub-upload-", dir=out_dir))
    try:
        try:
            written = publish.write_hub_files(pushed, card, staging, num_shards, image_root=image_root)
        except OSError as error:
            if error.filename is None or Path(staging) in Path(os.path.abspath(error.filename)).parents:
                raise
            # An image that did not read as it was embedded: a folder, a file gone or unreadable, which only the image
            # check (skipped, or passed before the file changed) would have rejected as a row.
            unchecked = " (the images were not checked: build without --skip-image-check to reject such rows)"
            raise ValueError(f"cannot embed the image {error.filename} into {publish.HUB_FOLDER_OPTION} {hub_folder}: "
                             f"{error.strerror or error}{'' if check_images else unchecked}; nothing was written "
                             "there") from None
        try:
            check_upload_set(staging, written, folders=local, dataset_rows=True)
        except UploadLeakError as error:
            # Named by the folder the user gave: the staging folder is gone when the message is read.
            message = str(error).replace(f"refusing to publish {staging}:", f"refusing to publish {hub_folder}:", 1)
            raise UploadLeakError(message, error.findings) from None
        prepare_publish_folder(hub_folder, written, option=publish.HUB_FOLDER_OPTION, keep_clear_of=folders)
        # Moved through a hidden folder inside it: on another, full disk a shard cut short stayed beside a marker
        # listing every shard, a set that looked whole.
        try:
            fill_publish_folder(staging, written, hub_folder, move=True)
        except OSError as error:
            raise BuildWriteError(f"could not write {publish.HUB_FOLDER_OPTION} {hub_folder}: "
                                  f"{write_failure_reason(error)}; none of its files were left there (the build in "
                                  f"{out_dir} is complete): free space there and rerun the same command with "
                                  "--overwrite") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def _llava_rows(dataset: Dataset, batch_size: int = 10_000) -> Iterator[dict[str, Any]]:
    """Kept rows in the original LLaVA format: text-only rows carry no `image` key at all, because the
    LLaVA training code tests `'image' in row`, not its value."""
    for batch in dataset.iter(batch_size=batch_size):
        for i in range(len(batch["id"])):
            row = {"id": batch["id"][i]}
            if batch["image"][i] is not None:
                row["image"] = batch["image"][i]
            row["conversations"] = batch["conversations"][i]
            row["source"] = batch["source"][i]
            yield row


def _absolute(path: str | Path) -> Path:
    # Lexically absolute (`..` folded), symbolic links kept as the user named them.
    return Path(os.path.abspath(path))


def _summary(name: str, seed: int, result: RecipeResult, report: ValidationReport, sources: list[str], *,
             check_images: bool, num_proc: int, command: str, data_root: Path) -> dict[str, Any]:
    per_source = counts_by_source(report, sources)
    empty = {"kept": 0, "dropped": 0, "dropped_by_reason": dict.fromkeys(report.counts, 0)}
    return {
        "recipe": name,
        "status": "ok",
        "seed": seed,
        "command": command,
        # Absolute, so the trainer finds the images from any working directory (`--data-root` may be relative).
        "data_root": str(_absolute(data_root)),
        "image_root": None if result.image_root is None else str(_absolute(result.image_root)),
        "image_check": check_images,
        "num_proc": num_proc,
        "params": result.params,
        "rows": {"read": len(sources), "kept": len(sources) - report.num_rejected, "dropped": report.num_rejected},
        "dropped_by_reason": report.counts,
        "notices": {"counts": report.notices, "examples": report.notice_examples,
                    "meaning": {name: NOTICES[name] for name in report.notices}},
        "sources": {p.name: {**p.provenance(), **per_source.get(p.name, empty)} for p in result.parts},
        "versions": {"datasets": datasets.__version__},
    }


def _lost_sources(summary: dict[str, Any]) -> list[str]:
    """One phrase per source that had rows taken and kept none, naming its main reject reason."""
    lost = []
    for name, source in summary["sources"].items():
        if source["taken"] and not source["kept"]:
            reasons = {reason: n for reason, n in source["dropped_by_reason"].items() if n}
            main = max(reasons, key=reasons.__getitem__) if reasons else "unknown"
            lost.append(f"source {name} kept none of its {source['taken']:,} rows ({main}: {reasons.get(main, 0):,}"
                        f"{', ...' if len(reasons) > 1 else ''})")
    return lost


def build_recipe(
    name: str,
    data_root: str | Path,
    out_dir: str | Path,
    *,
    seed: int = DEFAULT_SEED,
    params: dict[str, Any] | None = None,
    strict: bool = False,
    check_images: bool = True,
    num_proc: int = 1,
    export_jsonl: bool = True,
    overwrite: bool = False,
    push_to_hub: str | None = None,
    private: bool | None = None,
    hub_folder: str | Path | None = None,
    image_storage: str | None = None,
    command: str | None = None,
) -> BuildResult:
    """Build recipe `name` from `data_root` into `out_dir`.

    Args:
        params: the recipe's keyword parameters (the CLI's `--set key=value`).
        strict: raise :class:`StrictValidationError` if any row is rejected (summary.json and rejects.jsonl
            are still written, with status "failed", so the rejects can be inspected; no dataset is saved; over a
            finished build they go to the hidden staging folder the message names, the build staying whole; a
            rerun into a folder holding only a failed build replaces it without `overwrite`). Without
            it, a build whose every row is rejected, or one of whose sources kept none of the rows taken from it,
            raises `RejectedRowsError` (a `DataError`) the same way.
        check_images: check that every image stays under the image root, exists and decodes in full
            (`modeling_croc.images.load_image`); False: text checks only.
        num_proc: processes for the image checks.
        push_to_hub: a Hub dataset repo id to push the dataset (Parquet shards) and its card to; summary.json and
            rejects.jsonl stay in `out_dir`. The upload is scanned for tokens and local paths first
            (`modeling_croc.upload_scan`).
        hub_folder: write what `push_to_hub` would upload (Parquet shards and card) into this folder instead of (or
            as well as) pushing: `datasets.load_dataset(hub_folder)` reads it. No network. The folder must be new,
            empty or an earlier hub folder holding no symbolic link, outside `out_dir`, `data_root` and an image root
            given as a parameter (checked before any source is read). The files are written and scanned in a staging
            folder inside `out_dir` and moved into it only once the scan passed.
        image_storage: how the pushed rows hold images (`data_recipes.publish.IMAGE_STORAGES`): `embedded` (the
            default when pushing: a `datasets.Image` column, the bytes in the shards) or `path`. The build folder
            itself always keeps the paths, for local training.
        command: how the build was invoked, for the card (the CLI passes its command line).
    """
    started = time.perf_counter()
    for option, value in (("--push-to-hub", push_to_hub), ("--hub-folder", hub_folder)):
        if value is not None and str(value) == "":
            # `--push-to-hub "$REPO"` with REPO unset: the publish the user asked for would be skipped silently.
            raise ValueError(f"{option} is empty (an unset variable in the command?); give a value, or leave "
                             f"{option} out")
    # `--out=~/x` reaches here unexpanded (the shell expands `~` only at the start of a word).
    data_root, out_dir = Path(data_root).expanduser(), Path(out_dir).expanduser()
    hub_folder = Path(hub_folder).expanduser() if hub_folder is not None else None
    image_storage = image_storage or "embedded"
    if image_storage not in publish.IMAGE_STORAGES:
        raise ValueError(f"image_storage must be one of {publish.IMAGE_STORAGES}, got {image_storage!r}")
    recipe = get_recipe(name)
    params = recipe.check_params(params)
    if out_dir.resolve() in (data_root.resolve(), *data_root.resolve().parents):
        # `--data-root builds/x/raw --out builds/x --overwrite`: the downloads were read, then deleted with the
        # previous build (and their images rejected as missing). Links resolved: the folders as they are on disk.
        raise FileExistsError(f"--data-root {data_root} is inside --out {out_dir}, which a build empties: choose an "
                              "--out outside the data root")
    _check_out_dir(out_dir, overwrite)
    if push_to_hub:
        try:
            validate_repo_id(push_to_hub)
        except HFValidationError as error:
            raise ValueError(f"--push-to-hub {push_to_hub!r} is not a valid Hub dataset repo id ({error}); pass "
                             "NAME or USER/NAME") from None
        # The push comes after the whole build (hours of image checks for a full mixture): a Hub switched off here
        # is refused now, in one line, as the trainer refuses push_to_hub, not with huggingface_hub's traceback then.
        if is_offline_mode():
            raise ValueError("--push-to-hub needs the Hub, which is switched off here (HF_HUB_OFFLINE=1): unset "
                             "HF_HUB_OFFLINE, or write what would be uploaded to a folder with --hub-folder DIR")
    if hub_folder:  # before any source is read; checked again right before writing
        # The image root a parameter names may lie outside the data root (`--set image_root=/data/scenes`).
        check_publish_folder(hub_folder, option=publish.HUB_FOLDER_OPTION, keep_clear_of=publish.build_folders(
            out_dir, data_root, _given_image_root(recipe, data_root, params)))
    command = command or f"build_recipe({name!r}, {str(data_root)!r}, {str(out_dir)!r}, seed={seed}, params={params!r})"

    # A good build being replaced stays whole until the new one is: a failed rebuild (--strict, a missing image
    # mount) left only its rejects, and the trainer then found neither a build nor Parquet there.
    replacing = _build_summary(out_dir) or {}
    staged = replacing.get("status") == "ok"
    result = recipe(data_root, seed=seed, **(params or {}))
    with _writing(out_dir):
        into = _staging_folder(out_dir) if staged else out_dir
        if not staged:
            _reset_out_dir(out_dir, name)
    kept_note = (f" (the previous build in {out_dir} is unchanged; this attempt's summary.json and rejects.jsonl are "
                 f"in {into})") if staged else ""
    parts = [p.dataset for p in result.parts if len(p.dataset)]
    dataset = concatenate_datasets(parts) if parts else empty_dataset()
    logger.info("%s: read %d rows from %d source(s); validating", name, len(dataset), len(result.parts))
    image_root = None if result.image_root is None else _absolute(result.image_root)
    report = validate_dataset(dataset, image_root, check_images=check_images, num_proc=num_proc)

    # Arrow-level column read: iterating `dataset["source"]` row by row costs ~1.5 s per 100K rows.
    sources = dataset.select_columns(["source"]).to_dict()["source"]
    summary = _summary(name, seed, result, report, sources, check_images=check_images, num_proc=num_proc,
                       command=command, data_root=data_root)
    with _writing(out_dir):
        write_rejects(into / "rejects.jsonl", dataset, report)
    everything_rejected = len(dataset) > 0 and report.num_rejected == len(dataset)
    lost = _lost_sources(summary)
    if (strict and report.num_rejected) or everything_rejected or not len(dataset) or lost:
        summary["status"] = _FAILED
        with _writing(out_dir):
            _write_marker(into, summary)
        if not len(dataset):
            # Nothing read keeps no row either (an empty annotation file, every count 0): a build "ok" with no row
            # would only fail later, in the trainer, with no word of why.
            raise RejectedRowsError(f"no rows were read from the {len(result.parts)} source(s) of {name} (an empty "
                                    f"annotation file, or every count 0): nothing to build{kept_note}")
        if everything_rejected and not strict:
            # An empty build is never what was asked for (a wrong image root, a file of the wrong shape).
            raise RejectedRowsError(f"every one of the {len(dataset):,} rows read was rejected ({format_counts(report.counts)}); "
                            f"rejected rows with their reasons: {into / 'rejects.jsonl'}{kept_note}")
        if strict and report.num_rejected:
            by_source = {s: v["dropped_by_reason"] for s, v in summary["sources"].items()}
            error = StrictValidationError(report.counts, by_source, into / "rejects.jsonl")
            error.args = (f"{error}{kept_note}",)
            raise error
        # A whole source gone (its images not unpacked, every caption with two markers) under status ok: the
        # mixture trained on was not the one asked for, with nothing said.
        raise RejectedRowsError(f"{'; '.join(lost)}: a build does not drop a whole source; fix it or leave it out "
                                f"with --set counts.NAME=0 (or count=0); rejected rows with their reasons: "
                                f"{into / 'rejects.jsonl'}{kept_note}")

    kept = kept_rows(dataset, report)
    with _writing(out_dir):
        kept.save_to_disk(str(into))
        if export_jsonl:
            write_jsonl(into / "data.jsonl", _llava_rows(kept))
    if push_to_hub or hub_folder:
        # No repo until the push succeeded (see the end): a failed or refused push recorded it all the same, and a
        # model trained on the build then credited a repo holding no data, or an older version of it.
        summary["hub"] = {"repo": None, "folder": None if hub_folder is None else str(hub_folder),
                          "image_storage": image_storage, "private": None}

    def card_for(storage: str, record: dict[str, Any], published: bool = False) -> DatasetCard:
        return build_card(record, pretty_name=result.pretty_name, licence_ids=[p.licence_id for p in result.parts],
                          hub_ids=[p.hub_id for p in result.parts if p.hub_id], image_storage=storage,
                          published=published)

    card = card_for("path", summary)
    with _writing(out_dir):
        card.save(into / "README.md")
        summary["elapsed_s"] = round(time.perf_counter() - started, 3)
        _write_marker(into, summary)
        if staged:
            _swap_in(into, out_dir, name)
    logger.info("%s: kept %d, rejected %d (%s), notices: %s -> %s", name, len(kept), report.num_rejected,
                format_counts(report.counts), format_counts(report.notices), out_dir)
    if push_to_hub or hub_folder:
        if image_storage == "path":
            logger.warning("pushing image paths only: the images stay on this machine (image_storage='path')")
        pushed = publish.hub_dataset(kept, result.image_root, image_storage)
        num_shards = publish.shard_count(pushed)
        # What goes up names no folder of this machine; the local card and summary keep them.
        pushed_card = card_for(image_storage, publish.public_summary(summary, out_dir), published=True)
        if hub_folder:
            folders = publish.build_folders(out_dir, data_root, image_root)
            # The source files read from outside the data root are this machine's paths too.
            local = [hub_folder, *folders.values(), *publish.source_paths(summary)]
            written = _write_hub_folder(pushed, pushed_card, hub_folder, num_shards, out_dir=out_dir, folders=folders,
                                        local=local, check_images=check_images, image_root=result.image_root)
            logger.info("%s: what --push-to-hub uploads written to %s (%d shards)", name, hub_folder, num_shards)
        if push_to_hub:
            try:
                if hub_folder:
                    commit = hub.push_folder(hub_folder, written, push_to_hub, private=private, folders=local)
                else:
                    commit = hub.push_build(pushed, pushed_card, out_dir, push_to_hub, private=private,
                                            num_shards=num_shards, image_root=result.image_root)
            except hub.HubPushError as error:
                raise hub.HubPushError(f"{error}; the build in {out_dir} is complete (summary.json names no repo): "
                                       "rerun the same command with --overwrite to push it again") from None
            # The repo as the Hub names it (`NAME` is created under the user's namespace), and its visibility as the
            # Hub holds it: an existing private repo stays private without --private, and a model card built from
            # this summary names only a public one.
            repo_id = commit.repo_url.repo_id
            summary["hub"].update(repo=repo_id, private=bool(private) or hub.repo_is_private(repo_id))
            with _writing(out_dir):
                _write_marker(out_dir, summary)
    return BuildResult(out_dir, kept, summary, card)
