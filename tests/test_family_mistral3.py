"""What only Mistral 3 does on the shared mechanism (the checks every family passes, its mask against the slow
reference with the break tokens inside the image's block included, are `tests/test_families.py`): Pixtral's
`[IMG_BREAK]` tokens interrupt an image's run of `[IMG]` placeholders, so an image's block is its whole extent.
"""

from __future__ import annotations

import torch

from modeling_croc.attention_mask import image_block_ids, image_extent_block_ids


def test_an_image_is_one_block_from_its_first_to_its_last_visual_token():
    """`image_extent_block_ids` on hand-written rows: the break token inside an image joins its rows; two images
    with nothing between them stay two blocks (their counts tell them apart), where the runs would merge them."""
    image, text = 9, 5
    rows = torch.tensor([[text, image, image, text, image, image, text, image, text],
                         [image, image, image, image, text, image, image, text, text]])
    counts = torch.tensor([4, 1, 2, 2, 2])
    expected = torch.tensor([[-1, 0, 0, 0, 0, 0, -1, 1, -1],
                             [2, 2, 3, 3, -1, 4, 4, -1, -1]])
    assert torch.equal(image_extent_block_ids(rows == image, counts), expected)
    assert torch.equal(image_block_ids(rows == image)[0], torch.tensor([-1, 0, 0, -1, 1, 1, -1, 2, -1]))
