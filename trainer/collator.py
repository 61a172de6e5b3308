"""Batches `CrocSupervisedDataset` samples: pad the token sequences, stack the images of the image rows only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from modeling_croc.constants import IGNORE_INDEX

from .data import UNREADABLE_KEY

# Key of the batch's data report, present when rows were dropped (length) or replaced (unreadable image):
# {"rows": rows asked for, "unreadable_rows": [the record of each asked row that was replaced]}. `CrocTrainer` pops
# it before the forward and counts it (`trainer.data_report`); the model never sees it.
DATA_REPORT_KEY = "data_report"


@dataclass
class CrocDataCollator:
    """Samples -> ``{"input_ids": (B, L), "labels": (B, L), "attention_mask": (B, L), "pixel_values": (N, 3, H, W)}``
    (AnyRes: ``"pixel_values": (N, crops, 3, H, W)`` and ``"image_sizes": (N, 2)``).

    L is the longest sample (rounded up to `pad_to_multiple_of`); padding uses `pad_token_id` in `input_ids`,
    `label_pad_id` in `labels` and 0 in `attention_mask`, on `padding_side`. `pixel_values` holds the images of
    the N image rows in row order; text-only rows contribute none (no dummy image goes through the vision tower),
    and a batch without image rows has no `pixel_values` key. None samples (rows the dataset could not keep)
    are dropped. When samples were dropped or stand in for rows with unreadable images, the batch also carries
    `DATA_REPORT_KEY` (see there) so the trainer can count every row it was given.
    """

    pad_token_id: int
    padding_side: str = "right"
    label_pad_id: int = IGNORE_INDEX
    pad_to_multiple_of: int | None = None

    def __post_init__(self) -> None:
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")

    def __call__(self, features: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
        asked = len(features)
        unreadable = [feature[UNREADABLE_KEY] for feature in features if feature is not None and UNREADABLE_KEY in feature]
        features = [feature for feature in features if feature is not None]
        if not features:
            raise ValueError(
                "every row of this batch was dropped by the dataset (see CrocSupervisedDataset.stats and its "
                "warnings): is model_max_length too small for the image tokens?"
            )
        length = max(len(feature["input_ids"]) for feature in features)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of

        input_ids = torch.full((len(features), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), length), self.label_pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(features), length), dtype=torch.long)
        for row, feature in enumerate(features):
            size = len(feature["input_ids"])
            span = slice(0, size) if self.padding_side == "right" else slice(length - size, length)
            input_ids[row, span] = feature["input_ids"]
            labels[row, span] = feature["labels"]
            attention_mask[row, span] = 1

        batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
        images = [feature["pixel_values"] for feature in features if feature.get("pixel_values") is not None]
        if images:
            batch["pixel_values"] = stack_images(images)
        sizes = [feature["image_sizes"] for feature in features if feature.get("image_sizes") is not None]
        if sizes:
            batch["image_sizes"] = torch.stack(sizes)
        if unreadable or len(features) != asked:
            batch[DATA_REPORT_KEY] = {"rows": asked, "unreadable_rows": unreadable}
        return batch


def stack_images(images: list[torch.Tensor]) -> torch.Tensor:
    """Stack per-image pixel tensors; AnyRes images (`(crops, 3, H, W)`, different crop counts) are zero-padded to
    the most crops, as OneVision's image processor pads a batch (the model reads only each image's own crops)."""
    most = max(image.shape[0] for image in images)
    if all(image.shape == images[0].shape for image in images):
        return torch.stack(images)
    return torch.stack([torch.cat([image, image.new_zeros(most - image.shape[0], *image.shape[1:])])
                        for image in images])


def build_collator(
    processor: Any, padding_side: str = "right", pad_to_multiple_of: int | None = None
) -> CrocDataCollator:
    """A `CrocDataCollator` padding with `processor.tokenizer`'s pad token."""
    pad_token_id = processor.tokenizer.pad_token_id
    if pad_token_id is None:
        raise ValueError("the tokenizer has no pad token (LLaVA-1.5 adds <pad>); set one before training")
    return CrocDataCollator(
        pad_token_id=pad_token_id, padding_side=padding_side, pad_to_multiple_of=pad_to_multiple_of
    )


__all__ = ["DATA_REPORT_KEY", "CrocDataCollator", "build_collator"]
