"""The mixed attention mask, element by element against a slow reference written from the definition, for every
attention layer type (global, sliding window) and the form each language model reads it in."""

import pytest
import torch
import torch.nn.functional as F
from transformers import Gemma2Config, LlamaConfig, MistralConfig, Qwen2Config

from croc_testing.batches import PAD_TOKEN_ID
from croc_testing.reference_masks import reference_allowed
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


def _reference(input_ids, attention, labels, span, window=None):
    return reference_allowed(input_ids, attention, labels, span, IMAGE, window)


WINDOW = 3  # shorter than the rows, so a sliding layer that turned global would show


def _text_config(kind: str, attn: str):
    """A language-model config of each mask form: one global mask (Llama), one sliding mask (Mistral), a mapping
    with both layer types (Gemma 2) and a mapping with one type (Qwen2 without sliding layers)."""
    small = {"hidden_size": 8, "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 128}
    config = {
        "llama": lambda: LlamaConfig(num_hidden_layers=1, **small),
        "mistral": lambda: MistralConfig(num_hidden_layers=1, sliding_window=WINDOW, **small),
        "gemma2": lambda: Gemma2Config(num_hidden_layers=2, sliding_window=WINDOW, head_dim=4,
                                       layer_types=["sliding_attention", "full_attention"], **small),
        "qwen2": lambda: Qwen2Config(num_hidden_layers=2, **small),
    }[kind]()
    config._attn_implementation = attn
    return config


def _allowed(mask):
    return mask[:, 0] if mask.dtype == torch.bool else mask[:, 0] == 0


@pytest.mark.parametrize("kind, expected_form", [("llama", ("full_attention",)), ("mistral", ("sliding_attention",)),
                                                 ("gemma2", {"full_attention", "sliding_attention"}),
                                                 ("qwen2", {"full_attention"})])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("span", ["image", "prompt"])
def test_mixed_mask_matches_reference_per_layer_type(span, padding_side, attn, kind, expected_form):
    input_ids, attention, labels = _rows(padding_side)
    config = _text_config(kind, attn)
    embeds = torch.zeros(*input_ids.shape, 8)
    block_ids = bidirectional_block_ids(span, input_ids == IMAGE, labels, attention)
    built = build_mixed_attention_mask(config, embeds, attention, block_ids)
    if isinstance(expected_form, set):  # models that read a mapping layer type -> mask
        assert isinstance(built, dict) and set(built) == expected_form
        masks = built
    else:
        assert isinstance(built, torch.Tensor)
        masks = {expected_form[0]: built}
    real_queries = attention.bool()
    for layer_type, mask in masks.items():
        window = WINDOW if layer_type == "sliding_attention" else None
        expected = _reference(input_ids, attention, labels, span, window)
        # Padding query rows produce outputs nobody reads; compare every real query row in full.
        for b in range(input_ids.shape[0]):
            assert torch.equal(_allowed(mask)[b][real_queries[b]], expected[b][real_queries[b]]), (layer_type, b)
    if isinstance(built, dict) and len(built) == 2:
        # The sliding layers really are sliding: a single global mask would have given them more keys.
        assert not torch.equal(_allowed(built["sliding_attention"]), _allowed(built["full_attention"]))


def test_causal_span_builds_no_mask_even_on_flash_attention():
    """`bidirectional_span="none"`: no custom mask is built, so FlashAttention (refused for a mixed span) is fine;
    the language model gets the 2D padding mask and builds its own causal masks."""
    input_ids, attention, labels = _rows("left")
    config = _text_config("gemma2", "eager")
    config._attn_implementation_internal = "flash_attention_2"
    block_ids = bidirectional_block_ids("none", input_ids == IMAGE, labels, attention)
    assert block_ids is None
    embeds = torch.zeros(*input_ids.shape, 8)
    assert build_mixed_attention_mask(config, embeds, attention, block_ids) is attention
    with pytest.raises(ValueError, match="custom mask"):
        build_mixed_attention_mask(config, embeds, attention,
                                   bidirectional_block_ids("image", input_ids == IMAGE, labels, attention))


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
    allowed = _allowed(mask)
    released = _released_prompt_rule(attention, labels)
    for b in range(input_ids.shape[0]):
        real = attention[b].bool()
        assert torch.equal(allowed[b][real], released[b][real]), b


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_prompt_block_ignores_the_label_of_a_rows_first_real_token_on_either_side(padding_side):
    """Nothing precedes a row's first real token, so its label is never a target: the prompt block runs to the
    next supervised token whether the row is padded on the left or the right (left padding once gave no block)."""
    labels = torch.tensor([[5, -100, -100, 7, 8]])
    attention = torch.ones(1, 5, dtype=torch.long)
    pad = (2, 0) if padding_side == "left" else (0, 2)
    labels, attention = F.pad(labels, pad, value=-100), F.pad(attention, pad, value=0)
    ids = bidirectional_block_ids("prompt", torch.zeros_like(labels, dtype=torch.bool), labels, attention)
    real = attention.bool()
    assert ids[real].tolist() == [0, 0, 0, -1, -1]
    expected = reference_allowed(torch.zeros_like(labels), attention, labels, "prompt", image_token_id=1)
    block = ids[0][:, None].eq(ids[0][None, :]) & (ids[0] >= 0)[:, None]
    allowed = (torch.ones(7, 7).tril().bool() | block) & real[0][None, :]
    assert torch.equal(allowed[real[0]], expected[0][real[0]])
