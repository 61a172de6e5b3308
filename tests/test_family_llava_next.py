"""What only LLaVA-NeXT does on the shared mechanism (the checks every family passes, its AnyRes token counts
included, are `tests/test_families.py`): `normalize_visual_tokens` per crop, the newline tokens left alone.
"""

from __future__ import annotations

import torch

from croc_testing.family_specs import SPECS_BY_NAME

SPEC = SPECS_BY_NAME["llava_next"]


def test_normalisation_is_per_crop_and_leaves_the_newline_tokens():
    """`normalize_visual_tokens` normalises each crop's projected tokens before packing, as the released code's
    `encode_images`: every packed token has unit norm except the newline tokens, which stay the learned vector."""
    croc = SPEC.build(normalize_visual_tokens=True).eval()
    batch = SPEC.batch(croc, 2)
    with torch.no_grad():
        croc.model.image_newline.mul_(3.0 / croc.model.image_newline.norm())  # a norm no normalised token has
        features = torch.cat(croc.model.croc_image_features(batch["pixel_values"], batch["image_sizes"]))
    newline = (features == croc.model.image_newline).all(-1)
    assert newline.sum() > 0
    torch.testing.assert_close(features[newline].norm(dim=-1), torch.full((int(newline.sum()),), 3.0))
    torch.testing.assert_close(features[~newline].norm(dim=-1), torch.ones(int((~newline).sum())))
