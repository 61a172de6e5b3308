"""Batches `CrocSupervisedDataset` samples: pad the token sequences (or pack them), stack the images of the image rows.

Packing (`CrocDataCollator(packing=True)`) concatenates the samples of a batch into fewer, fuller rows instead of
padding each to the longest one:

* samples are placed first-fit, in the order they arrive (the sampler's modality-grouped order), into packed rows
  of at most `packing_max_length` tokens; a sample is never split, so an image's tokens stay together;
* `position_ids` restart at 0 for every sample, and there is no `attention_mask`: this is the layout from which
  `transformers.masking_utils` detects packed sequences (`find_packed_sequence_indices`) and builds a mask in
  which every sample sees only itself; the FlashAttention integration reads the same layout as its varlen path;
* the first label of every sample is the ignore index, so a sample's first token is never predicted from the
  previous sample's last one (its label was never predicted unpacked either: LLaVA rows start with BOS);
* the padding that remains at the end of a packed row is a sequence of its own (positions from 0, ignored
  labels), so no real token attends to it;
* `pixel_values` follow the images' order in the packed rows (what the model pairs with the image tokens), and
  `croc_image_order[k]` is the rank of the k-th of them among the batch's images as they arrived, so stage 1.5
  draws every image's token mask as if the batch had not been packed (`modeling_croc.replaced_positions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from modeling_croc.constants import IGNORE_INDEX

from .data import REPLACED_KEY, TRUNCATED_KEY

# Key of the batch's data report, present when rows were replaced (an unreadable image, a row that does not fit) or
# cut to fit, and in every batch of a collator built with `report_rows`: {"rows": rows asked for,
# "replaced_rows": [the record of each asked row that was replaced], "truncated_rows": [each sample cut to fit when
# it was asked for]}. `CrocTrainer` pops it before the forward and counts it (`trainer.data_report`); the model never
# sees it.
DATA_REPORT_KEY = "data_report"

# The collator's key for the draw order of the images; `CrocForConditionalGeneration.forward` takes it by this name.
IMAGE_ORDER_KEY = "croc_image_order"


def first_fit(lengths: Sequence[int], budget: int | None) -> list[list[int]]:
    """Indices of `lengths` grouped into packed rows: each length, in order, goes to the first row it still fits in.

    Args:
        lengths: token counts of the samples, in arrival order.
        budget: most tokens per packed row; None puts everything in one row. A sample longer than the budget gets a
            row of its own (the trainer's checks make the budget at least `model_max_length`, so it never happens
            in training).

    Returns:
        The packed rows, each a list of sample indices in arrival order; rows in order of opening.
    """
    rows: list[list[int]] = []
    used: list[int] = []
    for index, length in enumerate(lengths):
        target = next((r for r, total in enumerate(used) if budget is None or total + length <= budget), None)
        if target is None:
            rows.append([])
            used.append(0)
            target = len(rows) - 1
        rows[target].append(index)
        used[target] += length
    return rows


def _round_up(length: int, multiple: int | None) -> int:
    return -(-length // multiple) * multiple if multiple else length


@dataclass
class CrocDataCollator:
    """Samples -> ``{"input_ids": (B, L), "labels": (B, L), "attention_mask": (B, L), "pixel_values": (N, 3, H, W)}``
    (AnyRes: ``"pixel_values": (N, crops, 3, H, W)`` and ``"image_sizes": (N, 2)``; native resolution:
    ``"pixel_values": (patches, C * T * P * P)``, ``"image_grid_thw": (N, 3)`` and ``"mm_token_type_ids": (B, L)``;
    dynamic tiling (InternVL): ``"pixel_values": (tiles, 3, S, S)``, every image's tiles in row order, no padding;
    with `token_type_ids` (Gemma 3): ``"token_type_ids": (B, L)``, 1 at image placeholders, in every batch (with
    `token_types="suffix"`, PaliGemma's: 1 from each sample's first supervised token to its end, 0 on its prefix and
    the padding, as `PaliGemmaProcessor` writes a prefix and a suffix); patches
    at their own grid (Gemma 4): ``"pixel_values": (N, max_patches, 3 * P * P)``, ``"image_position_ids":
    (N, max_patches, 2)`` and ``"mm_token_type_ids": (B, L)``).

    L is the longest sample (rounded up to `pad_to_multiple_of`); padding uses `pad_token_id` in `input_ids`,
    `label_pad_id` in `labels` and 0 in `attention_mask`, on `padding_side`. `pixel_values` holds the images of
    the N image rows in row order; text-only rows contribute none (no dummy image goes through the vision tower),
    and a batch without image rows has no `pixel_values` key. When samples stand in for rows that could not be used
    or were cut to fit (always, with `report_rows`), the batch also carries `DATA_REPORT_KEY` (see there) so the
    trainer can count every row it was given.

    With `packing`, the samples are packed into R <= B rows (see the module docstring) and the batch is
    ``{"input_ids": (R, L), "labels": (R, L), "position_ids": (R, L), "pixel_values": (N, 3, H, W),
    "croc_image_order": (N,)}``, L the longest packed row. `packing_max_length` is the token budget of a packed
    row: None packs into rows no longer than the batch's longest sample (so the packed batch is never wider than
    the padded one, only shorter), 0 packs the whole batch into one row (the layout FlashAttention's varlen path
    needs), a positive value is a fixed budget.
    """

    pad_token_id: int
    padding_side: str = "right"
    label_pad_id: int = IGNORE_INDEX
    pad_to_multiple_of: int | None = None
    packing: bool = False
    packing_max_length: int | None = None
    # The trainer's collator sets it: a packed batch's rows are not the rows it was given, so the trainer cannot
    # count them from `input_ids`. Off by default, so a batch is the model's keyword arguments as it is.
    report_rows: bool = False
    # The image placeholder id, for native-resolution batches (`image_grid_thw`), whose `mm_token_type_ids` the
    # collator writes as their processor does.
    image_token_id: int | None = None
    # Whether padded batches carry `token_type_ids` (1 at `image_token_id`), as processors that return them for the
    # model's image attention write them (Gemma 3's: its image tokens attend to each other bidirectionally).
    token_type_ids: bool = False
    # What they mark: "image" placeholders (Gemma 3's), or the "suffix" (PaliGemma's: 1 from the first supervised
    # token to the end of the sample, its causal part; 0 on the prefix its model attends to both ways).
    token_types: str = "image"

    def __post_init__(self) -> None:
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")
        if self.packing and self.padding_side != "right":
            raise ValueError("packing appends the padding after the packed samples: padding_side must be 'right'")
        if self.token_types not in ("image", "suffix"):
            raise ValueError(f"token_types must be 'image' or 'suffix', got {self.token_types!r}")
        if self.token_type_ids and self.token_types == "image" and self.image_token_id is None:
            raise ValueError("token_type_ids marks image placeholders: the collator needs image_token_id")
        if self.packing_max_length is not None and self.packing_max_length < 0:
            raise ValueError(f"packing_max_length must be None, 0 or positive, got {self.packing_max_length}")

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if any(feature is None for feature in features):
            # `CrocSupervisedDataset` replaces every row it cannot use; a None comes from another dataset.
            raise ValueError("the dataset returned None for a row: replace unusable rows in the dataset "
                             "(as CrocSupervisedDataset does), the collator does not drop them")
        replaced = [feature[REPLACED_KEY] for feature in features if REPLACED_KEY in feature]
        truncated = [feature[TRUNCATED_KEY] for feature in features if TRUNCATED_KEY in feature]
        batch = self._pack(features) if self.packing else self._pad(features)
        if replaced or truncated or self.report_rows:
            batch[DATA_REPORT_KEY] = {"rows": len(features), "replaced_rows": replaced, "truncated_rows": truncated}
        return batch

    def _pad(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = _round_up(max(len(feature["input_ids"]) for feature in features), self.pad_to_multiple_of)
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
        grids = [feature["image_grid_thw"] for feature in features if feature.get("image_grid_thw") is not None]
        if grids:
            # Native resolution (Qwen2-VL's layout): every image's patches in one tensor, their grids beside them,
            # and the placeholder types the model computes its multimodal positions from (1 at image tokens).
            batch["pixel_values"] = torch.cat(images)
            batch["image_grid_thw"] = torch.stack(grids)
            if self.image_token_id is None:
                raise ValueError("a batch with image_grid_thw needs the collator's image_token_id "
                                 "(build_collator sets it from the processor)")
            batch["mm_token_type_ids"] = (input_ids == self.image_token_id).int()
        elif images:
            batch["pixel_values"] = join_images([feature for feature in features
                                                 if feature.get("pixel_values") is not None])
        if self.token_type_ids and self.token_types == "suffix":
            # A sample's first supervised token opens its suffix, which runs to its last token; padding stays 0.
            supervised = (labels != self.label_pad_id).long()
            batch["token_type_ids"] = (supervised.cumsum(dim=1) > 0).long() * attention_mask
        elif self.token_type_ids:
            batch["token_type_ids"] = (input_ids == self.image_token_id).long()
        sizes = [feature["image_sizes"] for feature in features if feature.get("image_sizes") is not None]
        if sizes:
            batch["image_sizes"] = torch.stack(sizes)
        masks = [feature["pixel_attention_mask"] for feature in features
                 if feature.get("pixel_attention_mask") is not None]
        if masks:  # split images (SmolVLM's): padded alike, 0 on the padding views and pixels
            batch["pixel_attention_mask"] = stack_images(masks)
        positions = [feature["image_position_ids"] for feature in features
                     if feature.get("image_position_ids") is not None]
        if positions:
            # Patches at their own grid (Gemma 4's): each image's patch positions, (-1, -1) at its padding patches as
            # its image processor writes them, and the placeholder types its image attention reads (1 at image tokens,
            # as its processor writes them: its image blocks are bidirectional on its sliding layers).
            batch["image_position_ids"] = stack_images(positions, fill=-1)
            if self.image_token_id is None:
                raise ValueError("a batch with image_position_ids needs the collator's image_token_id "
                                 "(build_collator sets it from the processor)")
            batch["mm_token_type_ids"] = (input_ids == self.image_token_id).long()
        return batch

    def packing_budget(self, lengths: Sequence[int]) -> int | None:
        """The token budget of a packed row for a batch of samples of these lengths (None: one row)."""
        if self.packing_max_length == 0:
            return None
        return max(lengths) if self.packing_max_length is None else self.packing_max_length

    def _pack(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = [len(feature["input_ids"]) for feature in features]
        rows = first_fit(lengths, self.packing_budget(lengths))
        width = _round_up(max(sum(lengths[i] for i in row) for row in rows), self.pad_to_multiple_of)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), self.label_pad_id, dtype=torch.long)
        position_ids = torch.empty((len(rows), width), dtype=torch.long)
        # Rank of each image sample among the batch's images in arrival order.
        image_rank = {}
        for index, feature in enumerate(features):
            if feature.get("pixel_values") is not None:
                image_rank[index] = len(image_rank)
        images, order = [], []
        for row, members in enumerate(rows):
            start = 0
            for index in members:
                feature, size = features[index], lengths[index]
                span = slice(start, start + size)
                input_ids[row, span] = feature["input_ids"]
                labels[row, span] = feature["labels"]
                labels[row, start] = self.label_pad_id
                position_ids[row, span] = torch.arange(size)
                start += size
                if index in image_rank:
                    images.append(feature["pixel_values"])
                    order.append(image_rank[index])
            # The padding tail restarts at 0 too: a sequence of its own that no sample attends to.
            position_ids[row, start:] = torch.arange(width - start)

        batch = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}
        if images:
            batch["pixel_values"] = torch.stack(images)
            batch[IMAGE_ORDER_KEY] = torch.tensor(order, dtype=torch.long)
        return batch


def stack_images(images: list[torch.Tensor], fill: int = 0) -> torch.Tensor:
    """Stack per-image pixel tensors, each padded with `fill` (zero) at the end of every dimension to the largest:
    AnyRes images (`(crops, 3, H, W)`, different crop counts) to the most crops, as OneVision's image processor pads a
    batch; native-resolution images with `image_sizes` (Pixtral's `(3, H, W)`) to the largest height and width,
    top-left, as Pixtral's does (the models read only each image's own crops or pixels); Gemma 4's patch positions
    with `fill=-1`, its padding patches' position."""
    if all(image.shape == images[0].shape for image in images):
        return torch.stack(images)
    shape = [max(sizes) for sizes in zip(*(image.shape for image in images))]
    stacked = images[0].new_full((len(images), *shape), fill)
    for index, image in enumerate(images):
        stacked[(index, *(slice(0, size) for size in image.shape))] = image
    return stacked


