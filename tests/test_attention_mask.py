"""The mixed attention mask, element by element against a slow reference written from the definition."""

import pytest
import torch
from transformers import LlamaConfig

from croc_testing.batches import PAD_TOKEN_ID
from modeling_croc.attention_mask import bidirectional_block_ids, build_mixed_attention_mask

IMAGE = 126


def _rows(padding_side):
    """Three rows of different lengths: image in the middle, image first, and text only."""
    bodies = [
        [1, 10, 11] + [IMAGE] * 4 + [12, 13, 14, 15],
        [1] + [IMAGE] * 4 + [20, 21],
        [1, 30, 31, 32, 33],
    ]
    # Supervised tokens start at these offsets within each body.
    answer_starts = [9, 6, 3]
    width = max(map(len, bodies))
    input_ids = torch.full((3, width), PAD_TOKEN_ID)
    attention = torch.zeros(3, width, dtype=torch.long)
    labels = torch.full((3, width), -100)
    for r, (body, answer) in enumerate(zip(bodies, answer_starts)):
        start = width - len(body) if padding_side == "left" else 0
        input_ids[r, start:start + len(body)] = torch.tensor(body)
        attention[r, start:start + len(body)] = 1
        labels[r, start + answer:start + len(body)] = input_ids[r, start + answer:start + len(body)]
    return input_ids, attention, labels


def _reference(input_ids, attention, labels, span):
    """allowed[b, i, j] from the definition, with Python loops (slow, obviously right)."""
    batch, length = input_ids.shape
    allowed = torch.zeros(batch, length, length, dtype=torch.bool)
    for b in range(batch):
        supervised = [t for t in range(length) if labels[b, t] != -100]
        first_supervised = supervised[0] if supervised else length
        for i in range(length):
            for j in range(length):
                if not attention[b, j]:
                    continue
                causal = j <= i
                if span == "image":
                    both_image = input_ids[b, i] == IMAGE and input_ids[b, j] == IMAGE
                    bidirectional = bool(both_image)
                elif span == "prompt":
                    bidirectional = i < first_supervised and j < first_supervised and attention[b, i]
                else:
                    bidirectional = False
                allowed[b, i, j] = causal or bidirectional
    return allowed


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("span", ["image", "prompt", "none"])
def test_mixed_mask_matches_reference(span, padding_side, attn):
    input_ids, attention, labels = _rows(padding_side)
    config = LlamaConfig(hidden_size=8, num_attention_heads=2, num_hidden_layers=1, vocab_size=128)
    config._attn_implementation = attn
    embeds = torch.zeros(*input_ids.shape, 8)
    block_ids = bidirectional_block_ids(span, input_ids == IMAGE, labels, attention)
    mask = build_mixed_attention_mask(config, embeds, attention, block_ids)
    if mask is None:  # sdpa's causal fast path: only legal when nothing is bidirectional and nothing is padded
        assert span == "none"
        pytest.skip("sdpa uses is_causal; covered by the model-level equality tests")
    allowed = mask[:, 0] if mask.dtype == torch.bool else mask[:, 0] == 0
    expected = _reference(input_ids, attention, labels, span)
    real_queries = attention.bool()
    # Padding query rows produce outputs nobody reads; compare every real query row in full.
    for b in range(input_ids.shape[0]):
        assert torch.equal(allowed[b][real_queries[b]], expected[b][real_queries[b]]), (span, padding_side, b)


def test_image_blocks_are_per_image():
    image = torch.tensor([[0, 1, 1, 0, 1, 1, 1, 0]], dtype=torch.bool)
    ids = bidirectional_block_ids("image", image, None, None)
    assert ids.tolist() == [[-1, 0, 0, -1, 1, 1, 1, -1]]


def test_prompt_span_needs_labels():
    with pytest.raises(ValueError, match="labels"):
        bidirectional_block_ids("prompt", torch.zeros(1, 3, dtype=torch.bool), None, None)


def _released_prompt_rule(attention, labels):
    """The released code's stage-1.5 mask, rewritten here from its description: causal with padding keys masked,
    then every column before the row's first supervised label opened for every query (padding included)."""
    batch, length = labels.shape
    allowed = torch.zeros(batch, length, length, dtype=torch.bool)
    for b in range(batch):
        first = next((t for t in range(length) if labels[b, t] != -100), length)
        for i in range(length):
            for j in range(length):
                allowed[b, i, j] = (j <= i and bool(attention[b, j])) or j < first
    return allowed


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_prompt_span_matches_the_released_rule_on_the_batches_the_trainer_builds(attn):
    """The trainer pads on the right and drops rows without a supervised token; on such batches the `prompt` span
    gives the released code's mask exactly (its rule lets every query see padding *before* the first label, which
    only exists with left padding or an all-unsupervised row)."""
    input_ids, attention, labels = _rows("right")
    config = LlamaConfig(hidden_size=8, num_attention_heads=2, num_hidden_layers=1, vocab_size=128)
    config._attn_implementation = attn
    mask = build_mixed_attention_mask(config, torch.zeros(*input_ids.shape, 8), attention,
                                      bidirectional_block_ids("prompt", input_ids == IMAGE, labels, attention))
    allowed = mask[:, 0] if mask.dtype == torch.bool else mask[:, 0] == 0
    released = _released_prompt_rule(attention, labels)
    for b in range(input_ids.shape[0]):
        real = attention[b].bool()
        assert torch.equal(allowed[b][real], released[b][real]), b
