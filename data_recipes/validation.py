"""Row validation that never loses data silently: the one validator of the recipe builder and of the trainer.

Each row gets at most one reject reason (the first failing check, in the order of :data:`REJECT_REASONS`);
rejected rows are counted per reason, written to `rejects.jsonl` with the reason and what was found, and reported.
The builder (`data_recipes.build`) and the trainer, for every source it reads (a LLaVA JSON/JSONL file, a build
folder, a pushed dataset or a folder of Parquet files, `trainer.data_loading`), call :func:`validate_dataset`, so a
row means the same thing everywhere.

Order: what `normalise_row` could not represent (not an object, several images, text that is not Unicode), then the
turns (cheap), then duplicates, then the image path (it must stay under the image root), then the image itself:
each distinct file once (mix665K has several rows per COCO image), optionally in a process pool, or the bytes a
`datasets.Image` column embeds. How much of an image is read is the `image_check` mode: "exists" (the file is
there and not empty, or the embedded bytes are), "header" (also its size, against the aspect-ratio and pixel limits
of `modeling_croc.images.ImageLimits`), "decode" (also every pixel, by `modeling_croc.images.load_image`, the reader
the trainer and the chat use too).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import statistics
import time
import unicodedata
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from datasets import Dataset
from datasets import Image as DatasetsImage

from modeling_croc.constants import IMAGE_CHECK_MODES, IMAGE_TOKEN
from modeling_croc.images import (
    IMAGE_REJECT_REASONS,
    ImageFileError,
    ImageLimits,
    check_image_header,
    check_image_path,
    load_image,
    resolve_image_path,
)

from .io import DataError
from .schema import PROBLEM_COLUMN

logger = logging.getLogger(__name__)

REJECT_REASONS: dict[str, str] = {
    "malformed_row": "the record is not an object with a `conversations` list of {from, value} turns",
    "multiple_images": "the row lists several images; the Croc row schema holds one image per row",
    # normalise_row finds it while reading the row, so it is decided before the turns are checked.
    "invalid_text": "a text of the row (turn, id or image path) is not Unicode (a lone surrogate escape such as \\ud800)",
    "unknown_role": "a turn's `from` is neither human nor gpt",
    "empty_turn": "a turn's text is empty or only whitespace and invisible characters (zero-width space, soft hyphen)",
    "bad_turn_order": "turns must start with human, alternate human/gpt and end with a gpt turn",
    "no_image_marker": f"the row has an image but no {IMAGE_TOKEN} marker",
    "too_many_image_markers": f"more {IMAGE_TOKEN} markers than images (>1 on an image row, any on a text-only row), "
                              "or one in an answer (gpt) turn, which cannot hold the image",
    "duplicate_row": "an earlier row has the same id, image and turns",
    **IMAGE_REJECT_REASONS,
}

# Counted and reported, but the rows are kept: mix665K reuses an image's id for different questions about it.
NOTICES: dict[str, str] = {
    "duplicate_id": "rows kept that share their id with an earlier row whose image or turns differ",
}

# Seconds between two progress lines of a pass over every row or image (the start check, the image check, the
# trainer's length check): on a 1.5M-row mixture each takes minutes, which without a line looks like a hang.
PROGRESS_SECONDS = 30.0


class Progress:
    """Logs `what: N of TOTAL` at most every `PROGRESS_SECONDS` while a long pass advances; silent for a short one."""

    def __init__(self, what: str, total: int) -> None:
        self.what, self.total, self.last = what, total, time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last >= PROGRESS_SECONDS:
            self.last = now
            logger.info("%s: %s of %s", self.what, f"{min(done, self.total):,}", f"{self.total:,}")


_ROLES = ("human", "gpt")
_EXAMPLES = 5  # ids quoted per notice in reports


def check_conversation(conversations: Sequence[Mapping[str, str]], has_image: bool) -> str | None:
    """Return the reject reason for a row's turns, or None when they are well formed (`conversation_problem` also
    says what was found)."""
    return conversation_problem(conversations, has_image)[0]


# Characters that show nothing though Unicode gives them no format category: the Hangul fillers, the blank braille
# pattern, the combining grapheme joiner and the variation selectors (a lone U+FE0F).
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f") | frozenset(map(chr, range(0xFE00, 0xFE10))) \
    | frozenset(map(chr, range(0xE0100, 0xE01F0)))


def _blank(text: str) -> bool:
    """Whether `text` shows nothing: whitespace and invisible characters only (Unicode category Cf: a zero-width
    space, a soft hyphen, a byte-order mark; and `_INVISIBLE`), which `str.strip` keeps: an answer of "\u200b"
    trained 2-4 tokens of nothing."""
    return all(char.isspace() or char in _INVISIBLE or unicodedata.category(char) == "Cf" for char in text)


def conversation_problem(conversations: Sequence[Mapping[str, str]], has_image: bool) -> tuple[str | None, str]:
    """(reject reason, what was found) for a row's turns, or (None, "") when they are well formed. Turns read from a
    pushed dataset may hold nulls (a missing role or value): those are rejects too, never errors. The detail names
    the turn, so `rejects.jsonl` says which one to fix."""
    if not isinstance(conversations, Sequence) or isinstance(conversations, str):
        return "malformed_row", f"`conversations` is {type(conversations).__name__}, not a list of turns"
    for position, turn in enumerate(conversations):
        if not isinstance(turn, Mapping):
            return "malformed_row", f"turn {position} is {type(turn).__name__}, not an object with from/value"
    for position, turn in enumerate(conversations):
        if turn.get("from") not in _ROLES:
            return "unknown_role", f"turn {position} is from {turn.get('from')!r}, not human or gpt"
    for position, turn in enumerate(conversations):
        value = turn.get("value")
        if not isinstance(value, str) or _blank(value):
            return "empty_turn", f"turn {position} ({turn['from']}) is {'null' if value is None else 'empty'}"
    roles = [turn["from"] for turn in conversations]
    # An odd number of turns ends on an unanswered question: nothing to supervise for it.
    if not roles:
        return "bad_turn_order", "no turns"
    if len(roles) % 2 or any(role != _ROLES[i % 2] for i, role in enumerate(roles)):
        return "bad_turn_order", f"turns are {', '.join(roles)}"
    # A marker in an answer stands for no image the answer could hold: rendering dropped it from the answer (an answer
    # of "<image>" alone trained an empty answer, "It shows <image> a cat" trained "It shows  a cat") and opened a
    # question with the image instead, a row the user never wrote.
    answer = next((i for i, turn in enumerate(conversations) if turn["from"] == "gpt" and IMAGE_TOKEN in turn["value"]),
                  None)
    if answer is not None:
        alone = not conversations[answer]["value"].replace(IMAGE_TOKEN, "").strip()
        return "too_many_image_markers", (f"turn {answer} (gpt) holds {'only ' if alone else ''}{IMAGE_TOKEN}: an "
                                          "answer cannot hold the image; the marker belongs in a human turn")
    markers = sum(turn["value"].count(IMAGE_TOKEN) for turn in conversations)
    if has_image and markers == 0:
        return "no_image_marker", f"the row has an image but no {IMAGE_TOKEN} in its turns"
    if markers > (1 if has_image else 0):
        return "too_many_image_markers", (f"{markers} {IMAGE_TOKEN} markers on a row with one image" if has_image else
                                          f"{markers} {IMAGE_TOKEN} marker(s) on a row without an image")
    return None, ""


def check_image_file(
    path: str,
    decode: bool | None = None,
    *,
    mode: str | None = None,
    limits: ImageLimits | None = None,
    image_processor: Any = None,
) -> tuple[str | None, str]:
    """Check one image file. Returns (reason or None, detail).

    `mode` (one of `IMAGE_CHECK_MODES`, default "decode") says how much is read: "exists" only that the file is there
    and not empty; "header" also its width and height, checked against `limits` and the footprint of
    `image_processor` (`modeling_croc.images.check_image_header`); "decode" also the whole image, decoded and
    converted as training reads it (`modeling_croc.images.load_image`, which applies the same limits first). The
    older `decode=True/False` means "decode"/"exists"; pass one of `decode` and `mode`, not both.
    """
    if decode is not None:
        if mode is not None:
            raise ValueError(f"check_image_file takes mode= or the older decode=, not both (got mode={mode!r}, "
                             f"decode={decode!r})")
        mode = "decode" if decode else "exists"
    mode = "decode" if mode is None else mode
    if mode not in IMAGE_CHECK_MODES:
        raise ValueError(f"image check mode must be one of {IMAGE_CHECK_MODES}, got {mode!r}")
    try:
        if mode == "decode":
            load_image(path, limits=limits, image_processor=image_processor)
        elif mode == "header":
            check_image_header(path, limits, image_processor)
        else:
            check_image_path(path)
    except ImageFileError as error:
        return error.reason, error.detail
    return None, ""


def check_image_files(
    paths: Sequence[str],
    *,
    decode: bool | None = None,
    mode: str | None = None,
    limits: ImageLimits | None = None,
    image_processor: Any = None,
    num_proc: int = 1,
) -> list[tuple[str | None, str]]:
    """Check many image files as `check_image_file` does (same `decode` / `mode`, `limits`, `image_processor`), in
    `num_proc` processes when > 1 (the limits and the image processor are pickled to each)."""
    check = partial(check_image_file, decode=decode, mode=mode, limits=limits, image_processor=image_processor)
    progress = Progress("image files checked", len(paths))
    results: list[tuple[str | None, str]] = []
    if num_proc <= 1 or len(paths) < 2:
        for path in paths:
            results.append(check(path))
            progress.update(len(results))
        return results
    chunksize = max(1, len(paths) // (num_proc * 16))
    with ProcessPoolExecutor(max_workers=num_proc) as pool:
        for result in pool.map(check, paths, chunksize=chunksize):
            results.append(result)
            progress.update(len(results))
    return results


@dataclass
class ValidationReport:
    """Per-row outcome of validation: `reasons[i]` is None for a kept row; `notices` counts kept rows worth a
    mention (see :data:`NOTICES`), with up to five example ids each in `notice_examples`."""

    reasons: list[str | None]
    details: list[str]
    notices: dict[str, int] = field(default_factory=lambda: dict.fromkeys(NOTICES, 0))
    notice_examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def kept_indices(self) -> list[int]:
        return [i for i, r in enumerate(self.reasons) if r is None]

    @property
    def rejected_indices(self) -> list[int]:
        return [i for i, r in enumerate(self.reasons) if r is not None]

    @property
    def counts(self) -> dict[str, int]:
        """Rejected rows per reason, every known reason present (0 when none)."""
        found = Counter(r for r in self.reasons if r is not None)
        return {reason: found.get(reason, 0) for reason in REJECT_REASONS}

    @property
    def num_rejected(self) -> int:
        return sum(r is not None for r in self.reasons)


def format_counts(counts: Mapping[str, int]) -> str:
    """`reason=n, ...` for the non-zero counts, "none" when all are zero: the one-line form of every report."""
    return ", ".join(f"{reason}={n:,}" for reason, n in counts.items() if n) or "none"


def exceeds_reject_budget(bad: int, seen: int, max_fraction: float) -> bool:
    """The rule that stops a run for bad rows, at its start (rejected by validation) and during training (images
    that cannot be read): more than `max_fraction` of the rows seen, and always more than one, so a single bad file
    early on does not end a run that has seen ten rows."""
    return bad > max(1.0, max_fraction * seen)


# The confidence with which a training run's bad-row rate must be over its budget: the one-sided 99.9% quantile.
_RATE_CONFIDENCE_Z = statistics.NormalDist().inv_cdf(0.999)


def rate_exceeds_reject_budget(bad: int, seen: int, max_fraction: float) -> bool:
    """The rule that stops a run for rows that fail in training. The rows seen so far are a sample of the run's, so
    their ratio is an estimate: the run stops once the bad-row rate is over `max_fraction` with 99.9% confidence
    (the lower bound of the Wilson score interval is above it), and more than one row is bad. The plain ratio
    (`exceeds_reject_budget`) stopped about a third of the runs over a source with half the budget's rate
    (0.5% at 1%), on two bad images early on, and at the same step again on every rerun (the order is seeded)."""
    if bad <= 1:
        return False
    seen = max(seen, bad)  # counts restored from an edited report cannot make the rate exceed 1
    rate, z2 = bad / seen, _RATE_CONFIDENCE_Z**2
    spread = _RATE_CONFIDENCE_Z * math.sqrt(rate * (1 - rate) / seen + z2 / (4 * seen**2))
    return (rate + z2 / (2 * seen) - spread) / (1 + z2 / seen) > max_fraction


class RejectedRowsError(DataError):
    """More rows were rejected than a run or a build accepts (any under strict mode, every row of a build, more than
    the trainer's budget); the message is one line with the counts and the rejects file."""


class StrictValidationError(RejectedRowsError):
    """Raised under `strict=True` when any row is rejected. One line: the counts, per source, and the rejects file."""

    def __init__(self, counts: Mapping[str, int], by_source: Mapping[str, Mapping[str, int]], rejects_path: Path | None):
        self.counts = dict(counts)
        self.by_source = {k: dict(v) for k, v in by_source.items()}
        total = sum(self.counts.values())
        parts = [f"strict mode: {total} row(s) rejected ({format_counts(self.counts)})"]
        for source, counts in self.by_source.items():
            if any(counts.values()):
                parts.append(f"source {source}: {format_counts(counts)}")
        if rejects_path is not None:
            parts.append(f"rejected rows with their reasons: {rejects_path}")
        super().__init__("; ".join(parts))


def _problem(value: str) -> tuple[str, str]:
    reason, _, detail = value.partition(": ")
    if reason not in REJECT_REASONS:  # a problem written by other code: keep it, under the generic reason
        return "malformed_row", value
    return reason, detail


def _content_key(image: Any, conversations: Any) -> bytes:
    text = json.dumps([image, conversations], ensure_ascii=False, sort_keys=True)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def _image_identity(image: Any) -> str | None:
    """What identifies a row's image for duplicate detection: its path, or for embedded bytes without a file name,
    their hash."""
    if image is None or isinstance(image, str):
        return image
    if image.get("path"):
        return str(image["path"])
    data = image.get("bytes") or b""
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _Duplicates:
    """Rows with an id seen before: identical ones (image and turns) are rejected, different ones counted.

    Only the first row index per id is held; contents are hashed only for ids that repeat, so a 1.5M-row mixture
    costs one dict of ids."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.first: dict[str, int] = {}
        self.keys: dict[str, set[bytes]] = {}
        self.notices = 0
        self.examples: list[str] = []

    def check(self, index: int, row_id: str, image: Any, conversations: Any) -> tuple[str | None, str]:
        first = self.first.setdefault(row_id, index)
        if first == index:
            return None, ""
        if row_id not in self.keys:
            earlier = self.dataset[first]
            self.keys[row_id] = {_content_key(_image_identity(earlier["image"]), earlier["conversations"])}
        key = _content_key(_image_identity(image), conversations)
        if key in self.keys[row_id]:
            return "duplicate_row", f"same id, image and turns as row {first}"
        self.keys[row_id].add(key)
        self.notices += 1
        if len(self.examples) < _EXAMPLES:
            self.examples.append(display_id(row_id))
        return None, ""


def _undecoded(dataset: Dataset) -> Dataset:
    """`dataset` with a `datasets.Image` column read as `{"bytes", "path"}` instead of decoded images."""
    feature = dataset.features.get("image")
    if isinstance(feature, DatasetsImage) and feature.decode:
        return dataset.cast_column("image", DatasetsImage(decode=False))
    return dataset


def validate_dataset(
    dataset: Dataset,
    image_root: Path | None,
    *,
    check_images: bool = True,
    decode_images: bool = True,
    image_check: str | None = None,
    limits: ImageLimits | None = None,
    image_processor: Any = None,
    num_proc: int = 1,
    batch_size: int = 10_000,
) -> ValidationReport:
    """Validate every row of a dataset with the row schema.

    A row's `image` is a path (resolved against `image_root`, which it must stay under) or, in a pushed dataset, a
    `datasets.Image` value (its embedded bytes; a value holding only a path is a path). `image_check` (one of
    `IMAGE_CHECK_MODES` or "none") says how much of each image is read; without it, `check_images=False` means "none"
    and `decode_images` "decode" (the builder) or "exists". "none" still applies the text and duplicate checks.
    `limits` and `image_processor` set the size limits of "header" and "decode" (`modeling_croc.images`).
    """
    if image_check is None:
        image_check = "none" if not check_images else "decode" if decode_images else "exists"
    if image_check not in (*IMAGE_CHECK_MODES, "none"):
        raise ValueError(f"image_check must be one of {(*IMAGE_CHECK_MODES, 'none')}, got {image_check!r}")
    dataset = _undecoded(dataset)
    embedded = isinstance(dataset.features.get("image"), DatasetsImage)
    columns = ["id", "image", "conversations"] + ([PROBLEM_COLUMN] if PROBLEM_COLUMN in dataset.column_names else [])
    reasons: list[str | None] = []
    details: list[str] = []
    images: list[str | None] = []  # per row: a path to check, or None (no image, or its bytes are checked below)
    duplicates = _Duplicates(dataset)
    progress = Progress("rows checked", len(dataset))
    # Embedded images travel with the rows: read them in small batches.
    for batch in dataset.select_columns(columns).iter(batch_size=256 if embedded else batch_size):
        progress.update(len(reasons))
        problems = batch.get(PROBLEM_COLUMN) or [None] * len(batch["id"])
        for row_id, image, conversations, problem in zip(batch["id"], batch["image"], batch["conversations"],
                                                         problems):
            index = len(reasons)
            if isinstance(image, Mapping) and image.get("bytes") is None and not image.get("path"):
                image = None  # an empty Image value: a text row
            reason, detail = _problem(problem) if problem else conversation_problem(conversations, image is not None)
            if reason is None:
                reason, detail = duplicates.check(index, row_id, image, conversations)
            if reason is None and isinstance(image, Mapping) and image.get("bytes") is not None \
                    and image_check != "none":
                reason, detail = check_image_bytes(image["bytes"], mode=image_check, limits=limits,
                                                   image_processor=image_processor)
            reasons.append(reason)
            details.append(detail)
            images.append(image.get("path") if isinstance(image, Mapping) and image.get("bytes") is None else
                          image if isinstance(image, str) else None)
    if image_check != "none":
        _check_images(reasons, details, images, image_root, mode=image_check, limits=limits,
                      image_processor=image_processor, num_proc=num_proc)
    return ValidationReport(reasons, details, {"duplicate_id": duplicates.notices},
                            {"duplicate_id": duplicates.examples} if duplicates.examples else {})


def check_image_bytes(data: bytes, *, mode: str = "decode", limits: ImageLimits | None = None,
                      image_processor: Any = None) -> tuple[str | None, str]:
    """`check_image_file` for an image embedded in a row (a `datasets.Image` value's bytes)."""
    if not data:
        return "unreadable_image", "the embedded image is empty (0 bytes)"
    try:
        if mode == "decode":
            load_image(io.BytesIO(data), limits=limits, image_processor=image_processor)
        elif mode == "header":
            check_image_header(io.BytesIO(data), limits, image_processor)
    except ImageFileError as error:
        return error.reason, error.detail
    return None, ""


def _check_images(reasons: list[str | None], details: list[str], images: list[str | None], image_root: Path | None,
                  *, mode: str, limits: ImageLimits | None, image_processor: Any, num_proc: int) -> None:
    pending = [i for i, (image, reason) in enumerate(zip(images, reasons)) if image is not None and reason is None]
    if pending and image_root is None:
        raise ValueError("rows have images but the recipe gave no image root; pass one or skip image checks")
    paths: dict[int, str] = {}
    for i in pending:
        try:
            paths[i] = str(resolve_image_path(image_root, images[i]))
        except ImageFileError as error:
            reasons[i], details[i] = error.reason, error.detail
    unique = sorted(set(paths.values()))
    results = dict(zip(unique, check_image_files(unique, mode=mode, limits=limits, image_processor=image_processor,
                                                 num_proc=num_proc)))
    for i, path in paths.items():
        reasons[i], details[i] = results[path]


def counts_by_source(report: ValidationReport, sources: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Kept/dropped per source and per reason, for summaries and strict errors."""
    out: dict[str, dict[str, Any]] = {}
    for source, reason in zip(sources, report.reasons):
        entry = out.setdefault(source, {"kept": 0, "dropped": 0, "dropped_by_reason": dict.fromkeys(REJECT_REASONS, 0)})
        if reason is None:
            entry["kept"] += 1
        else:
            entry["dropped"] += 1
            entry["dropped_by_reason"][reason] += 1
    return out


def display_id(row_id: Any) -> Any:
    """A row's id as a report shows it: a whole float as the integer it stands for ("2", not "2.0": pandas writes an
    integer id column holding a missing cell as floats), any other id as it is. Only what is shown changes: the rows
    keep their ids as read, so duplicate detection and the run record's `data_rows` (which a resume compares) see
    what they saw before. A text id stays as written, "2.0" included (a LLaVA JSON file's ids are read as text).
    The integer, not its text: rejects.jsonl writes it as the number the user's own id column holds (the text "2"
    matched no row of it, where 2.0 did)."""
    if isinstance(row_id, float) and math.isfinite(row_id) and row_id.is_integer():
        return int(row_id)
    return row_id


def rejected_rows(dataset: Dataset, report: ValidationReport) -> Iterator[dict[str, Any]]:
    """Every rejected row as written to `rejects.jsonl`: its reason, what was found, and the row itself (its id as
    `display_id` shows it)."""
    rejected = report.rejected_indices
    for index, row in zip(rejected, _undecoded(dataset).select(rejected)):
        row = {key: value for key, value in row.items() if key != PROBLEM_COLUMN}
        if "id" in row:
            row["id"] = display_id(row["id"])
        if isinstance(row.get("image"), Mapping):  # an embedded image: its file name, not its bytes
            row["image"] = row["image"].get("path") or "<embedded image>"
        yield {"reason": report.reasons[index], "detail": report.details[index], **row}


def write_jsonl(path: Path, rows: Iterator[dict[str, Any]] | Sequence[dict[str, Any]]) -> None:
    """One JSON object per line, UTF-8, replacing `path`."""
    with Path(path).open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_rejects(path: Path, dataset: Dataset, report: ValidationReport) -> None:
    """Write `rejects.jsonl`: every rejected row of `dataset` with its reason (an empty file when none)."""
    write_jsonl(path, rejected_rows(dataset, report))


def kept_rows(dataset: Dataset, report: ValidationReport) -> Dataset:
    """The rows validation kept, in the row schema (the `problem` column of freshly read rows dropped)."""
    kept = dataset.select(report.kept_indices) if report.num_rejected else dataset
    return kept.remove_columns(PROBLEM_COLUMN) if PROBLEM_COLUMN in kept.column_names else kept
