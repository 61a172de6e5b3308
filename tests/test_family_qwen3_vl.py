"""What only Qwen3-VL does on the shared mechanism (the checks every family passes, M-RoPE positions and packing
included, are `tests/test_families.py`): its DeepStack features in stage 1.5 (the plain forward's at kept tokens,
zeros at replaced ones) and precomputed image outputs that must carry them. Qwen3-VL-MoE declares the same
(`CrocQwen3VLModelMixin`), so each check runs on both.
"""

from __future__ import annotations

import pytest
import torch

from croc_testing.family_specs import SPECS_BY_NAME, FamilySpec, language_model_inputs

qwen3_vl_families = pytest.mark.parametrize("spec", [SPECS_BY_NAME["qwen3_vl"], SPECS_BY_NAME["qwen3_vl_moe"]],
                                            ids=str)


@qwen3_vl_families
def test_stage15_deepstack_features_are_the_kept_tokens_and_zero_at_replaced_ones(spec: FamilySpec):
    """The DeepStack inputs of the language model in stage 1.5: the same visual positions as the plain forward,
    and per level the plain forward's features at kept tokens, exact zeros where a pool token replaced the token
    (its features must not reach the language model another way; a pool token has no DeepStack features)."""
    croc = spec.build(croc_pretraining=True).train()
    batch = spec.batch(croc, 2)
    with language_model_inputs(croc) as calls, torch.no_grad():
        croc(**batch, croc_objectives=False)
        out = croc(**batch, croc_generator=torch.Generator().manual_seed(0))
    plain, stage15 = calls
    assert torch.equal(stage15["visual_pos_masks"], plain["visual_pos_masks"])
    assert torch.equal(plain["visual_pos_masks"], batch["input_ids"] == croc.config.image_token_id)
    # Images fill the visual positions in order: the replaced mask, flattened the same way.
    replaced = out.replaced_token_mask[out.visual_token_mask]
    assert replaced.any() and (~replaced).any()
    assert len(stage15["deepstack_visual_embeds"]) == len(plain["deepstack_visual_embeds"]) == 2
    for received, reference in zip(stage15["deepstack_visual_embeds"], plain["deepstack_visual_embeds"]):
        torch.testing.assert_close(received[~replaced], reference[~replaced], rtol=0, atol=0)
        assert torch.equal(received[replaced], torch.zeros_like(reference[replaced]))
        assert reference[replaced].abs().sum() > 0  # what was withheld was not zero already


@qwen3_vl_families
def test_stage15_takes_precomputed_image_outputs_with_their_deepstack_features(spec: FamilySpec):
    """`mm_encoder_outputs` (as the parent takes them, DeepStack features included) give the same step as pixels;
    without their DeepStack features they are refused."""
    croc = spec.build(croc_pretraining=True).train()
    batch = spec.batch(croc, 2)
    with torch.no_grad():
        from_pixels = croc(**batch, croc_generator=torch.Generator().manual_seed(0))
        image_outputs = croc.model.get_image_features(batch["pixel_values"], batch["image_grid_thw"],
                                                      return_dict=True)
        precomputed = croc(**{**batch, "pixel_values": None}, mm_encoder_outputs={"image": image_outputs},
                           croc_generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(precomputed.loss, from_pixels.loss, rtol=0, atol=0)
    del image_outputs.deepstack_features
    with pytest.raises(ValueError, match="DeepStack features"):
        croc(**{**batch, "pixel_values": None}, mm_encoder_outputs={"image": image_outputs})
