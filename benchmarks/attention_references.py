"""The released code's approach to the mixed mask, re-implemented from METHOD.md (benchmark only): the slow
baseline that table (b) of the attention benchmark times ours against, and the ground truth of its equivalence
check.

Deliberately loop-based and kept out of the package: it exists to be measured, not used.
"""

from __future__ import annotations

import torch

from benchmarks.attention_setup import IGNORE_INDEX


def reference_blocks(
    span: str, image_token_mask: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor
) -> list[list[list[int]]]:
    """Per row, the bidirectional blocks as position lists, found by walking the tokens in Python."""
    blocks: list[list[list[int]]] = []
    for image_row, label_row, valid_row in zip(
        image_token_mask.tolist(), labels.tolist(), attention_mask.tolist(), strict=True
    ):
        row_blocks: list[list[int]] = []
        if span == "image":
            current: list[int] = []
            for position, is_image in enumerate(image_row):
                if is_image:
                    current.append(position)
                elif current:
                    row_blocks.append(current)
                    current = []
            if current:
                row_blocks.append(current)
        elif span == "prompt":
            block = []
            for position, (label, valid) in enumerate(zip(label_row, valid_row, strict=True)):
                if label != IGNORE_INDEX:
                    break
                if valid:
                    block.append(position)
            row_blocks.append(block)
        else:
            raise ValueError(span)
        blocks.append(row_blocks)
    return blocks


def reference_loop_mask(
    span: str,
    image_token_mask: torch.Tensor,
    labels: torch.Tensor,
    attention_mask: torch.Tensor,
    dtype: torch.dtype = torch.float32,
    per_element: bool = True,
) -> tuple[torch.Tensor, int]:
    """Dense float `(B, 1, L, L)` mask (0 = attend, dtype min = blocked), bidirectional block opened in Python.

    The causal + padding base is vectorised, as transformers 4.37 builds the 4D mask the released code starts
    from; the block is then opened by a Python loop: one scalar write per (query, key) pair (`per_element`) or
    one row-slice write per query token. Returns the mask and the number of loop-body executions.
    """
    batch, length = labels.shape
    min_value = torch.finfo(dtype).min
    causal = torch.full((length, length), min_value, dtype=dtype).triu(1)
    mask = causal[None, None].repeat(batch, 1, 1, 1)
    mask.masked_fill_(attention_mask[:, None, None, :] == 0, min_value)
    iterations = 0
    for row, row_blocks in enumerate(reference_blocks(span, image_token_mask, labels, attention_mask)):
        for block in row_blocks:
            if per_element:
                for query in block:
                    for key in block:
                        mask[row, 0, query, key] = 0.0
                        iterations += 1
            else:
                keys = torch.tensor(block, dtype=torch.long)
                for query in block:
                    mask[row, 0, query, keys] = 0.0
                    iterations += 1
    return mask, iterations
