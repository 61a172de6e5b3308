"""Croc's mixed attention: chosen spans of the sequence see each other bidirectionally, the rest stays causal.

The masks are built by `transformers.masking_utils.create_causal_mask` with the block overlay Gemma 3 and PaliGemma
use for bidirectional image tokens, so every attention backend gets the mask format it needs (additive float for
eager, bool for sdpa, BlockMask for flex). Language models that mix sliding-window and global layers (Gemma 2 and
3, Qwen2/3 with `use_sliding_window`, Mistral's all-sliding layers) get one mask per layer type, in the form their
own forward reads (a mapping keyed by layer type where the config has `layer_types`, the same form transformers'
`create_masks_for_generate` hands them): a single 4D mask would be used as it is by every layer and silently turn
the sliding layers global. On a sliding layer the window still holds inside a bidirectional block: a query sees no
key more than `sliding_window - 1` positions back, as Gemma 3 composes its own image blocks.

With `bidirectional_span="none"` no mask is built at all: the language model receives the 2D padding mask and
makes its own causal masks, so every backend (FlashAttention included) and every layer type works unchanged.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedConfig
from transformers.masking_utils import blockwise_overlay, create_causal_mask, sliding_window_overlay

from .constants import IGNORE_INDEX

# Backends that take no arbitrary mask: with them a mixed mask would silently stay causal.
MASKLESS_BACKEND_PREFIXES = ("flash_attention", "paged|flash", "kernels-community/flash")


def image_block_ids(image_token_mask: torch.BoolTensor) -> torch.LongTensor:
    """Paper span: each image's run of visual tokens is one bidirectional block.

    Args:
        image_token_mask: `(B, L)` True at visual-token positions.

    Returns:
        `(B, L)` long: block id (0, 1, ... per image within its row) at visual positions, -1 elsewhere (causal).
    """
    starts = image_token_mask.clone()
    starts[:, 1:] &= ~image_token_mask[:, :-1]
    ids = starts.long().cumsum(dim=1) - 1
    return torch.where(image_token_mask, ids, torch.full_like(ids, -1))


def prompt_block_ids(labels: torch.LongTensor, attention_mask: torch.Tensor | None, ignore_index: int = IGNORE_INDEX):
    """Released-code span: every (non-padding) token before the first supervised token is one bidirectional block.

    `labels` are aligned with `input_ids` (transformers shifts them inside the loss), so the first supervised
    token is the first position whose label is not `ignore_index`; the position just before it, which predicts
    it, is still inside the block and sees only earlier tokens. Rows with no supervised token are one block.

    Returns:
        `(B, L)` long: 0 inside the block, -1 elsewhere.
    """
    seq_len = labels.shape[1]
    supervised = labels != ignore_index
    first = torch.where(supervised.any(dim=1), supervised.float().argmax(dim=1), torch.full_like(labels[:, 0], seq_len))
    inside = torch.arange(seq_len, device=labels.device)[None, :] < first[:, None]
    if attention_mask is not None:
        inside &= attention_mask.bool()
    return torch.where(inside, torch.zeros_like(labels), torch.full_like(labels, -1))


def bidirectional_block_ids(
    span: str,
    image_token_mask: torch.BoolTensor,
    labels: torch.LongTensor | None,
    attention_mask: torch.Tensor | None,
) -> torch.LongTensor | None:
    """`block_sequence_ids` for `span` in {"image", "prompt", "none"} (None means plain causal)."""
    if span == "none":
        return None
    if span == "image":
        return image_block_ids(image_token_mask)
    if span == "prompt":
        if labels is None:
            raise ValueError("bidirectional_span='prompt' needs `labels` to find the first supervised token")
        return prompt_block_ids(labels, attention_mask)
    raise ValueError(f"unknown bidirectional_span {span!r}")


def check_mixed_attention_backend(backend: str | None) -> None:
    """Refuse attention backends that ignore custom masks: they would silently train stage 1.5 fully causal.
    The model calls this before every mixed-attention forward, the trainer before it loads anything."""
    backend = str(backend or "")
    if backend.startswith(MASKLESS_BACKEND_PREFIXES) or "flash" in backend:
        raise ValueError(
            f"Croc's mixed attention needs a backend that takes a custom mask (eager, sdpa, flex_attention); "
            f"the language model uses {backend!r}, which would silently stay causal. Load with "
            f"attn_implementation='sdpa' for stage 1.5, or set bidirectional_span='none'."
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


def _global_mask(text_config: PreTrainedConfig, inputs_embeds: torch.Tensor, attention_mask, block_ids):
    # The cache is passed by position: transformers 5.24 renamed that argument (`past_key_values` -> `cache`), and
    # stage 1.5 never has one.
    return create_causal_mask(text_config, inputs_embeds, attention_mask, None, block_sequence_ids=block_ids)


def _sliding_mask(text_config: PreTrainedConfig, inputs_embeds: torch.Tensor, attention_mask, block_ids):
    # window AND (causal OR block): `create_sliding_window_causal_mask(block_sequence_ids=...)` would OR the block in
    # after the window and let a block reach past it.
    return create_causal_mask(
        text_config, inputs_embeds, attention_mask, None,
        or_mask_function=blockwise_overlay(block_ids),
        and_mask_function=sliding_window_overlay(text_config.sliding_window),
    )


# Layer type -> builder of its mixed mask.
MIXED_MASK_BUILDERS = {"full_attention": _global_mask, "sliding_attention": _sliding_mask}


def build_mixed_attention_mask(
    text_config: PreTrainedConfig,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None,
    block_ids: torch.LongTensor | None,
):
    """What the language model takes as `attention_mask` in a stage-1.5 forward: causal, plus padding, plus the
    bidirectional blocks, for each of its layer types.

    Args:
        text_config: the language model's config (its `_attn_implementation` picks the mask format, its
            `layer_types` / `sliding_window` the layer types).
        inputs_embeds: `(B, L, D)`, used for batch size, length, dtype and device.
        attention_mask: `(B, L)` 1 for real tokens, 0 for padding (either side), or None.
        block_ids: `(B, L)` from `bidirectional_block_ids`, or None for plain causal.

    Returns:
        `attention_mask` itself when `block_ids` is None (the model builds its own causal masks, for any backend);
        otherwise the mask for the backend (4D tensor or BlockMask), or a mapping layer type -> mask for language
        models that take one.
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
    masks = {kind: MIXED_MASK_BUILDERS[kind](text_config, inputs_embeds, attention_mask, block_ids)
             for kind in layer_types}
    return masks if keyed else masks[layer_types[0]]
