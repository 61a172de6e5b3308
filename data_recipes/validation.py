"""Row validation that never loses data silently.

Each row gets at most one reject reason (the first failing check, in the order of :data:`REJECT_REASONS`);
rejected rows are counted per reason, written to `rejects.jsonl` with the reason, and reported. Text
checks run first because they are cheap; image checks then run only on rows that passed them, each
distinct image file once (mix665K has several rows per COCO image), optionally in a process pool.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset

from modeling_croc.constants import IMAGE_TOKEN

REJECT_REASONS: dict[str, str] = {
    "empty_turn": "a turn's text is empty or only whitespace",
    "bad_turn_order": "turns must start with human, alternate human/gpt and end with a gpt turn",
    "no_image_marker": f"the row has an image but no {IMAGE_TOKEN} marker",
    "too_many_image_markers": f"more {IMAGE_TOKEN} markers than images (>1 on an image row, any on a text-only row)",
    "missing_image": "the image file does not exist under the image root",
    "unreadable_image": "PIL cannot open/verify the image file",
}

_ROLES = ("human", "gpt")


def check_conversation(conversations: Sequence[Mapping[str, str]], has_image: bool) -> str | None:
    """Return the reject reason for a row's turns, or None when they are well formed."""
    if any(not turn["value"].strip() for turn in conversations):
        return "empty_turn"
    roles = [turn["from"] for turn in conversations]
    # An odd number of turns ends on an unanswered question: nothing to supervise for it.
    if not roles or len(roles) % 2 or any(role != _ROLES[i % 2] for i, role in enumerate(roles)):
        return "bad_turn_order"
    markers = sum(turn["value"].count(IMAGE_TOKEN) for turn in conversations)
    if has_image and markers == 0:
        return "no_image_marker"
    if markers > (1 if has_image else 0):
        return "too_many_image_markers"
    return None


def check_image_file(path: str) -> tuple[str | None, str]:
    """Check one image file. Returns (reason or None, detail) — detail is the error text on failure."""
    if not os.path.isfile(path):
        return "missing_image", path
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as err:  # PIL raises many types (OSError, SyntaxError, struct.error...)
        return "unreadable_image", f"{type(err).__name__}: {err}"
    return None, ""


def check_image_files(paths: Sequence[str], *, num_proc: int = 1) -> list[tuple[str | None, str]]:
    """Check many image files, in `num_proc` processes when > 1."""
    if num_proc <= 1 or len(paths) < 2:
        return [check_image_file(p) for p in paths]
    chunksize = max(1, len(paths) // (num_proc * 16))
    with ProcessPoolExecutor(max_workers=num_proc) as pool:
        return list(pool.map(check_image_file, paths, chunksize=chunksize))


@dataclass
class ValidationReport:
    """Per-row outcome of validation: `reasons[i]` is None for a kept row."""

    reasons: list[str | None]
    details: list[str]

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


class StrictValidationError(ValueError):
    """Raised under `strict=True` when any row is rejected."""

    def __init__(self, counts: Mapping[str, int], by_source: Mapping[str, Mapping[str, int]], rejects_path: Path | None):
        self.counts = dict(counts)
        self.by_source = {k: dict(v) for k, v in by_source.items()}
        total = sum(self.counts.values())
        lines = [f"strict mode: {total} row(s) rejected"]
        lines += [f"  {reason}: {n}  ({REJECT_REASONS[reason]})" for reason, n in self.counts.items() if n]
        for source, counts in self.by_source.items():
            bad = {r: n for r, n in counts.items() if n}
            if bad:
                lines.append(f"  source {source}: " + ", ".join(f"{r}={n}" for r, n in bad.items()))
        if rejects_path is not None:
            lines.append(f"  rejected rows with their reasons: {rejects_path}")
        super().__init__("\n".join(lines))


def validate_dataset(
    dataset: Dataset,
    image_root: Path | None,
    *,
    check_images: bool = True,
    num_proc: int = 1,
    batch_size: int = 10_000,
) -> ValidationReport:
    """Validate every row of a dataset with the row schema.

    Image paths are resolved against `image_root`; `check_images=False` skips file checks (fast
    metadata-only builds) but still applies every text check.
    """
    reasons: list[str | None] = []
    images: list[str | None] = []
    for batch in dataset.select_columns(["image", "conversations"]).iter(batch_size=batch_size):
        for image, conversations in zip(batch["image"], batch["conversations"]):
            reasons.append(check_conversation(conversations, image is not None))
            images.append(image)
    details = [""] * len(reasons)
    if check_images:
        pending = {img for img, reason in zip(images, reasons) if img is not None and reason is None}
        if pending and image_root is None:
            raise ValueError("rows have images but the recipe gave no image root; pass one or skip image checks")
        unique = sorted(pending)
        results = dict(zip(unique, check_image_files([str(image_root / p) for p in unique], num_proc=num_proc)))
        for i, image in enumerate(images):
            if image is not None and reasons[i] is None:
                reasons[i], details[i] = results[image]
    return ValidationReport(reasons, details)


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
