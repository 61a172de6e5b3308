"""Croc's mixed attention without an L x L mask: the queries are split into segments, each computed by one call of a
dense kernel, every query row exactly once.

Croc's pattern, per sample: a query inside a bidirectional block [s, e) (one image's visual tokens, or the prompt)
sees every key of its sample before e; every other query sees the keys at or before itself. Every query row belongs
to exactly one of these segments, and a softmax over a row needs only that row's keys, so the segments can be
computed by separate calls and written into one output, with no log-sum-exp merge and no wasted row:

* a block's queries [s, e): keys [sample_start, e), **not causal**;
* the queries between two blocks (or before the first, after the last) [a, b): keys [sample_start, b), **causal,
  aligned bottom-right** (the last query sees every key, the first sees the keys up to itself).

On a sliding-window layer (window W) every query also drops the keys more than W - 1 positions back, as the mask
path's `sliding_window_overlay` does. Padding and the samples of a packed row are never in any segment's keys, so
no cross-sample pair is computed at all: packing pays even with a bidirectional span.

`build_attention_segments` turns a batch's layout (the block ids of `modeling_croc.attention_mask`, the padding
mask, the positions of packed samples) into `AttentionSegments`, once per forward; the model hands it to every
layer through its keyword arguments (`croc_attention_segments`), and `split_attention_forward`, registered with
transformers' `AttentionInterface` under `SPLIT_ATTENTION`, computes each layer:

* on CUDA, with PyTorch's own varlen FlashAttention (`torch.nn.attention.varlen.varlen_attn`, two calls: the
  blocks, then the causal segments; keys gathered per segment), or flash-attn's `flash_attn_varlen_func` when it
  is installed and the layer needs what only it has (attention dropout);
* elsewhere (and as the reference the CUDA path is tested against), with `scaled_dot_product_attention` on each
  segment.

A forward without segments (inference, generation with a cache, a model loaded with `croc_split` outside
`CrocModel`) runs transformers' own sdpa path with the mask transformers builds for it (`sdpa_mask` is registered
under the same name). Soft-capped attention (Gemma 2) has no kernel here: the trainer refuses `croc_split` for it.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, find_packed_sequence_indices, sdpa_mask
from transformers.utils import logging

logger = logging.get_logger(__name__)

# The attention implementation name a Croc model is loaded with to take this path
# (`attn_implementation="croc_split"`, or `{"text_config": "croc_split", "vision_config": "sdpa"}`).
SPLIT_ATTENTION = "croc_split"
# The keyword the segments travel under, from `CrocModel` down to every attention layer.
SEGMENTS_KEY = "croc_attention_segments"


@dataclass
class AttentionSegments:
    """The query segments of one batch of `batch_size` rows of `length` tokens (see the module docstring).

    Attributes:
        rows, q_start, q_end, k_start, k_end: `(S,)` long, on the CPU: segment i covers queries
            [q_start[i], q_end[i]) of row rows[i] and reads keys [k_start[i], k_end[i]) of the same row.
        causal: `(S,)` bool: causal (aligned bottom-right) or not (a block).
    """

    batch_size: int
    length: int
    rows: torch.Tensor
    q_start: torch.Tensor
    q_end: torch.Tensor
    k_start: torch.Tensor
    k_end: torch.Tensor
    causal: torch.Tensor
    _device_plans: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return int(self.rows.numel())

    def segments(self) -> list[tuple[int, int, int, int, int, bool]]:
        """(row, q_start, q_end, k_start, k_end, causal) of every segment, in order."""
        return list(zip(self.rows.tolist(), self.q_start.tolist(), self.q_end.tolist(), self.k_start.tolist(),
                        self.k_end.tolist(), self.causal.tolist()))

    def kernel_plan(self, device: torch.device) -> dict[str, Any]:
        """What the varlen kernels take, per group (blocks, causal segments): flat query and key indices into the
        `(batch_size * length)` token axis, cumulative lengths and the longest lengths. Built once per device, on
        the first layer that asks."""
        key = str(device)
        if key not in self._device_plans:
            self._device_plans[key] = {name: _group_plan([s for s in self.segments() if s[5] == causal], self.length,
                                                         device) for name, causal in (("blocks", False),
                                                                                      ("causal", True))}
        return self._device_plans[key]


def _group_plan(segments: list[tuple], length: int, device: torch.device) -> dict[str, Any] | None:
    if not segments:
        return None
    q_index = torch.cat([torch.arange(qs, qe) + row * length for row, qs, qe, _, _, _ in segments])
    k_index = torch.cat([torch.arange(ks, ke) + row * length for row, _, _, ks, ke, _ in segments])
    q_lengths = torch.tensor([qe - qs for _, qs, qe, _, _, _ in segments])
    k_lengths = torch.tensor([ke - ks for _, _, _, ks, ke, _ in segments])
    zero = torch.zeros(1, dtype=torch.long)
    return {"q_index": q_index.to(device), "k_index": k_index.to(device),
            "cu_q": torch.cat([zero, q_lengths.cumsum(0)]).to(device=device, dtype=torch.int32),
            "cu_k": torch.cat([zero, k_lengths.cumsum(0)]).to(device=device, dtype=torch.int32),
            "max_q": int(q_lengths.max()), "max_k": int(k_lengths.max())}


def build_attention_segments(
    shape: torch.Size | tuple[int, int],
    block_ids: torch.LongTensor | None = None,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.LongTensor | None = None,
) -> AttentionSegments:
    """The segments of a batch of `shape` `(B, L)`.

    Args:
        block_ids: `(B, L)` from `modeling_croc.attention_mask.bidirectional_block_ids` (-1 causal, >= 0 a block),
            or None for plain causal attention (stages 1 and 2).
        attention_mask: `(B, L)` 1 for real tokens, 0 for padding (either side); its real tokens must be contiguous
            in each row, as both padding sides leave them.
        position_ids: `(B, L)` positions; without `attention_mask` the samples of a packed row are found from them
            the way transformers finds them (`masking_utils.find_packed_sequence_indices`).
    """
    batch_size, length = int(shape[0]), int(shape[1])
    samples = None
    if attention_mask is None and position_ids is not None:
        samples = find_packed_sequence_indices(position_ids.expand(batch_size, -1))
    samples = None if samples is None else samples.cpu()
    blocks = None if block_ids is None else block_ids.cpu()
    real = None if attention_mask is None else attention_mask.cpu().bool()
    found: list[tuple[int, int, int, int, int, bool]] = []
    for row in range(batch_size):
        for start, end in _samples_of_row(row, length, samples, real):
            found += _sample_segments(row, start, end, None if blocks is None else blocks[row, start:end].tolist())
    columns = list(zip(*found)) if found else [()] * 6
    as_long = [torch.tensor(column, dtype=torch.long) for column in columns[:5]]
    return AttentionSegments(batch_size, length, *as_long, causal=torch.tensor(columns[5], dtype=torch.bool))


def _samples_of_row(row: int, length: int, samples: torch.Tensor | None,
                    real: torch.Tensor | None) -> list[tuple[int, int]]:
    """[start, end) of every sample of a row: the real tokens of a padded row, or each packed sample."""
    if real is not None:
        positions = real[row].nonzero().flatten()
        if positions.numel() == 0:
            return []
        start, end = int(positions[0]), int(positions[-1]) + 1
        if end - start != positions.numel():
            raise ValueError("croc_split needs each row's real tokens contiguous (left or right padding)")
        return [(start, end)]
    if samples is None:
        return [(0, length)]
    ids = samples[row]
    bounds = (ids[1:] != ids[:-1]).nonzero().flatten().add(1).tolist()
    edges = [0, *bounds, length]
    return list(zip(edges[:-1], edges[1:]))


def _sample_segments(row: int, start: int, end: int, blocks: list[int] | None) -> list[tuple]:
    """The segments of one sample [start, end): its blocks (runs of equal block ids >= 0) and the causal stretches
    around them."""
    runs = []
    if blocks is not None:
        offset = 0
        while offset < len(blocks):
            block, stop = blocks[offset], offset + 1
            while stop < len(blocks) and blocks[stop] == block:
                stop += 1
            if block >= 0:
                runs.append((start + offset, start + stop, block))
            offset = stop
        if len({block for _, _, block in runs}) != len(runs):
            raise ValueError("croc_split needs each bidirectional block contiguous within its sample")
    segments, position = [], start
    for block_start, block_end, _ in runs:
        if position < block_start:
            segments.append((row, position, block_start, start, block_start, True))
        segments.append((row, block_start, block_end, start, block_end, False))
        position = block_end
    if position < end:
        segments.append((row, position, end, start, end, True))
    return segments


# ---- the attention function ----

def split_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention of one layer (transformers' interface: `query` `(B, H, L, D)`, `key`/`value` `(B, H_kv, L, D)`;
    returns `(B, L, H, D)`). With `croc_attention_segments` among the keyword arguments it computes the segments
    (the mask transformers passes is then a placeholder and is not read); without, it is transformers' sdpa."""
    segments: AttentionSegments | None = kwargs.pop(SEGMENTS_KEY, None)
    if softcap is not None:
        # Neither the segments' kernels nor sdpa (the path without segments) cap the logits: refused in training
        # and inference alike, rather than an inference that silently drops the cap.
        raise ValueError(f"{SPLIT_ATTENTION} has no soft-capped kernel ({type(module).__name__} caps its attention "
                         "logits): load the model with eager")
    if segments is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if kwargs.get("output_attentions", False):
        logger.warning_once(f"{SPLIT_ATTENTION} computes no attention weights (no L x L matrix): "
                            "`output_attentions=True` returns none; load the model with eager to get them")
    if key.shape[2] != query.shape[2]:
        raise ValueError(f"{SPLIT_ATTENTION} computes a forward without cached keys ({query.shape[2]} queries, "
                         f"{key.shape[2]} keys)")
    dropout = dropout if module.training else 0.0
    window = int(sliding_window) if sliding_window else None
    if query.is_cuda and _kernel_available(dropout):
        output = _varlen_kernels(query, key, value, segments, scaling, window, dropout)
    else:
        if query.is_cuda:
            logger.warning_once(f"{SPLIT_ATTENTION}: attention dropout {dropout} needs flash-attn's varlen kernel "
                                "(PyTorch's has no dropout), which is not installed: each segment runs through sdpa "
                                "one by one, correct but slow (pip install flash-attn, or attention_dropout=0)")
        output = _segment_reference(query, key, value, segments, scaling, window, dropout)
    return output, None


