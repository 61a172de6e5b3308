"""What only Gemma 3 does on the shared mechanism (the checks every family passes are `tests/test_families.py`): a
fixed token count per image; its image-bidirectional mask from `token_type_ids`, which reaches the parent at
inference and which stage 1.5's span "image" reproduces exactly; `normalize_visual_tokens` read back as one tensor;
packed rows refused, with why.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from croc_testing.family_specs import SPECS_BY_NAME, inputs, layer_masks
from croc_testing.gemma3 import GEMMA3_TOKENS_PER_IMAGE
from modeling_croc import CrocGemma3Config
from modeling_croc.convert import croc_to_llava

SPEC = SPECS_BY_NAME["gemma3"]


def test_config_declares_a_fixed_token_count():
    """Every image has `mm_tokens_per_image` visual tokens, the paper's mask ratio of which is 3."""
    croc = SPEC.build(croc_pretraining=True)
    assert not CrocGemma3Config.croc_variable_token_count
    assert croc.config.visual_tokens_per_image() == croc.config.mm_tokens_per_image == GEMMA3_TOKENS_PER_IMAGE
    # vtr_positions="masked" (paper): round(0.75 * 4) = 3 per image.
    assert croc.config.num_masked_tokens(GEMMA3_TOKENS_PER_IMAGE) == 3


def test_token_type_ids_reach_the_parent_at_inference():
    """Gemma 3's forward arguments stay visible (generate keeps `token_type_ids` for its image mask by them), and
    they reach the parent: without them its image tokens are causal and the logits differ, equal to the parent's
    without them too."""
    croc = SPEC.build().eval()
    plain = croc_to_llava(croc)
    assert "token_type_ids" in inspect.signature(croc.forward).parameters
    assert "token_type_ids" in inspect.signature(croc.model.forward).parameters
    batch = inputs(SPEC.batch(croc, 2))
    without_types = {name: value for name, value in batch.items() if name != "token_type_ids"}
    with torch.no_grad():
        assert not torch.allclose(croc(**without_types).logits, plain(**batch).logits)
        torch.testing.assert_close(croc(**without_types).logits, plain(**without_types).logits, rtol=0, atol=0)


def test_normalized_visual_tokens_reach_the_language_model_at_inference():
    """`normalize_visual_tokens` (the released code's step, at inference too) on Gemma 3, whose forward reads the
    features back as one tensor: each image token enters the language model with unit norm."""
    croc = SPEC.build(normalize_visual_tokens=True).eval()
    batch = inputs(SPEC.batch(croc, 2))
    received = []
    hook = croc.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: received.append(kwargs["inputs_embeds"]), with_kwargs=True)
    try:
        with torch.no_grad():
            croc(**batch)
    finally:
        hook.remove()
    image_embeds = received[0][batch["input_ids"] == croc.config.image_token_id]
    torch.testing.assert_close(image_embeds.norm(dim=-1), torch.ones(image_embeds.shape[0]))


def test_image_span_mask_equals_gemma3s_own_image_mask():
    """With span "image", every layer's stage-1.5 mask is, element by element, the one Gemma 3 itself builds from
    `token_type_ids` on the plain forward (sliding and global)."""
    croc = SPEC.build(croc_pretraining=True, bidirectional_span="image").train()
    batch = SPEC.batch(croc, 2)
    with torch.no_grad():
        own = layer_masks(croc, lambda: croc(**inputs(batch), croc_objectives=False))
        mixed = layer_masks(croc, lambda: croc(**batch, croc_generator=torch.Generator().manual_seed(0)))
    assert sorted(own) == sorted(mixed) == [0, 1]
    for index in own:
        assert torch.equal(mixed[index], own[index]), index
    # Gemma 3's image blocks are bidirectional: the first image token sees the image's last one.
    first = int((batch["input_ids"][0] == croc.config.image_token_id).nonzero()[0])
    assert own[1][0, 0, first, first + GEMMA3_TOKENS_PER_IMAGE - 1] == 0


def test_packed_rows_are_refused_with_one_line():
    """Why: with position_ids restarting per sample, the sliding layer's image blocks are looked up at the sample's
    positions, so Gemma 3 itself gives a packed row's second sample other hidden states than alone."""
    croc = SPEC.build().eval()
    batch = SPEC.batch(croc, 0)
    lengths = batch["attention_mask"].sum(1).tolist()
    rows = [batch["input_ids"][index, -length:] for index, length in enumerate(lengths)]
    packed_ids = torch.cat(rows)[None]
    positions = torch.cat([torch.arange(length) for length in lengths])[None]
    plain = croc_to_llava(croc)
    with torch.no_grad():
        alone = plain.model(input_ids=rows[1][None], pixel_values=batch["pixel_values"][2:],
                            token_type_ids=(rows[1][None] == croc.config.image_token_id).long()).last_hidden_state
        packed = plain.model(input_ids=packed_ids, pixel_values=batch["pixel_values"], position_ids=positions,
                             token_type_ids=(packed_ids == croc.config.image_token_id).long(),
                             use_cache=False).last_hidden_state
    assert not torch.allclose(packed[0, lengths[0]:], alone[0], atol=1e-3)
    croc = croc.train()
    croc.config.croc_pretraining = True
    with pytest.raises(ValueError, match="Gemma 3's sliding layers would read the image blocks"):
        croc(input_ids=packed_ids, pixel_values=batch["pixel_values"], position_ids=positions,
             token_type_ids=(packed_ids == croc.config.image_token_id).long())