def join_images(items: Sequence[dict[str, Any]]) -> torch.Tensor:
    """The `pixel_values` of a batch from its image samples `items`, in row order: dynamic-tiling images (InternVL's:
    `(tiles, 3, S, S)` each, no `image_sizes`) concatenated into `(all tiles, 3, S, S)`, as their processor writes a
    batch and their model reads it (an image's tiles are known from its run of placeholders); others stacked
    (`stack_images`), split images with a `pixel_attention_mask` (SmolVLM's `(views, 3, S, S)`) included: their
    processor pads a batch's rows to the most views."""
    images = [item["pixel_values"] for item in items]
    if images[0].dim() == 4 and all(item.get("image_sizes") is None and item.get("pixel_attention_mask") is None
                                    for item in items):
        return torch.cat(images)
    return stack_images(images)


def build_collator(
    processor: Any,
    padding_side: str = "right",
    pad_to_multiple_of: int | None = None,
    packing: bool = False,
    packing_max_length: int | None = None,
    report_rows: bool = False,
) -> CrocDataCollator:
    """A `CrocDataCollator` padding with `processor.tokenizer`'s pad token; its batches carry `token_type_ids` when
    the processor itself (not its tokenizer, whose would be text segment ids) returns them (Gemma 3's, PaliGemma's),
    marking what the processor's mark (`token_types`: image placeholders unless it says "suffix", PaliGemma's)."""
    pad_token_id = processor.tokenizer.pad_token_id
    if pad_token_id is None:
        raise ValueError("the tokenizer has no pad token (LLaVA-1.5 adds <pad>); set one before training")
    return CrocDataCollator(
        pad_token_id=pad_token_id, padding_side=padding_side, pad_to_multiple_of=pad_to_multiple_of,
        packing=packing, packing_max_length=packing_max_length, report_rows=report_rows,
        image_token_id=getattr(processor, "image_token_id", None),
        token_type_ids=_returns_image_token_types(processor),
        token_types=getattr(processor, "token_types", "image"),
    )


def _returns_image_token_types(processor: Any) -> bool:
    """Whether `processor` adds `token_type_ids` to what its tokenizer returns (image-placeholder or suffix types)."""
    tokenizer_names = getattr(processor.tokenizer, "model_input_names", [])
    return "token_type_ids" in getattr(processor, "model_input_names", []) and "token_type_ids" not in tokenizer_names


__all__ = ["DATA_REPORT_KEY", "IMAGE_ORDER_KEY", "CrocDataCollator", "build_collator", "first_fit", "join_images"]
