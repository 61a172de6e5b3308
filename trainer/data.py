"""Rows -> model inputs, lazily: one row is rendered, tokenised, fitted to `model_max_length` and its image decoded
only when the trainer asks for it, so a 1.5M-row mixture starts training in seconds.

Labels are built segment by segment (see `modeling_croc.conversation`), never by re-tokenising the whole string
and searching for the answers in it, which is how LLaVA-style code ends up with every label silently masked when
the tokenizer changes. Each segment is tokenised as a continuation of the text before it, so the ids equal those of
the whole rendered string, which is what the processor's chat template renders at inference. Images go through the
processor's own image processor (`modeling_croc.with_image_aspect_ratio` sets how it pads), so training and
inference prepare pixels one way.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from data_recipes import DataError
from modeling_croc.constants import IGNORE_INDEX, IMAGE_TOKEN
from modeling_croc.conversation import ConversationTemplate, Segment, get_template
from modeling_croc.images import ImageFileError, load_image, resolve_image_path, to_rgb
from modeling_croc.processing_croc import pad_colour

logger = logging.getLogger(__name__)

# Key of a sample that stands in for the row asked for, whose image could not be read: that row's record ({id, index,
# image, reason, detail}), which the collator gathers into the batch's data report (`trainer.collator.DATA_REPORT_KEY`)
# for the trainer to count. Rows tried on the way to a replacement are only logged here: each is counted when the
# sampler asks for it, so every bad row counts once per epoch, like every row.
UNREADABLE_KEY = "unreadable_row"
# How many following image rows a row with an unreadable image may try before the dataset gives up: far more than a
# few bad files in a row, far fewer than a wrong image root (whose every row fails and which the trainer's stop rule
# reports first).
MAX_REPLACEMENT_TRIES = 64


def _turns(conversations: Any) -> list[Mapping[str, str]]:
    # `datasets` returns a list of structs as a list of dicts with `List(...)` features but as a dict of lists
    # with the older `Sequence(...)` ones; accept both.
    if isinstance(conversations, Mapping):
        return [
            {"from": role, "value": value}
            for role, value in zip(conversations["from"], conversations["value"])
        ]
    return list(conversations)


def has_image(value: Any) -> bool:
    """Whether a row's `image` holds an image: a path (a non-empty string), a decoded `datasets.Image` value (a PIL
    image) or an undecoded one (`{"bytes", "path"}`); None for text-only rows."""
    if value is None:
        return False
    if isinstance(value, str):
        return bool(value)
    if isinstance(value, Mapping):
        return bool(value.get("bytes") or value.get("path"))
    return True


def _fit(ids: list[int], labels: list[int], image_end: int, max_length: int) -> int:
    """Length to keep so that the row fits in `max_length`, 0 if it cannot be kept.

    Cuts from the end, so later turns go first and a partly fitting answer is shortened; a trailing prompt left
    without any answer token is dropped too. The image tokens (which end at `image_end`) are never cut into: a
    row whose image does not fit, or with no supervised token left, cannot be kept.
    """
    if image_end > max_length:
        return 0
    keep = max_length
    while keep > image_end and labels[keep - 1] == IGNORE_INDEX:
        keep -= 1
    return keep if any(label != IGNORE_INDEX for label in labels[:keep]) else 0


class CrocSupervisedDataset(torch.utils.data.Dataset):
    """Supervised rows for every Croc stage.

    Args:
        rows: a `datasets.Dataset` or a sequence of rows ``{"id", "image", "conversations", "source"}``; `image` is
            a path relative to `image_root`, or the image itself (a `datasets.Image` column: a PIL image, or
            ``{"bytes", "path"}`` undecoded), as in a dataset pushed by `data_recipes`.
        processor: a `CrocProcessor` (anything with `tokenizer`, `image_processor`, `image_token_id` and
            `num_image_tokens`), set up for the stage's image aspect ratio (`modeling_croc.with_image_aspect_ratio`).
        template: a name in `modeling_croc.conversation.TEMPLATES` ("plain" for stage 1, "vicuna_v1" after) or a
            template.
        image_root: folder the rows' `image` paths are relative to.
        model_max_length: the longest sequence, image tokens included.

    ``dataset[i]`` is ``{"input_ids": LongTensor(L), "labels": LongTensor(L), "pixel_values": FloatTensor(3, H, W)
    or None}`` (AnyRes processors: `(crops, 3, H, W)` plus `"image_sizes"`), L <= model_max_length: the image marker
    becomes as many image-token ids as the processor expands it to for that image, BOS
    starts the sequence, labels are -100 except on supervised tokens. It is None for a row that cannot be trained
    on (its image or first answer does not fit, or it has nothing supervised): such rows are counted in `stats`,
    logged, and dropped by `CrocDataCollator`.

    A row whose image cannot be read (missing, empty, corrupt, truncated, too large, outside the image root: see
    `modeling_croc.images.load_image`) never ends the run: ``dataset[i]`` returns the sample of the next image row
    (in index order, wrapping around) that loads, with ``sample["unreadable_row"]`` describing the row it replaces,
    so a batch keeps its size and the trainer counts it. The replacement depends only on the index and the files, so a
    resumed run sees the same samples. Images are read as RGB with transparency composited onto the colour `pad`
    uses (`modeling_croc.processing_croc.pad_colour`) and 16-bit grey rescaled.

    `stats` counts ``truncated`` (kept, cut to fit), ``skipped`` (not kept: the image or every answer token would
    be cut), ``all_masked`` (not kept: the template left nothing supervised) and ``unreadable`` (replaced: the image
    could not be read). The counts belong to the process that ran ``__getitem__``: with DataLoader workers, each
    worker has its own copy; the trainer's counts come with the batches (`trainer.data_report`).
    """

    def __init__(
        self,
        rows: Sequence[Mapping[str, Any]],
        processor: Any,
        template: str | ConversationTemplate = "vicuna_v1",
        image_root: str | os.PathLike = ".",
        model_max_length: int = 2048,
    ) -> None:
        self.rows = rows
        self.processor = processor
        self.template = get_template(template)
        self.image_root = Path(image_root)
        self.model_max_length = int(model_max_length)
        self.stats = {"truncated": 0, "skipped": 0, "all_masked": 0, "unreadable": 0}
        self._background = pad_colour(processor.image_processor)

        tokenizer = processor.tokenizer
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer needs an EOS token: it ends every supervised answer")
        self._tokenizer = tokenizer
        self._bos = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
        self._eos_token = tokenizer.eos_token
        # Text after a special token is tokenised as a continuation (no SentencePiece "▁" prefix): prefixing each
        # later segment with one and dropping its id reproduces what the whole string would give.
        self._anchor = tokenizer.eos_token
        self._anchor_ids = tokenizer.encode(self._anchor, add_special_tokens=False)
        self._image_token_id = int(processor.image_token_id)
        self._num_image_tokens = int(processor.num_image_tokens)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        index = int(index)
        try:
            return self._sample(self.rows[index])
        except ImageFileError as error:
            unreadable = [self._unreadable(self.rows[index], index, error)]
        # Replace the row by the next image row that yields a sample, so the batch keeps its size and its modality.
        for candidate in self._following_image_rows(index):
            row = self.rows[candidate]
            try:
                sample = self._sample(row)
            except ImageFileError as error:
                unreadable.append(self._unreadable(row, candidate, error))
                continue
            if sample is not None:
                sample[UNREADABLE_KEY] = unreadable[0]
                return sample
        last = unreadable[-1]
        raise DataError(f"row {last['id']!r} and the {len(unreadable) - 1} image row(s) tried after it have no "
                        f"readable image (last: {last['reason']}: {last['detail']}); is the image root "
                        f"{str(self.image_root)!r} right?")

    def _following_image_rows(self, index: int) -> list[int]:
        rows = self._image_rows
        start = int(np.searchsorted(rows, index, side="right"))
        order = np.concatenate([rows[start:], rows[:start]])
        return [int(i) for i in order[:MAX_REPLACEMENT_TRIES] if i != index]

    @cached_property
    def _image_rows(self) -> np.ndarray:
        """Indices of the image rows, ascending: the positive entries of `modality_lengths`, which reads the text and
        the image column's presence only (reading a `datasets.Image` column itself would decode every image)."""
        return np.flatnonzero(np.asarray(self.modality_lengths) > 0)

    def _unreadable(self, row: Mapping[str, Any], index: int, error: ImageFileError) -> dict[str, Any]:
        self.stats["unreadable"] += 1
        logger.warning("row %r (index %d): image %r cannot be read (%s: %s); replaced by the next readable image row",
                       row.get("id"), index, row.get("image"), error.reason, error.detail)
        return {"id": row.get("id"), "index": index, "image": row.get("image"), "reason": error.reason,
                "detail": error.detail}

    def _sample(self, row: Mapping[str, Any]) -> dict[str, torch.Tensor | None] | None:
        """The sample of one row, or None if it cannot be trained on (length); raises `ImageFileError` when its
        image cannot be read."""
        with_image = has_image(row.get("image"))
        segments = self.template.segments(_turns(row["conversations"]), has_image=with_image,
                                          eos_token=self._eos_token)
        image = self._load_image(row) if with_image else None
        input_ids, labels, image_end = self._tokenize(segments, with_image, row, self._image_token_count(image))

        if all(label == IGNORE_INDEX for label in labels):
            self._report("all_masked", row, "no supervised token (no answer turn?)")
            return None
        if len(input_ids) > self.model_max_length:
            keep = _fit(input_ids, labels, image_end, self.model_max_length)
            if keep == 0:
                reason = "its image" if image_end > self.model_max_length else "any answer token"
                self._report("skipped", row, f"{len(input_ids)} tokens; {reason} does not fit")
                return None
            self.stats["truncated"] += 1
            input_ids, labels = input_ids[:keep], labels[:keep]

        item = {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "pixel_values": image["pixel_values"][0] if image is not None else None,
        }
        if image is not None and "image_sizes" in image:  # AnyRes (OneVision): the crops' source size
            item["image_sizes"] = torch.as_tensor(image["image_sizes"][0])
        return item

    def _image_token_count(self, image_inputs) -> int:
        """Image tokens the processor expands `<image>` to for this image (the same rule inference uses: a fixed
        count for LLaVA-1.5-style processors, the image's own AnyRes count for OneVision's); 0 without an image."""
        if image_inputs is None:
            return 0
        if not hasattr(self.processor, "replace_image_token"):
            return self._num_image_tokens
        return self.processor.replace_image_token(image_inputs, 0).count(self.processor.image_token)

    def _tokenize(
        self, segments: list[Segment], has_image: bool, row: Mapping[str, Any], num_image_tokens: int
    ) -> tuple[list[int], list[int], int]:
        """(input_ids, labels, end of the image tokens or 0) for the rendered segments, BOS first."""
        # Split every segment at the image marker; each text piece remembers whether it opens the sequence.
        pieces: list[tuple[str, bool] | None] = []  # (text, supervised), None = the image
        for segment in segments:
            for k, chunk in enumerate(segment.text.split(IMAGE_TOKEN)):
                if k:
                    pieces.append(None)
                if chunk:
                    pieces.append((chunk, segment.supervised))
        if pieces.count(None) != int(has_image):
            raise ValueError(
                f"row {row.get('id')!r}: the template produced {pieces.count(None)} image markers for "
                f"{int(has_image)} image(s)"
            )

        texts = [
            piece[0] if position == 0 else self._anchor + piece[0]
            for position, piece in enumerate(pieces)
            if piece is not None
        ]
        encoded = iter(self._tokenizer(texts, add_special_tokens=False)["input_ids"]) if texts else iter(())

        input_ids, labels, image_end = list(self._bos), [IGNORE_INDEX] * len(self._bos), 0
        for position, piece in enumerate(pieces):
            if piece is None:
                input_ids += [self._image_token_id] * num_image_tokens
                labels += [IGNORE_INDEX] * num_image_tokens
                image_end = len(input_ids)
                continue
            ids = next(encoded)
            if position:
                if ids[: len(self._anchor_ids)] != self._anchor_ids:
                    raise RuntimeError(f"the tokenizer merged the anchor {self._anchor!r} into {piece[0]!r}")
                ids = ids[len(self._anchor_ids) :]
            input_ids += ids
            labels += ids if piece[1] else [IGNORE_INDEX] * len(ids)
        return input_ids, labels, image_end

    def _load_image(self, row: Mapping[str, Any]):
        """The row's image through the processor's image processor: its outputs for a batch of one (`pixel_values`
        `(1, 3, H, W)`, or `(1, crops, 3, H, W)` with `image_sizes` for AnyRes); `ImageFileError` if it cannot be read.
        The image is a path under the image root, or (rows of a pushed dataset) a decoded `datasets.Image` value or
        its undecoded `{"bytes", "path"}` form."""
        value = row["image"]
        if isinstance(value, Image.Image):
            image = to_rgb(value, self._background)
        elif isinstance(value, Mapping) and value.get("bytes"):
            image = load_image(io.BytesIO(value["bytes"]), self._background)
        else:
            path = value["path"] if isinstance(value, Mapping) else value
            image = load_image(resolve_image_path(self.image_root, path), self._background)
        return self.processor.image_processor(image, return_tensors="pt")

    def _report(self, kind: str, row: Mapping[str, Any], detail: str) -> None:
        self.stats[kind] += 1
        logger.warning(
            "not training on row %r (%s: %s); %d such rows so far",
            row.get("id"),
            kind,
            detail,
            self.stats[kind],
        )

    @cached_property
    def modality_lengths(self) -> list[int]:
        """Per-row length estimates for `ModalityGroupedSampler`: whitespace-separated words over all turns, plus
        the image tokens for image rows; positive for image rows, negative for text-only rows, never 0.
        Computed once on first use from the text columns only (Arrow batches for a `datasets.Dataset`)."""
        if hasattr(self.rows, "with_format"):
            return self._arrow_modality_lengths()
        lengths = []
        for row in self.rows:
            words = sum(len(turn["value"].split()) for turn in _turns(row["conversations"]))
            lengths.append(self._signed_length(words, has_image(row.get("image"))))
        return lengths

    def _signed_length(self, words: int, has_image: bool) -> int:
        # max(.., 1): a text row with no words must still read as text (-0 would be taken for an image row).
        return words + self._num_image_tokens if has_image else -max(words, 1)

    def _arrow_modality_lengths(self) -> list[int]:
        import pyarrow as pa
        import pyarrow.compute as pc

        lengths: list[int] = []
        columns = [name for name in ("image", "conversations") if name in self.rows.column_names]
        for table in self.rows.select_columns(columns).with_format("arrow").iter(batch_size=65_536):
            conversations = table.column("conversations").combine_chunks()
            values = pc.struct_field(pc.list_flatten(conversations), "value")
            words = pc.fill_null(pc.count_substring_regex(values, r"\S+"), 0).to_numpy(zero_copy_only=False)
            rows = pc.list_parent_indices(conversations).to_numpy(zero_copy_only=False)
            per_row = np.bincount(rows, weights=words, minlength=table.num_rows).astype(np.int64)
            if "image" not in columns:
                with_image = np.zeros(table.num_rows, dtype=bool)
            elif pa.types.is_struct(table.column("image").type):  # a datasets.Image column: null for text rows
                with_image = pc.is_valid(table.column("image")).to_numpy(zero_copy_only=False)
            else:
                with_image = pc.fill_null(pc.greater(pc.utf8_length(table.column("image")), 0), False)
                with_image = with_image.to_numpy(zero_copy_only=False)
            signed = np.where(with_image, per_row + self._num_image_tokens, -np.maximum(per_row, 1))
            lengths.extend(signed.tolist())
        return lengths


__all__ = ["CrocSupervisedDataset", "has_image"]
