"""What only SmolVLM does on the shared mechanism (`modeling_croc/stage15.py`), on a tiny SmolVLM built in code
(`croc_testing.smolvlm`: 16-px views, 4 tokens a view after the pixel shuffle), with images split into different tile
grids plus their global views, two of them in one row: an image's visual tokens are all its views' tokens, split out
of the per-row vision outputs by the token layout, and its bidirectional block is its whole extent. The checks every
family passes (registration, parity with `SmolVLMForConditionalGeneration`, the stage-1.5 step, the layer masks on
Llama and Qwen2, pool tokens, round trips) are `tests/test_families.py`'s, from the `smolvlm` spec.
"""

from __future__ import annotations

import pytest
import torch

from croc_testing.family_specs import SPECS_BY_NAME
from croc_testing.smolvlm import SMOLVLM_TOKENS, make_smolvlm_batch, tiny_croc_smolvlm_config
from modeling_croc.attention_mask import image_block_ids

SPEC = SPECS_BY_NAME["smolvlm"]


def test_an_image_is_all_its_views():
    """Counts come from the layout whatever image count the caller passes; the per-row outputs split into images,
    and a layout without a `<global-img>` closing every row's images is refused."""
    assert tiny_croc_smolvlm_config().visual_tokens_per_image() == 4  # one view's tokens
    croc = SPEC.build().eval()
    batch = make_smolvlm_batch(croc.config)
    counts = list(SPEC.token_counts)
    # The trainer passes the rows of pixel_values (here the 2 batch rows) as the image count: the layout decides.
    assert croc.image_token_counts(batch["input_ids"], len(batch["pixel_values"])).tolist() == counts
    assert croc.num_vtr_items(batch["input_ids"], 2) == sum(croc.config.num_masked_tokens(n) for n in counts)
    with torch.no_grad():
        rows = croc.model.croc_image_features(batch["pixel_values"],
                                              pixel_attention_mask=batch["pixel_attention_mask"])
        images = croc.model.croc_images_of(rows, batch["input_ids"])
    # Per row from the parent (3 views, then 1 + 5), per image here.
    assert [row.shape[0] for row in rows] == [12, 24] and [image.shape[0] for image in images] == counts
    torch.testing.assert_close(images[1], rows[1][:4], rtol=0, atol=0)
    torch.testing.assert_close(images[2], rows[1][4:], rtol=0, atol=0)
    # A layout whose rows end their images differently has no global token to read.
    broken = batch["input_ids"].clone()
    broken[0][broken[0] == SMOLVLM_TOKENS["global"]] = SMOLVLM_TOKENS["newline"]
    with pytest.raises(ValueError, match="introduced by one `<global-img>` token"):
        croc.image_token_counts(broken, 2)


def test_an_image_is_one_block_over_its_views():
    """The `"image"` span's blocks: one per image over its whole extent (the tokens between its views included,
    exactly the positions the suite's reference layout fills), where the runs of placeholders would give one per
    view (3, 1 and 5)."""
    croc = SPEC.build().eval()
    input_ids = make_smolvlm_batch(croc.config)["input_ids"]
    image_token_mask = input_ids == croc.config.image_token_id
    blocks = croc.model.croc_image_block_ids(image_token_mask, croc.model.image_token_counts(input_ids))
    assert [row[row >= 0].unique().tolist() for row in blocks] == [[0], [1, 2]]
    assert torch.equal(blocks >= 0, SPEC.reference_layout(input_ids) == croc.config.image_token_id)
    assert [int(row.max()) + 1 for row in image_block_ids(image_token_mask)] == [3, 6]
