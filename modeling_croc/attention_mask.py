"""Croc's mixed attention: chosen spans of the sequence see each other bidirectionally, the rest stays causal.

The masks are built by `transformers.masking_utils.create_causal_mask` with the block overlay Gemma 3 and PaliGemma
use for bidirectional image tokens, so every attention backend gets the mask format it needs (additive float for
eager, bool for sdpa, BlockMask for flex). Language models that mix sliding-window and global layers (Gemma 2 and
3, Qwen2/3 with `use_sliding_window`, Mistral's all-sliding layers) get one mask per layer type, in the form their
own forward reads (a mapping keyed by layer type where the config has `layer_types`, the same form transformers'
`create_masks_for_generate` hands them): a single 4D mask would be used as it is by every layer and silently turn
the sliding layers global. On a sliding layer the window still holds inside a bidirectional block: a query sees no
key more than `sliding_window - 1` positions back, as Gemma 3 composes its own image blocks. A recurrent layer
(`RECURRENT_LAYER_TYPES`: Qwen3.5's Gated DeltaNet, `"linear_attention"`, and LFM2's short gated convolution,
`"conv"`, in `layer_types`) is causal by construction and reads no attention mask, only the 2D padding mask: no
bidirectional block can apply to it, and it gets the padding mask its parent gives it.

With `bidirectional_span="none"` no mask is built at all: the language model receives the 2D padding mask and
makes its own causal masks, so every backend (FlashAttention included) and every layer type works unchanged.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedConfig
from transformers.cache_utils import Cache
from transformers.masking_utils import (
    and_masks,
    blockwise_overlay,
    create_causal_mask,
    create_recurrent_attention_mask,
    find_packed_sequence_indices,
    packed_sequence_mask_function,
    sliding_window_overlay,
)

from .constants import IGNORE_INDEX

# Backends that take no arbitrary mask: with them a mixed mask would silently stay causal.
MASKLESS_BACKEND_PREFIXES = ("flash_attention", "paged|flash", "kernels-community/flash")


def image_block_ids(image_token_mask: torch.BoolTensor) -> torch.LongTensor:
    """Each run of visual tokens as one bidirectional block: the `"image"` span where images are known only by
    their placeholders (two images with nothing between them make one run; the model, which knows each image's
    token count, uses `image_extent_block_ids`).

    Args:
        image_token_mask: `(B, L)` True at visual-token positions.

    Returns:
        `(B, L)` long: block id (0, 1, ... per image within its row) at visual positions, -1 elsewhere (causal).
    """
    starts = image_token_mask.clone()
    starts[:, 1:] &= ~image_token_mask[:, :-1]
    ids = starts.long().cumsum(dim=1) - 1
    return torch.where(image_token_mask, ids, torch.full_like(ids, -1))


def image_extent_block_ids(image_token_mask: torch.BoolTensor, token_counts: torch.LongTensor) -> torch.LongTensor:
    """Each image's extent is one bidirectional block: from its first to its last visual token, whatever lies
    between (Pixtral's processor closes every row of an image's tokens with a break token, which would split
    `image_block_ids`' runs into one block per row). Images are told apart by their token counts, not by runs, so
    two images with nothing between them stay two blocks.

    Args:
        image_token_mask: `(B, L)` True at visual-token positions.
        token_counts: `(num_images,)` visual tokens of each image, in the order the images fill the visual positions
            (row by row, left to right, as `masked_scatter` places them); they sum to `image_token_mask.sum()`.

    Returns:
        `(B, L)` long: the image's index in the batch at its extent's positions, -1 elsewhere (causal).
    """
    counts = token_counts.to(image_token_mask.device)
    image_of_token = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
    ids = torch.full(image_token_mask.shape, -1, dtype=torch.long, device=image_token_mask.device)
    ids[image_token_mask] = image_of_token
    # Image indices grow along a row, so the image of the last visual token at or before a position is a running
    # maximum and that of the first one at or after it a running minimum from the right: a position lies inside an
    # image's extent exactly when both are that image.
    before = ids.cummax(dim=1).values
    after = torch.where(ids >= 0, ids, torch.full_like(ids, counts.numel())).flip(1).cummin(dim=1).values.flip(1)
    return torch.where((before == after) & (before >= 0), before, torch.full_like(ids, -1))


def packed_segment_ids(position_ids: torch.LongTensor | None, shape: torch.Size) -> torch.LongTensor:
    """`(B, L)` index of the packed sample each token belongs to, read from `position_ids` the way transformers
    detects packed sequences (`masking_utils.find_packed_sequence_indices`: a new sample wherever the position does
    not go up by one); all zeros when `position_ids` is None or nothing is packed."""
    segments = None if position_ids is None else find_packed_sequence_indices(position_ids.expand(shape[0], -1))
    return torch.zeros(shape, dtype=torch.long) if segments is None else segments


def prompt_block_ids(
    labels: torch.LongTensor,
    attention_mask: torch.Tensor | None,
    ignore_index: int = IGNORE_INDEX,
    position_ids: torch.LongTensor | None = None,
) -> torch.LongTensor:
    """Released-code span: every (non-padding) token of a sample before its first supervised token is one
    bidirectional block.

    `labels` are aligned with `input_ids` (transformers shifts them inside the loss), so the first supervised
    token is the first position after the sample's first whose label is not `ignore_index`; the position just
    before it, which predicts it, is still inside the block and sees only earlier tokens. Samples with no
    supervised token are one block.
    In a packed batch (no `attention_mask`, `position_ids` restarting per sample: the layout transformers treats
    as packed) every sample has its own block.

    Returns:
        `(B, L)` long: the sample's index in its packed row (0 unpacked) inside the block, -1 elsewhere.
    """
    # Samples are told apart exactly where transformers' mask tells them apart: only without a 2D mask.
    segments = packed_segment_ids(position_ids if attention_mask is None else None, labels.shape).to(labels.device)
    starts = torch.ones_like(segments, dtype=torch.bool)
    starts[:, 1:] = segments[:, 1:] != segments[:, :-1]
    if attention_mask is not None:  # a left-padded row's sample starts at its first real token
        real = attention_mask.bool()
        starts[:, 1:] |= real[:, 1:] & ~real[:, :-1]
    # A sample's first label is never a target (nothing precedes it; the packing collator blanks it), so only the
    # later ones can end the block: padded and packed layouts then agree whatever that label holds.
    supervised = ((labels != ignore_index) & ~starts).long()
    seen = supervised.cumsum(dim=1)
    # Supervised tokens before the sample's start, carried along the sample: `seen` never decreases, so the running
    # maximum of its value at each sample start is the value at the current sample's start.
    before_sample = torch.where(starts, seen - supervised, torch.zeros_like(seen)).cummax(dim=1).values
    inside = seen == before_sample
    if attention_mask is not None:
        inside &= attention_mask.bool()
    return torch.where(inside, segments, torch.full_like(labels, -1))


def bidirectional_block_ids(
    span: str,
    image_token_mask: torch.BoolTensor,
    labels: torch.LongTensor | None,
    attention_mask: torch.Tensor | None,
    position_ids: torch.LongTensor | None = None,
) -> torch.LongTensor | None:
    """`block_sequence_ids` for `span` in {"image", "prompt", "none"} (None means plain causal); `position_ids`
    locate the samples of a packed batch (the "image" span needs them not: each image is its own block anyway)."""
    if span == "none":
        return None
    if span == "image":
        return image_block_ids(image_token_mask)
    if span == "prompt":
        if labels is None:
            raise ValueError("bidirectional_span='prompt' needs `labels` to find the first supervised token")
        return prompt_block_ids(labels, attention_mask, position_ids=position_ids)
    raise ValueError(f"unknown bidirectional_span {span!r}")


def is_maskless_backend(backend: str | None) -> bool:
    """Whether an attention backend ignores custom masks (the FlashAttention family)."""
    backend = str(backend or "")
    return backend.startswith(MASKLESS_BACKEND_PREFIXES) or "flash" in backend


def check_mixed_attention_backend(backend: str | None) -> None:
    """Refuse attention backends that ignore custom masks: they would silently train stage 1.5 fully causal.
    The model calls this before every mixed-attention forward, the trainer before it loads anything."""
    if is_maskless_backend(backend):
        raise ValueError(
            f"Croc's mixed attention needs a backend that takes a custom mask (eager, sdpa, flex_attention) or "
            f"computes the pattern itself (croc_split: FlashAttention's varlen kernels on CUDA); the language model "
            f"uses {backend!r}, which would silently stay causal. Load with attn_implementation='sdpa' or "
            f"'croc_split' for stage 1.5, or set bidirectional_span='none'."
        )


def attention_layer_types(text_config: PreTrainedConfig) -> tuple[tuple[str, ...], bool]:
    """The attention layer types of a language model and whether it reads its mask keyed by them.

    Mirrors how transformers' models (and `create_masks_for_generate`) decide: a config with `layer_types` takes a
    mapping from layer type to mask; without them every layer is sliding when `sliding_window` is set (Mistral),
    else global (Llama).
    """
    layer_types = getattr(text_config, "layer_types", None)
    if layer_types:
        return tuple(sorted(set(layer_types))), True
    if getattr(text_config, "sliding_window", None) is not None:
        return ("sliding_attention",), False
    return ("full_attention",), False


def _global_mask(text_config: PreTrainedConfig, inputs_embeds: torch.Tensor, attention_mask, block_ids, position_ids):
    # The cache is passed by position: transformers 5.24 renamed that argument (`past_key_values` -> `cache`), and
    # stage 1.5 never has one.
    return create_causal_mask(text_config, inputs_embeds, attention_mask, None, position_ids=position_ids,
                              block_sequence_ids=block_ids)


def _sliding_mask(text_config: PreTrainedConfig, inputs_embeds: torch.Tensor, attention_mask, block_ids,
                  position_ids):
    # window AND (causal OR block): `create_sliding_window_causal_mask(block_sequence_ids=...)` would OR the block in
    # after the window and let a block reach past it.
    window = sliding_window_overlay(text_config.sliding_window)
    samples = None
    if attention_mask is None and position_ids is not None:
        samples = find_packed_sequence_indices(position_ids.expand(inputs_embeds.shape[0], -1))
    if samples is None:
        return create_causal_mask(text_config, inputs_embeds, attention_mask, None, position_ids=position_ids,
                                  or_mask_function=blockwise_overlay(block_ids), and_mask_function=window)
    # Packed samples: transformers evaluates the extra mask functions at each sample's restarted positions, where
    # the block ids of the row's first sample sit. Here nothing is remapped: the samples are kept apart by their own
    # function, and the window and blocks read the row's indices (a sample is contiguous, so index distance is
    # position distance inside it).
    return create_causal_mask(text_config, inputs_embeds, None, None, position_ids=None,
                              or_mask_function=blockwise_overlay(block_ids),
                              and_mask_function=and_masks(window, packed_sequence_mask_function(samples)))


# Layer types that are causal by construction and read the 2D padding mask only (transformers builds theirs with
# `create_recurrent_attention_mask`): Qwen3.5's Gated DeltaNet (`"linear_attention"`, a causal convolution and a
# recurrence) and LFM2's short gated convolution (`"conv"`, a causal depthwise convolution over a few positions).
RECURRENT_LAYER_TYPES = ("linear_attention", "conv")


def recurrent_layer_mask(text_config: PreTrainedConfig, shape: torch.Size,
                         attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """What a recurrent layer (`RECURRENT_LAYER_TYPES`) takes as its mask, whatever the span and the attention path:
    the parent's own (`create_recurrent_attention_mask`: the 2D padding mask, None where nothing is padded). The layer
    is causal by construction (each position's output reads its own and earlier inputs, through a state or a causal
    convolution), so a bidirectional block cannot apply to it; the padding mask zeroes padding before it enters the
    state or the convolution window. `shape` is the batch's `(B, L)`."""
    # The parent's builder reads the embeddings for their length only.
    length_only = torch.empty(*shape[:2], 0, device=None if attention_mask is None else attention_mask.device)
    return create_recurrent_attention_mask(text_config, length_only, attention_mask)


def _recurrent_mask(text_config: PreTrainedConfig, inputs_embeds: torch.Tensor, attention_mask, block_ids,
                    position_ids):
    return recurrent_layer_mask(text_config, inputs_embeds.shape, attention_mask)


# Layer type -> builder of its mixed mask.
MIXED_MASK_BUILDERS = {"full_attention": _global_mask, "sliding_attention": _sliding_mask,
                       **dict.fromkeys(RECURRENT_LAYER_TYPES, _recurrent_mask)}


def text_position_ids(position_ids: torch.LongTensor | None) -> torch.LongTensor | None:
    """The positions that tell where a row's samples start, read as transformers' text models read them: `(B, L)`
    or `(L,)` positions as they are; multimodal (M-RoPE) positions `(4, B, L)` by their first row, the text
    positions; `(3, B, L)` ones mark no sample boundary (None), as in Qwen2-VL's text models."""
    if position_ids is None or position_ids.ndim != 3:
        return position_ids
    return position_ids[0] if position_ids.shape[0] == 4 else None


def is_packed_batch(attention_mask: torch.Tensor | None, position_ids: torch.LongTensor | None, batch_size: int) -> bool:
    """Whether transformers will read this batch as packed samples: no 2D mask and positions that restart inside a
    row (`masking_utils.find_packed_sequence_indices`), multimodal ones read by `text_position_ids`."""
    position_ids = text_position_ids(position_ids)
    if attention_mask is not None or position_ids is None:
        return False
    return find_packed_sequence_indices(position_ids.expand(batch_size, -1)) is not None


def prepare_packed_forward(text_config: PreTrainedConfig, batch_size: int, forward_kwargs: dict) -> None:
    """Make a packed batch's forward keep its samples apart, or refuse it; `forward_kwargs` is updated in place.

    * Cache: transformers detects packed samples only when no cache is passed (`_preprocess_mask_arguments`), and
      a Llama forward with `use_cache` (the config default) makes a fresh cache before it builds the mask, which
      would leave every sample of a row seeing the previous ones. A packed batch is a training layout, so
      `use_cache` is turned off; a cache passed in, or `use_cache=True` asked for, is an error.
    * FlashAttention: transformers sends packed samples through its varlen kernel only when the batch is one row
      (`modeling_flash_attention_utils._is_packed_sequence`); with several rows it runs the plain causal kernel
      on each row, samples attending to each other without any error. The trainer packs a whole micro-batch into
      one row for these backends (`CrocDataCollator(packing_max_length=0)`).
    """
    if any(isinstance(value, Cache) for value in forward_kwargs.values()) or forward_kwargs.get("use_cache"):
        raise ValueError("a packed batch (position_ids restarting per sample, no attention_mask) cannot use a cache")
    forward_kwargs["use_cache"] = False
    backend = text_config._attn_implementation
    if batch_size > 1 and is_maskless_backend(backend):
        raise ValueError(
            f"a packed batch of {batch_size} rows on {backend!r}: FlashAttention keeps packed samples apart only in "
            "a one-row batch (its varlen path); pack the micro-batch into one row "
            "(CrocDataCollator(packing_max_length=0)) or use sdpa / flex_attention"
        )


def build_mixed_attention_mask(
    text_config: PreTrainedConfig,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None,
    block_ids: torch.LongTensor | None,
    position_ids: torch.LongTensor | None = None,
):
    """What the language model takes as `attention_mask` in a stage-1.5 forward: causal, plus padding, plus the
    bidirectional blocks, for each of its layer types.

    A packed batch (no `attention_mask`, `position_ids` restarting at every sample) gets what transformers builds
    for packed sequences, each sample causal within itself and blind to the others, and the blocks on top: a
    bidirectional block never reaches across samples, because `create_causal_mask` intersects the union of causal
    and blocks with the same-sample mask.

    Args:
        text_config: the language model's config (its `_attn_implementation` picks the mask format, its
            `layer_types` / `sliding_window` the layer types).
        inputs_embeds: `(B, L, D)`, used for batch size, length, dtype and device.
        attention_mask: `(B, L)` 1 for real tokens, 0 for padding (either side), or None.
        block_ids: `(B, L)` from `bidirectional_block_ids`, or None for plain causal.
        position_ids: `(B, L)` positions; packed samples are found from them when `attention_mask` is None.

    Returns:
        `attention_mask` itself when `block_ids` is None (the model builds its own causal masks, for any backend);
        otherwise the mask for the backend (4D tensor or BlockMask), or a mapping layer type -> mask for language
        models that take one (a recurrent layer's: its parent's padding mask, `recurrent_layer_mask`).
    """
    if block_ids is None:
        return attention_mask
    check_mixed_attention_backend(text_config._attn_implementation)
    layer_types, keyed = attention_layer_types(text_config)
    unknown = [kind for kind in layer_types if kind not in MIXED_MASK_BUILDERS]
    if unknown:
        raise ValueError(
            f"mixed attention knows the layer types {sorted(MIXED_MASK_BUILDERS)}; this language model also has "
            f"{unknown}. Use bidirectional_span='none' with it."
        )
    masks = {kind: MIXED_MASK_BUILDERS[kind](text_config, inputs_embeds, attention_mask, block_ids, position_ids)
             for kind in layer_types}
    return masks if keyed else masks[layer_types[0]]