def _segment_reference(query, key, value, segments: AttentionSegments, scaling, window, dropout) -> torch.Tensor:
    """`scaled_dot_product_attention` on each segment, written into its rows of one output `(B, L, H, D)`."""
    batch, heads, length, dim = query.shape
    output = query.new_zeros(batch, length, heads, dim)
    gqa = key.shape[1] != heads
    for row, q_start, q_end, k_start, k_end, causal in segments.segments():
        is_causal, mask = False, None
        if causal and window is None:
            # No mask tensor: sdpa's causal kernel, or PyTorch's bottom-right causal bias for a longer key range.
            if q_end - q_start == k_end - k_start:
                is_causal = True
            else:
                mask = causal_lower_right(q_end - q_start, k_end - k_start)
        else:
            mask = segment_mask(q_start, q_end, k_start, k_end, causal, window, query.device)
        out = F.scaled_dot_product_attention(
            query[row:row + 1, :, q_start:q_end], key[row:row + 1, :, k_start:k_end],
            value[row:row + 1, :, k_start:k_end], attn_mask=mask, is_causal=is_causal, dropout_p=dropout,
            scale=scaling, enable_gqa=gqa)
        output[row, q_start:q_end] = out[0].transpose(0, 1)
    return output


def segment_mask(q_start: int, q_end: int, k_start: int, k_end: int, causal: bool, window: int | None,
                 device: torch.device | None = None) -> torch.Tensor | None:
    """`(q, k)` bool mask of one segment (None where every pair is seen): causal pairs aligned bottom-right, and on a
    sliding layer no key more than `window - 1` positions before its query."""
    if not causal and window is None:
        return None
    q = torch.arange(q_start, q_end, device=device)[:, None]
    k = torch.arange(k_start, k_end, device=device)[None, :]
    allowed = torch.ones(q_end - q_start, k_end - k_start, dtype=torch.bool, device=device)
    if causal:
        allowed &= k <= q
    if window is not None:
        allowed &= q - k < window
    return allowed


