"""What only LLaVA-OneVision-1.5 does on the shared mechanism (the checks every family passes, logits and generate
against the parent, masks against the slow reference, the stage-1.5 step, round trips, are `tests/test_families.py`):
its positions are plain 1D text positions (no M-RoPE), so unlike Qwen2.5-VL's, whose declarations it shares, its model
takes packed rows (position_ids restarting per sample) and gives each packed sample what its padded row gets.
"""

from __future__ import annotations

import pytest
import torch

from croc_testing.families import make_qwen_batch
from croc_testing.family_specs import SPECS_BY_NAME

SPEC = SPECS_BY_NAME["llava_onevision1_5"]
GRIDS = [(1, 4, 4), (1, 2, 6)]
TEXT_LENGTHS = [5, 7]


def _packed(batch: dict) -> dict:
    """The padded (left-padded) rows of `batch` as one packed row: each sample's tokens, its positions restarting at
    0, no attention mask (the collator's packed layout); the images in the same order."""
    real = batch["attention_mask"].bool()
    row = {name: torch.cat([batch[name][index][real[index]] for index in range(real.shape[0])])[None]
           for name in ("input_ids", "labels")}
    row["position_ids"] = torch.cat([torch.arange(int(length)) for length in real.sum(dim=1)])[None]
    return {**row, "pixel_values": batch["pixel_values"], "image_grid_thw": batch["image_grid_thw"]}


@pytest.mark.parametrize("span", ["image", "prompt"])
def test_packed_rows_equal_the_padded_batch(span: str):
    """A packed row's logits at every sample's tokens, and the stage-1.5 losses and pool assignment, equal the padded
    batch's (whose 1D positions start at the padding: RoPE reads only their differences)."""
    croc = SPEC.build(bidirectional_span=span).train()
    croc.config._attn_implementation = "sdpa"  # the trainer's packed path (the spec builds eager)
    padded = make_qwen_batch(croc.config, GRIDS, TEXT_LENGTHS)
    padded.pop("mm_token_type_ids")
    packed = _packed(padded)
    real = padded["attention_mask"].bool()
    for objectives in (False, True):
        with torch.no_grad():
            reference = croc(**padded, croc_objectives=objectives, croc_generator=torch.Generator().manual_seed(0))
            out = croc(**packed, croc_objectives=objectives, croc_generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(out.logits[0], reference.logits[real], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out.lm_loss, reference.lm_loss, rtol=1e-5, atol=1e-6)
        if objectives:
            assert reference.vtr_loss > 0
            torch.testing.assert_close(out.vtr_loss, reference.vtr_loss, rtol=1e-5, atol=1e-6)
            assert torch.equal(out.pool_ids, reference.pool_ids)
            assert torch.equal(out.replaced_token_mask, reference.replaced_token_mask)
