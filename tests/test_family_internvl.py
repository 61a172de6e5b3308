"""What only InternVL does on the shared mechanism (`modeling_croc/stage15.py`), on a tiny InternVL built in code
(`croc_testing.internvl`: 16-px tiles, 4 tokens a tile after the pixel shuffle), with images of 1, 3 and 2 tiles: an
image's visual tokens are all its tiles' tokens, joined from the per-tile vision outputs by the image runs of
`input_ids`. The checks every family passes (registration, parity with `InternVLForConditionalGeneration`, the
stage-1.5 step, the layer masks, pool tokens, round trips) are `tests/test_families.py`'s, from the `internvl` spec.
"""

from __future__ import annotations

import pytest
import torch

from croc_testing.family_specs import SPECS_BY_NAME
from croc_testing.internvl import INTERNVL_TILES, make_internvl_batch, tiny_croc_internvl_config

SPEC = SPECS_BY_NAME["internvl"]


def test_an_image_is_all_its_tiles():
    """Counts come from the image runs whatever image count the caller passes; the per-tile outputs join into
    images in the processor's tile order, and runs that do not split into the tiles given are refused."""
    assert tiny_croc_internvl_config().visual_tokens_per_image() == 4  # one tile's tokens
    croc = SPEC.build().eval()
    batch = make_internvl_batch(croc.config)
    counts = list(SPEC.token_counts)
    # The trainer passes the rows of pixel_values (tiles, here 6) as the image count: the runs decide.
    assert croc.image_token_counts(batch["input_ids"], len(batch["pixel_values"])).tolist() == counts
    assert croc.num_vtr_items(batch["input_ids"], 6) == sum(croc.config.num_masked_tokens(n) for n in counts)
    with torch.no_grad():
        tiles = croc.model.croc_image_features(batch["pixel_values"])
        images = croc.model.croc_images_of(tiles, batch["input_ids"])
    assert len(tiles) == sum(INTERNVL_TILES) and [image.shape[0] for image in images] == counts
    # The second image is tiles 1, 2, 3 in the processor's order.
    torch.testing.assert_close(images[1], torch.cat(tiles[1:4]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="do not split into the 5 tiles"):
        croc.model.croc_images_of(tiles[:5], batch["input_ids"])