def _kernel_available(dropout: float) -> bool:
    if dropout > 0:
        return importlib.util.find_spec("flash_attn") is not None
    return importlib.util.find_spec("torch.nn.attention.varlen") is not None


def _varlen_kernels(query, key, value, segments: AttentionSegments, scaling, window, dropout) -> torch.Tensor:
    """The blocks and the causal segments as two varlen FlashAttention calls over gathered tokens."""
    batch, heads, length, dim = query.shape
    tokens_q = query.transpose(1, 2).reshape(batch * length, heads, dim)
    tokens_k = key.transpose(1, 2).reshape(batch * length, key.shape[1], dim)
    tokens_v = value.transpose(1, 2).reshape(batch * length, value.shape[1], dim)
    output = tokens_q.new_zeros(batch * length, heads, dim)
    left = -1 if window is None else window - 1
    for name, plan in segments.kernel_plan(query.device).items():
        if plan is None:
            continue
        causal = name == "causal"
        args = (tokens_q.index_select(0, plan["q_index"]), tokens_k.index_select(0, plan["k_index"]),
                tokens_v.index_select(0, plan["k_index"]), plan["cu_q"], plan["cu_k"], plan["max_q"], plan["max_k"])
        if dropout > 0:
            from flash_attn import flash_attn_varlen_func

            out = flash_attn_varlen_func(*args, dropout_p=dropout, softmax_scale=scaling, causal=causal,
                                         window_size=(left, 0 if causal else -1))
        else:
            from torch.nn.attention.varlen import varlen_attn

            out = varlen_attn(*args, scale=scaling, window_size=(left, 0 if causal else -1),
                              **_gqa_keyword(varlen_attn, key.shape[1], heads))
        output = output.index_copy(0, plan["q_index"], out)
    return output.view(batch, length, heads, dim)


