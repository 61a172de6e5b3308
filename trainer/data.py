"""Rows -> model inputs, lazily: one row is rendered, tokenised, fitted to `model_max_length` and its image decoded
only when the trainer asks for it, so a 1.5M-row mixture starts training in seconds.

Labels are built segment by segment (see `modeling_croc.conversation`), never by re-tokenising the whole string
and searching for the answers in it, which is how LLaVA-style code ends up with every label silently masked when
the tokenizer changes. Each segment is tokenised as a continuation of the text before it, so a prompt's ids are
those the processor gives the chat template's generation prompt at inference and an answer's are those `generate`
continues it with. They are also the ids of the whole rendered string, except where a tokenizer merges across the end
of a prompt: Qwen2's (Qwen2.5-VL, Qwen3-VL, InternVL, OneVision) joins the prompt's closing newline and an answer's
leading newlines into one token; the prompt then still ends as at inference (`modeling_croc.chat.continuation_logprob`
scores an answer the same way). Images go through the
processor's own image processor (`modeling_croc.with_image_aspect_ratio` sets how it pads), so training and
inference prepare pixels one way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image

from data_recipes import DataError
from modeling_croc.constants import IGNORE_INDEX, IMAGE_TOKEN
from modeling_croc.conversation import ConversationTemplate, Segment, get_template
from modeling_croc.images import (
    ImageFileError,
    ImageLimits,
    check_image_size,
    load_image,
    resolve_image_path,
    to_rgb,
)
from modeling_croc.processing_croc import CrocProcessor, pad_colour

logger = logging.getLogger(__name__)

# Why a row cannot be trained on, decided from its tokens (`CrocSupervisedDataset.fit_row`): before training for
# every row whose token count is known without its image (all LLaVA-1.5-style rows), when the row is asked for
# otherwise (AnyRes images, whose token count depends on the image's size).
LENGTH_REJECT_REASONS: dict[str, str] = {
    "too_long": "the image tokens, the prompt and the first answer token do not fit in model_max_length",
    "nothing_supervised": "the template leaves no token of the row to learn from",
    "template_cannot_render": "the chat format cannot express the row (PaliGemma's and stage 1's `plain`: one image, "
                              "one question, one answer)",
}
# Key of a sample that stands in for the row asked for, which could not be used (its image could not be read, or it
# does not fit): that row's record ({id, index, image, reason, detail}), which the collator gathers into the batch's
# data report (`trainer.collator.DATA_REPORT_KEY`) for the trainer to count. Rows tried on the way to a replacement
# are only logged here: each is counted when the sampler asks for it, so every bad row counts once per epoch, like
# every row.
REPLACED_KEY = "replaced_row"
# Key of a sample cut to `model_max_length` when it was asked for (rows the start could not measure): its
# {id, index, detail}, counted by the trainer like the truncations found at the start.
TRUNCATED_KEY = "truncated_row"
# How many following rows of the same modality an unusable row may try before the dataset gives up: far more than a
# few bad files in a row, far fewer than a wrong image root (whose every row fails and which the trainer's stop rule
# reports first).
MAX_REPLACEMENT_TRIES = 64
# Per-piece allowance of the token bound (`CrocSupervisedDataset.fit_row`): a tokenizer may add a word-start marker
# and split an anchor, never more than a few tokens per separately tokenised piece.
_PIECE_SLACK = 4
# Tokens a piece still makes past model_max_length when its text is cut before tokenising
# (`CrocSupervisedDataset._piece_chars`): the cut lies that far beyond the last token a sample can keep.
_CUT_MARGIN_TOKENS = 64


class RowFit(NamedTuple):
    """How a row fits `model_max_length`: `verdict` is "whole", "truncated" (trained cut: the image and at least one
    answer token kept), "rejected" (`reason`: a `LENGTH_REJECT_REASONS` key) or "unknown" (an AnyRes image row: its
    token count depends on the image; decided when it is asked for). `tokens`: its full length, where known."""

    verdict: str
    reason: str | None = None
    detail: str = ""
    tokens: int = 0


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
    if isinstance(value, Mapping):  # embedded bytes, even empty ones (an empty file), or a file name
        return value.get("bytes") is not None or bool(value.get("path"))
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


def image_sample(image_inputs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """One image's entries of a sample, from its image processor's outputs for a batch of one: `pixel_values`
    `(3, H, W)` (LLaVA-1.5), `(crops, 3, H, W)` with `image_sizes` `(2,)` (AnyRes), or, for native-resolution
    processors (Qwen2-VL's), every patch of the image `(patches, C * T * P * P)` with `image_grid_thw` `(3,)`: those
    processors flatten a batch's patches into one tensor, so the image's are all of them, not the first row; so do
    dynamic-tiling ones (InternVL's, which return `num_patches`): `(tiles, 3, S, S)`, the thumbnail included. Gemma 4's
    keep one row per image, its patches padded to `max_patches`: `(max_patches, 3 * P * P)` with `image_position_ids`
    `(max_patches, 2)`, `(-1, -1)` at the padding patches."""
    if "image_grid_thw" in image_inputs:
        return {"pixel_values": image_inputs["pixel_values"],
                "image_grid_thw": torch.as_tensor(image_inputs["image_grid_thw"][0])}
    if "num_patches" in image_inputs:  # dynamic tiling (InternVL's): every tile of the image, `(tiles, 3, S, S)`
        return {"pixel_values": image_inputs["pixel_values"]}
    sample = {"pixel_values": image_inputs["pixel_values"][0]}
    if "image_sizes" in image_inputs:  # AnyRes (OneVision): the crops' source size
        sample["image_sizes"] = torch.as_tensor(image_inputs["image_sizes"][0])
    if "pixel_attention_mask" in image_inputs:  # split images (SmolVLM's): `(views, 3, S, S)` and `(views, S, S)`
        sample["pixel_attention_mask"] = torch.as_tensor(image_inputs["pixel_attention_mask"][0])
    if "image_position_ids" in image_inputs:  # patches at their own grid (Gemma 4's): `(max_patches, 2)`, -1 padding
        sample["image_position_ids"] = torch.as_tensor(image_inputs["image_position_ids"][0])
    return sample


def _placeholder_texts(processor: Any, tokenizer: Any, image_token_id: int) -> tuple[str, ...]:
    """The family's own image tokens as text (Qwen's `<|image_pad|>`, Pixtral's `[IMG]`, `[IMG_BREAK]`, `[IMG_END]`,
    Gemma 3's `<image_soft_token>`, InternVL's `<IMG_CONTEXT>`): the tokenizer turns such text in a turn into the
    special id the model counts images by, so its placeholders outnumber its image features and the forward raises
    mid-run. `<image>` (LLaVA's marker) is counted by the row checks already."""
    ids = getattr(processor, "image_token_ids", None) or [image_token_id]
    tokens = tokenizer.convert_ids_to_tokens([int(i) for i in ids])
    return tuple(token for token in dict.fromkeys(tokens) if token and token != IMAGE_TOKEN)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def fit_rule() -> str:
    """The rule `CrocSupervisedDataset.fit_rows` decides by, as a digest: the code that renders, tokenises and fits a
    row (this module, the templates' `segments`, the processor's image tokens, the markers of `constants`, and
    `trainer.data_loading`, which hands `fit_rows` each row's turns and image presence and records the verdicts) and
    the versions of the libraries that tokenise. A resume reuses the verdicts its checkpoint recorded only under the
    same rule (`trainer.data_loading.fit_rows`); any edit to that code or upgrade refits every row once, which is slow
    but never stale, where a hand-bumped version would be stale the first time someone forgot it."""
    import tokenizers
    import transformers

    from modeling_croc import constants, conversation, processing_croc

    from . import data_loading  # imports this module: read here, at call time

    sources = [Path(module.__file__).read_bytes() for module in (constants, conversation, processing_croc, data_loading)]
    sources.append(Path(__file__).read_bytes())
    return _digest([hashlib.sha256(source).hexdigest() for source in sources]
                   + [transformers.__version__, tokenizers.__version__])


def _tokenizer_fingerprint(tokenizer: Any) -> str | None:
    """A digest of everything the tokenizer encodes a text by: its `tokenizers` backend serialised whole (vocabulary,
    merges, normaliser, pre-tokeniser, added tokens), the tokens the wrapper adds or treats as special and its chat
    template; None without a backend (a slow tokenizer), which has no such exact form."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    added = {str(index): str(token) for index, token in getattr(tokenizer, "added_tokens_decoder", {}).items()}
    return _digest([type(tokenizer).__qualname__, backend.to_str(), added, tokenizer.special_tokens_map,
                    getattr(tokenizer, "split_special_tokens", None), getattr(tokenizer, "chat_template", None)])


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
        image_limits: the aspect-ratio and pixel limits every image is held to, from its header before it is decoded
            (`modeling_croc.images.ImageLimits`; the pixels any step of the processor's preprocessing would
            allocate count).

    ``dataset[i]`` is ``{"input_ids": LongTensor(L), "labels": LongTensor(L), "pixel_values": FloatTensor(3, H, W)
    or None}`` (AnyRes processors: `(crops, 3, H, W)` plus `"image_sizes"`; native-resolution ones: the image's
    patches plus `"image_grid_thw"`, see `image_sample`), L <= model_max_length: the image marker
    becomes as many image-token ids as the processor expands it to for that image, BOS
    starts the sequence (follows the image where the template says so: `bos_after_image`, PaliGemma's), labels are
    -100 except on supervised tokens. A row longer than `model_max_length` is cut
    from the end (later turns first, a partly fitting answer shortened) when its image and at least one answer token
    stay; `fit_row` tells, without reading the image, how every row fits (the trainer rejects the rows that cannot
    fit before training, `trainer.data_loading.fit_rows`).

    ``dataset[i]`` is never None, and never fails for one row: a row that cannot be used (its image cannot be read,
    see `modeling_croc.images.load_image`: missing, empty, corrupt, truncated, too large, outside the image root;
    or, for a row not measured at the start, it does not fit) is replaced by the next row of the same modality (image
    or text, in index order, wrapping around) that can, with ``sample["replaced_row"]`` describing the row it
    replaces, so a batch keeps its size and the trainer counts it. The replacement depends only on the index and the
    files, so a resumed run sees the same samples. Images are read as RGB with transparency composited onto the colour
    `pad` uses (`modeling_croc.processing_croc.pad_colour`) and 16-bit grey rescaled.

    `stats` counts ``truncated`` (cut to fit), ``unusable`` (replaced: does not fit) and ``unreadable`` (replaced: the
    image could not be read) over the samples this process built. With DataLoader workers, each worker has its own
    copy; the trainer's counts come with the batches (`trainer.data_report`).
    """

    def __init__(
        self,
        rows: Sequence[Mapping[str, Any]],
        processor: Any,
        template: str | ConversationTemplate = "vicuna_v1",
        image_root: str | os.PathLike = ".",
        model_max_length: int = 2048,
        image_limits: ImageLimits | None = None,
    ) -> None:
        self.rows = rows
        self.image_limits = image_limits if image_limits is not None else ImageLimits()
        self.processor = processor
        self.template = get_template(template)
        self.image_root = Path(image_root)
        self.model_max_length = int(model_max_length)
        self.stats = {"truncated": 0, "unusable": 0, "unreadable": 0}
        self._background = pad_colour(processor.image_processor)

        tokenizer = processor.tokenizer
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer needs an EOS token: it ends every supervised answer")
        self._tokenizer = tokenizer
        # BOS first when the tokenizer puts one before a text, as the processor does to the prompt at inference
        # (`modeling_croc.chat`, transformers' `apply_chat_template(tokenize=True)`): a tokenizer that has a BOS but
        # adds none (an idefics3 folder's under `template: smolvlm`) gave rows a BOS that inference never sees. None
        # either when the template writes it itself (SmolVLM's opens every conversation with `<|im_start|>`, which a
        # tokenizer may also name its BOS): the sample would start with it twice. A format whose BOS follows the
        # image (`bos_after_image`) has it whatever the tokenizer adds: PaliGemma's processor writes it as text.
        writes_bos = bool(tokenizer.bos_token) and self.template.system.startswith(tokenizer.bos_token)
        adds_bos = tokenizer.bos_token_id is not None and (
            self.template.bos_after_image or tokenizer.encode("a")[:1] == [tokenizer.bos_token_id])
        self._bos = [tokenizer.bos_token_id] if adds_bos and not writes_bos else []
        self._eos_token = tokenizer.eos_token
        # Text after a special token is tokenised as a continuation (no SentencePiece "▁" prefix): prefixing each
        # later segment with one and dropping its id reproduces what the whole string would give.
        self._anchor = tokenizer.eos_token
        self._anchor_ids = tokenizer.encode(self._anchor, add_special_tokens=False)
        self._image_token_id = int(processor.image_token_id)
        self._num_image_tokens = int(processor.num_image_tokens)
        self._placeholder_texts = _placeholder_texts(processor, tokenizer, self._image_token_id)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        row = self.rows[index]
        sample, problem = self._try(row, index)
        if problem is None:
            return sample
        replaced = self._replaced(row, index, *problem)
        # Replace the row by the next row of its modality that yields a sample, so the batch keeps its size and its
        # modality.
        tried = [replaced]
        for candidate in self._following_rows(index, has_image(row.get("image"))):
            sample, problem = self._try(self.rows[candidate], candidate)
            if problem is None:
                sample[REPLACED_KEY] = replaced
                return sample
            tried.append(self._replaced(self.rows[candidate], candidate, *problem, log_only=True))
        last = tried[-1]
        raise DataError(f"row {replaced['id']!r} and the {len(tried) - 1} row(s) of its kind tried after it cannot be "
                        f"used (last: {last['reason']}: {last['detail']}); is the image root "
                        f"{str(self.image_root)!r} right, and model_max_length={self.model_max_length} large enough?")

    def _try(self, row: Mapping[str, Any], index: int) -> tuple[dict[str, Any] | None, tuple[str, str] | None]:
        """(the sample, None), or (None, (reason, detail)) for a row that cannot be used."""
        try:
            return self._sample(row, index)
        except ImageFileError as error:
            return None, (error.reason, error.detail)

    def _following_rows(self, index: int, image: bool) -> list[int]:
        rows = self._image_rows if image else self._text_rows
        start = int(np.searchsorted(rows, index, side="right"))
        # Only the candidates tried are read: joining the whole index (every row of its kind, wrapped round) copied
        # 1.5M indices for each replaced row (about 0.6 ms each): O(rows) per replacement, for 64 candidates.
        order = rows[start:start + MAX_REPLACEMENT_TRIES]
        wrapped = rows[:min(start, MAX_REPLACEMENT_TRIES - len(order))]
        return [int(i) for i in (*order, *wrapped) if i != index]

    @cached_property
    def _image_rows(self) -> np.ndarray:
        """Indices of the image rows, ascending: the positive entries of `modality_lengths`, which reads the text and
        the image column's presence only (reading a `datasets.Image` column itself would decode every image)."""
        return np.flatnonzero(np.asarray(self.modality_lengths) > 0)

    @cached_property
    def _text_rows(self) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.modality_lengths) < 0)

    @cached_property
    def rows_fingerprint(self) -> dict[str, Any]:
        """`trainer.fingerprints.rows_fingerprint` of the rows, computed once: the length check's key and the run
        record both need it, and a pass reads every row (an embedded image's bytes included)."""
        from .fingerprints import rows_fingerprint

        return rows_fingerprint(self.rows)

    def _replaced(self, row: Mapping[str, Any], index: int, reason: str, detail: str,
                  log_only: bool = False) -> dict[str, Any]:
        if not log_only:
            self.stats["unreadable" if reason not in LENGTH_REJECT_REASONS else "unusable"] += 1
        logger.warning("row %r (index %d) cannot be used (%s: %s); %s", row.get("id"), index, reason, detail,
                       "trying the next row" if log_only else "replaced by the next usable row of its kind")
        image = row.get("image")
        if isinstance(image, Mapping):  # an undecoded `datasets.Image` value: its file name, if it kept one
            image = image.get("path") or "<embedded image>"
        elif image is not None and not isinstance(image, str):
            image = "<embedded image>"
        return {"id": row.get("id"), "index": index, "image": image, "reason": reason, "detail": detail}

    # ---- how a row fits ----
    def fit_row(self, row: Mapping[str, Any]) -> RowFit:
        """How `row` fits `model_max_length`, from its text alone (its image is not read); see `fit_rows`."""
        return self.fit_rows([row])[0]

    def fit_rows(self, rows: Sequence[Mapping[str, Any]]) -> list[RowFit]:
        """How each row fits `model_max_length`, from its text alone (no image is read). Most rows are decided by a
        bound (a token never covers less than one byte of text: fewer bytes than the budget left by the image tokens
        means the row fits); the rest are tokenised exactly as training tokenises them, all in one batch."""
        fits: list[RowFit | None] = [None] * len(rows)
        exact = []  # (position, pieces, image tokens) of the rows the bound does not decide
        for position, row in enumerate(rows):
            with_image = has_image(row.get("image"))
            segments = self.template.segments(_turns(row["conversations"]), has_image=with_image,
                                              eos_token=self._eos_token)
            image_tokens = self._fixed_image_tokens if with_image else 0
            placeholder = self._placeholder_in_text(row)
            unrenderable = self.template.cannot_render(_turns(row["conversations"]), with_image)
            if placeholder is not None:
                fits[position] = RowFit("rejected", "too_many_image_markers", placeholder)
            elif unrenderable is not None:
                fits[position] = RowFit("rejected", "template_cannot_render", unrenderable)
            elif not any(segment.supervised and segment.text for segment in segments):
                fits[position] = RowFit("rejected", "nothing_supervised", "no supervised token (no answer turn?)")
            elif image_tokens is None:
                fits[position] = RowFit("unknown")
            elif len(self._bos) + image_tokens + sum(
                    len(self._normalized(segment.text).encode("utf-8"))
                    + _PIECE_SLACK * (1 + segment.text.count(IMAGE_TOKEN))
                    for segment in segments) <= self.model_max_length:
                fits[position] = RowFit("whole")
            else:
                exact.append((position, self._pieces(segments, with_image, row), image_tokens))
        texts = [self._texts(pieces) for _, pieces, _ in exact]
        encoded = self._encode([text for row_texts in texts for text in row_texts])
        start = 0
        for (position, pieces, image_tokens), row_texts in zip(exact, texts):
            row_encoded, start = encoded[start:start + len(row_texts)], start + len(row_texts)
            fits[position] = self._fit_verdict(*self._assemble(pieces, row_encoded, image_tokens))
        return fits

    def fit_inputs(self) -> dict[str, str] | None:
        """What `fit_rows` decides from besides the rows, each part by a digest: the rule (`fit_rule`), the tokenizer
        (all of it: vocabulary, merges, normaliser, added and special tokens, chat template), the template, the
        length budget and the image tokens every image counts. None where the tokenizer has no exact fingerprint
        (one without a `tokenizers` backend): its rows are then fitted on every start."""
        tokenizer = _tokenizer_fingerprint(self._tokenizer)
        if tokenizer is None:
            return None
        return {"rule": fit_rule(), "tokenizer": tokenizer,
                "template": _digest(dataclasses.asdict(self.template)),
                "model_max_length": str(self.model_max_length),
                "image_tokens": _digest([type(self.processor).__qualname__, self._fixed_image_tokens,
                                         self._image_token_id, list(self._placeholder_texts)])}

    def _normalized(self, text: str) -> str:
        """`text` as the tokenizer's normaliser rewrites it before any token is made, whose bytes the bound of
        `fit_rows` counts: Qwen2's NFC writes some code points longer (U+095B, a Devanagari letter, becomes two: 3 bytes
        become 6, up to 6 tokens), so the bytes of the row as written would let a row that does not fit pass as whole.
        ASCII text is left as it is: no normaliser makes it more tokens than bytes."""
        normalizer = getattr(getattr(self._tokenizer, "backend_tokenizer", None), "normalizer", None)
        return text if normalizer is None or text.isascii() else normalizer.normalize_str(text)

    def _placeholder_in_text(self, row: Mapping[str, Any]) -> str | None:
        """Why the row's turns hold one of `_placeholder_texts`, or None. The turns, not the rendered segments: a
        template may write some of them around the image itself (InternVL's `<img>`)."""
        for turn in _turns(row["conversations"]):
            found = next((token for token in self._placeholder_texts if token in turn["value"]), None)
            if found is not None:
                return f"its text holds {found!r}, the model's own image token, which would stand for an image"
        return None

    @cached_property
    def _fixed_image_tokens(self) -> int | None:
        """Image tokens of every image (LLaVA-1.5-style processors), or None when they depend on the image (AnyRes)."""
        return self._num_image_tokens if isinstance(self.processor, CrocProcessor) or self._fixed_count else None

    @cached_property
    def _fixed_count(self) -> bool:
        """Whether every image expands to `num_image_tokens`: processors without a per-image rule, and those that
        say so (`fixed_image_tokens`: Gemma 3's, whose `replace_image_token` writes a whole block around them)."""
        processor = self.processor
        return not hasattr(processor, "replace_image_token") or bool(getattr(processor, "fixed_image_tokens", False))

    def _fit_verdict(self, input_ids: list[int], labels: list[int], image_end: int) -> RowFit:
        tokens = len(input_ids)
        if all(label == IGNORE_INDEX for label in labels):
            return RowFit("rejected", "nothing_supervised", "no supervised token (no answer turn?)", tokens)
        if tokens <= self.model_max_length:
            return RowFit("whole", tokens=tokens)
        keep = _fit(input_ids, labels, image_end, self.model_max_length)
        if keep == 0:
            what = "its image tokens" if image_end > self.model_max_length else "its first answer token"
            return RowFit("rejected", "too_long", f"{tokens} tokens, model_max_length={self.model_max_length}: {what} "
                          "would be cut", tokens)
        return RowFit("truncated", None, f"{tokens} tokens cut to {keep}", tokens)

    def _sample(self, row: Mapping[str, Any], index: int = -1
                ) -> tuple[dict[str, Any] | None, tuple[str, str] | None]:
        """(the sample of one row, None), or (None, (reason, detail)) for a row that does not fit; raises
        `ImageFileError` when its image cannot be read."""
        with_image = has_image(row.get("image"))
        segments = self.template.segments(_turns(row["conversations"]), has_image=with_image,
                                          eos_token=self._eos_token)
        placeholder = self._placeholder_in_text(row)
        if placeholder is not None:
            return None, ("too_many_image_markers", placeholder)
        unrenderable = self.template.cannot_render(_turns(row["conversations"]), with_image)
        if unrenderable is not None:
            return None, ("template_cannot_render", unrenderable)
        image = self._load_image(row) if with_image else None
        image_ids = self._image_expansion_ids(image) if image is not None and self._expands_with_structure else None
        image_tokens = self._image_token_count(image)
        pool_limit = getattr(self.processor, "pool_visual_token_limit", None)  # stage 1.5's (`fit_images_to_pool`)
        if pool_limit is not None and image_tokens > pool_limit:
            return None, ("image_too_large", f"{image_tokens} visual tokens, more than the {pool_limit} whose masked "
                          "tokens the prompt pool can match one-to-one")
        input_ids, labels, image_end = self._tokenize(segments, with_image, row, image_tokens, image_ids)
        fit = self._fit_verdict(input_ids, labels, image_end)
        if fit.verdict == "rejected":
            return None, (fit.reason, fit.detail)

        item = {}
        if fit.verdict == "truncated":
            keep = _fit(input_ids, labels, image_end, self.model_max_length)
            input_ids, labels = input_ids[:keep], labels[:keep]
            self.stats["truncated"] += 1
            if with_image and self._fixed_image_tokens is None:
                # Only a row the start could not measure (its image tokens depend on the image) is reported here:
                # the others were counted cut by the start (`DataReport.truncated`), and a second count made the
                # final report say every cut row twice, once more each time it is asked for.
                item[TRUNCATED_KEY] = {"id": row.get("id"), "index": index, "detail": fit.detail}
        item.update({
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "pixel_values": None,
        })
        if image is not None:
            item.update(image_sample(image))
        return item, None

    def _image_token_count(self, image_inputs) -> int:
        """Image tokens the processor expands `<image>` to for this image (the same rule inference uses: a fixed
        count for LLaVA-1.5-style processors, the image's own AnyRes count for OneVision's); 0 without an image."""
        if image_inputs is None:
            return 0
        if self._fixed_count:
            return self._num_image_tokens
        return self.processor.replace_image_token(image_inputs, 0).count(self.processor.image_token)

    def _tokenize(
        self, segments: list[Segment], has_image: bool, row: Mapping[str, Any], num_image_tokens: int,
        image_ids: list[int] | None = None,
    ) -> tuple[list[int], list[int], int]:
        """(input_ids, labels, end of the image tokens or 0) for the rendered segments, BOS first."""
        pieces = self._pieces(segments, has_image, row)
        texts = self._texts(pieces)
        encoded = self._encode(texts)
        return self._assemble(pieces, encoded, num_image_tokens, image_ids)

    @cached_property
    def _expands_with_structure(self) -> bool:
        """Whether the processor's expansion of an image holds more than its placeholders (Pixtral's row breaks,
        SmolVLM's tile markers) and says so (`image_expansion_has_structure`): the image's ids are then that
        expansion, tokenised, rather than its placeholder repeated."""
        return bool(getattr(self.processor, "image_expansion_has_structure", False))

    def _image_expansion_ids(self, image_inputs) -> list[int]:
        """The ids of the processor's expansion of one image (`replace_image_token`), tokenised as a later piece is
        (after the anchor, which is dropped), so they are the ids the processor itself gives inside a prompt."""
        (ids,) = self._encode([self._anchor + self.processor.replace_image_token(image_inputs, 0)])
        if ids[: len(self._anchor_ids)] != self._anchor_ids:
            raise RuntimeError(f"the tokenizer merged the anchor {self._anchor!r} into an image's expansion")
        return ids[len(self._anchor_ids):]

    @staticmethod
    def _pieces(segments: list[Segment], has_image: bool, row: Mapping[str, Any]) -> list[tuple[str, bool] | None]:
        """The segments split at the image marker: (text, supervised) pieces, None where the image goes."""
        pieces: list[tuple[str, bool] | None] = []
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
        return pieces

    def _texts(self, pieces: list[tuple[str, bool] | None]) -> list[str]:
        """What is tokenised for the pieces: each after the first prefixed with the anchor (see `__init__`), and cut
        to `_piece_chars` characters."""
        cut = self._piece_chars
        return [piece[0][:cut] if position == 0 else self._anchor + piece[0][:cut]
                for position, piece in enumerate(pieces) if piece is not None]

    @cached_property
    def _piece_chars(self) -> int:
        """Characters of one piece worth tokenising. No token covers more characters than the longest vocabulary
        entry has UTF-8 bytes, so this many characters make at least `model_max_length` + a margin tokens: the ids a
        sample keeps are the same with or without the rest, which would only be cut. Without the cut, one 50 MB turn
        costs gigabytes of ids and a minute of tokenising (the count a `too_long` or truncation detail reports is
        then that of the text tokenised, a lower bound)."""
        longest = max((len(token.encode("utf-8")) for token in self._tokenizer.get_vocab()), default=1)
        return (self.model_max_length + _CUT_MARGIN_TOKENS) * max(longest, 1)

    def _encode(self, texts: list[str]) -> list[list[int]]:
        # One call for many texts: the tokenizer encodes a batch in parallel. `verbose=False`: a long row is the
        # rule here, not an accident (it is fitted to model_max_length below).
        return self._tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"] if texts else []

    def _assemble(self, pieces: list[tuple[str, bool] | None], encoded: list[list[int]],
                  num_image_tokens: int, image_ids: list[int] | None = None) -> tuple[list[int], list[int], int]:
        encoded = iter(encoded)
        # BOS first, or right after the image where the format puts it there (PaliGemma's; its rows all have one).
        after_image = self.template.bos_after_image and None in pieces
        bos = [] if after_image else list(self._bos)
        input_ids, labels, image_end = bos, [IGNORE_INDEX] * len(bos), 0
        for position, piece in enumerate(pieces):
            if piece is None:
                image = [self._image_token_id] * num_image_tokens if image_ids is None else image_ids
                image = image + self._bos if after_image else image
                input_ids += image
                labels += [IGNORE_INDEX] * len(image)
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
        limits, image_processor = self.image_limits, self.processor.image_processor
        if isinstance(value, Image.Image):  # decoded by `datasets` already: the size limits still apply
            check_image_size(value.width, value.height, limits, image_processor)
            image = to_rgb(value, self._background)
        elif isinstance(value, Mapping) and value.get("bytes") is not None:  # embedded (b"": an empty file)
            image = load_image(io.BytesIO(value["bytes"]), self._background, limits=limits,
                               image_processor=image_processor)
        else:
            path = value["path"] if isinstance(value, Mapping) else value
            image = load_image(resolve_image_path(self.image_root, path), self._background, limits=limits,
                               image_processor=image_processor)
        return image_processor(image, return_tensors="pt")

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


__all__ = ["LENGTH_REJECT_REASONS", "REPLACED_KEY", "TRUNCATED_KEY", "CrocSupervisedDataset", "RowFit", "fit_rule", "has_image"]
