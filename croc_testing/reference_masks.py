"""The stage-1.5 attention pattern written from its definition with Python loops: slow and obviously right, the
reference the vectorised masks are checked against element by element."""

from __future__ import annotations

import torch

from modeling_croc.constants import IGNORE_INDEX


def reference_allowed(
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor,
    labels: torch.LongTensor | None,
    span: str,
    image_token_id: int,
    window: int | None = None,
    image_token_counts: list[int] | None = None,
) -> torch.BoolTensor:
    """allowed[b, i, j]: may query i attend to key j in row b.

    Causal attention to real (non-padding) keys, plus both directions inside a bidirectional block: one image's
    tokens (`span="image"`), or every real token before the row's first supervised label (`"prompt"`; the
    label of the row's first real token is never a target, nothing precedes it to predict it). On
    a sliding-window layer (`window`) no key more than `window - 1` positions back is seen, inside a block too.

    An image is a run of image tokens, or, given `image_token_counts` (each image's tokens, in the order they fill
    the rows), the positions from an image's first token to its last, counted off the image tokens one by one: two
    images with nothing between them are then two blocks.
    """
    batch, length = input_ids.shape
    allowed = torch.zeros(batch, length, length, dtype=torch.bool)
    image_of = _image_of_position(input_ids, image_token_id, image_token_counts)
    for b in range(batch):
        real = [t for t in range(length) if attention_mask[b, t]]
        supervised = [t for t in real[1:] if labels is not None and labels[b, t] != IGNORE_INDEX]
        first_supervised = supervised[0] if supervised else length
        for i in range(length):
            for j in range(length):
                if not attention_mask[b, j]:
                    continue
                causal = j <= i
                if span == "image" and image_of is not None:
                    bidirectional = image_of[b][i] is not None and image_of[b][i] == image_of[b][j]
                elif span == "image":
                    bidirectional = _same_image_run(input_ids[b], i, j, image_token_id)
                elif span == "prompt":
                    bidirectional = bool(i < first_supervised and j < first_supervised and attention_mask[b, i])
                else:
                    bidirectional = False
                in_window = window is None or j > i - window
                allowed[b, i, j] = (causal or bidirectional) and in_window
    return allowed


def _image_of_position(input_ids: torch.LongTensor, image_token_id: int,
                       counts: list[int] | None) -> list[list[int | None]] | None:
    """image_of[b][t]: the index of the image whose extent (its first token to its last) holds position t of row
    b, None outside every image; None without `counts`."""
    if counts is None:
        return None
    owners = [image for image, count in enumerate(counts) for _ in range(int(count))]
    image_of: list[list[int | None]] = []
    seen = 0
    for row in input_ids.tolist():
        extents: dict[int, list[int]] = {}
        for t, token in enumerate(row):
            if token == image_token_id:
                extents.setdefault(owners[seen], []).append(t)
                seen += 1
        image_of.append([next((image for image, ts in extents.items() if ts[0] <= t <= ts[-1]), None)
                         for t in range(len(row))])
    assert seen == len(owners), f"{seen} image tokens for counts summing to {len(owners)}"
    return image_of


def _same_image_run(row: torch.LongTensor, i: int, j: int, image_token_id: int) -> bool:
    """Both positions are image tokens with nothing but image tokens between them."""
    low, high = min(i, j), max(i, j)
    return all(int(row[t]) == image_token_id for t in range(low, high + 1))


__all__ = ["reference_allowed"]