def _gqa_keyword(varlen_attn: Callable, key_heads: int, heads: int) -> dict[str, bool]:
    """`varlen_attn`'s GQA keyword for keys and values with fewer heads than the queries: PyTorch 2.13 refuses them
    unless `enable_gqa=True`; earlier releases (2.11's, read) have no such argument and hand them to the
    FlashAttention kernel as they are, which groups the query heads itself (its check that the key/value heads
    divide the query heads is in 2.11's libtorch_cuda)."""
    if key_heads != heads and _takes_enable_gqa(varlen_attn):
        return {"enable_gqa": True}
    return {}


@functools.cache
def _takes_enable_gqa(varlen_attn: Callable) -> bool:
    return "enable_gqa" in inspect.signature(varlen_attn).parameters


def split_attention_problem(text_config) -> str | None:
    """Why `SPLIT_ATTENTION` cannot run a language model, or None: a model that soft-caps its attention logits
    (Gemma 2) needs a kernel with soft-capping, which PyTorch's varlen kernel and the CPU reference lack."""
    if getattr(text_config, "attn_logit_softcapping", None):
        return (f"{SPLIT_ATTENTION}: {text_config.model_type} soft-caps its attention logits, which no kernel of the "
                "split path does (nor sdpa); use the mask path with attn_implementation eager")
    return None


def mask_placeholder(batch_size: int, device: torch.device) -> torch.Tensor:
    """What the language model gets as its attention mask when the segments carry the layout: an empty 4D tensor,
    which `create_causal_mask` passes through as it is (a 4D mask is used as given), so no L x L mask is built."""
    return torch.empty(batch_size, 1, 0, 0, dtype=torch.bool, device=device)


def register_split_attention() -> None:
    """Register `SPLIT_ATTENTION` with transformers (the attention function, and sdpa's mask builder for forwards
    without segments)."""
    AttentionInterface.register(SPLIT_ATTENTION, split_attention_forward)
    AttentionMaskInterface.register(SPLIT_ATTENTION, sdpa_mask)



# Importing the model code registers the name, for this package and for a saved folder loaded with trust_remote_code.
register_split_attention()

__all__ = ["SEGMENTS_KEY", "SPLIT_ATTENTION", "AttentionSegments", "build_attention_segments", "mask_placeholder",
           "register_split_attention", "segment_mask", "split_attention_forward", "split_attention_problem"]
