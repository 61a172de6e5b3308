"""What only LFM2-VL does on the shared mechanism (the checks every family passes, the full-attention layer's mixed
mask against the slow reference, the conv layer's padding mask on both attention paths, its causality at visual
positions and the packing refusal included, are `tests/test_families.py`): its images are all their views' tokens,
joined by the token layout (`<|image_end|>` after an image's last run), its text model's short-convolution layers
read the padding mask only, and its final norm is `embedding_norm`."""

from __future__ import annotations

import copy

import pytest
import torch

from croc_testing.family_specs import SPECS_BY_NAME
from croc_testing.lfm2_vl import LFM2_VL_TOKENS, lfm2_vl_images_as_one_run
from modeling_croc.split_attention import SPLIT_ATTENTION

SPEC = SPECS_BY_NAME["lfm2_vl"]


def _right_padded(batch: dict) -> dict:
    """The left-padded `batch` with every row's padding moved to its end (the images' views unchanged)."""
    out = dict(batch)
    pads = (batch["attention_mask"] == 0).sum(dim=1).tolist()
    for name in ("input_ids", "attention_mask", "labels"):
        out[name] = torch.stack([row.roll(-pad) for row, pad in zip(batch[name], pads, strict=True)])
    return out


@pytest.mark.parametrize("attention", ["sdpa", SPLIT_ATTENTION])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("span", ["image", "prompt"])
def test_padding_does_not_leak_into_the_conv_layers(span: str, side: str, attention: str):
    """The stage-1.5 step of a padded batch does not depend on what the padding holds: with other ids at the padded
    positions the loss and the logits at every real token are the same, so no padding entered a conv layer's window
    (nor a full-attention layer's keys), on the mask path and on `croc_split`, left- and right-padded. The batch's
    first row is padded (it is the shorter one), right next to its `<bos>` and, right-padded, to its last answer."""
    croc = SPEC.build(croc_pretraining=True, bidirectional_span=span)
    croc.set_attn_implementation(attention)
    croc.train()
    batch = SPEC.batch(croc, 2)
    if side == "right":
        batch = _right_padded(batch)
    real = batch["attention_mask"].bool()
    assert (~real[0]).sum() >= croc.config.text_config.conv_L_cache  # a whole conv window of padding
    other = dict(batch, input_ids=batch["input_ids"].masked_fill(~real, 7))
    outputs = [croc(**inputs, croc_generator=torch.Generator().manual_seed(0)) for inputs in (batch, other)]
    torch.testing.assert_close(outputs[1].loss, outputs[0].loss, rtol=0, atol=0)
    torch.testing.assert_close(outputs[1].logits[real], outputs[0].logits[real], rtol=0, atol=0)


def test_a_conv_layer_without_the_padding_mask_would_read_the_padding():
    """The check above can fail: a conv layer given no padding mask (what it would get from a 4D mask path that
    dropped its parent's) reads a left-padded row's padding at its first real tokens."""
    croc = SPEC.build(croc_pretraining=True, bidirectional_span="image").train()
    batch = SPEC.batch(croc, 2)
    real = batch["attention_mask"].bool()
    conv = croc.model.language_model.layers[0].conv
    hook = conv.register_forward_pre_hook(lambda module, args, kwargs: (args, {**kwargs, "attention_mask": None}),
                                          with_kwargs=True)
    try:
        other = dict(batch, input_ids=batch["input_ids"].masked_fill(~real, 7))
        outputs = [croc(**inputs, croc_generator=torch.Generator().manual_seed(0)) for inputs in (batch, other)]
    finally:
        hook.remove()
    assert not torch.allclose(outputs[1].logits[real], outputs[0].logits[real])


def test_an_image_is_all_its_views_tokens_and_its_block_their_whole_extent():
    """Each image's count is its tiles' and thumbnail's tokens (the vision outputs come one per view: 9 views for 3
    images), two images back to back in a row stay two; with span "image" the block runs from an image's first
    placeholder to its last, the markers between its runs inside (the thumbnail's, every tile's but the first's),
    `<|image_start|>` and `<|image_end|>` outside."""
    croc = SPEC.build(croc_pretraining=True, bidirectional_span="image")
    batch = SPEC.batch(croc, 2)
    features = croc.model.croc_image_features(batch["pixel_values"], spatial_shapes=batch["spatial_shapes"],
                                              pixel_attention_mask=batch["pixel_attention_mask"])
    assert len(features) == batch["spatial_shapes"].shape[0] == 9
    images = croc.model.croc_images_of(features, batch["input_ids"])
    assert [image.shape[0] for image in images] == list(SPEC.token_counts)
    mask = batch["input_ids"] == croc.config.image_token_id
    blocks = croc.model.croc_image_block_ids(mask, torch.tensor(SPEC.token_counts))
    ids = batch["input_ids"]
    inner = lfm2_vl_images_as_one_run(ids) != ids  # the markers between an image's runs
    assert inner.sum() == (1 + 1) + (3 + 1) and (blocks[inner] >= 0).all() and (blocks[mask] >= 0).all()
    outer = (ids == LFM2_VL_TOKENS["image_start"]) | (ids == LFM2_VL_TOKENS["image_end"])
    assert (blocks[outer] == -1).all()
    assert blocks.max(dim=1).values.tolist() == [0, 2]  # one image in row 0, two in row 1


def test_a_layout_without_image_end_tokens_is_refused_in_one_line():
    """The processor's `use_image_special_tokens=False` writes an image's views as one bare run: where the rows'
    images end is then unknown, and the stage-1.5 forward says so in one line rather than guess."""
    croc = SPEC.build(croc_pretraining=True).train()
    batch = SPEC.batch(croc, 2)
    markers = torch.tensor([LFM2_VL_TOKENS[name] for name in ("image_start", "image_end", "thumbnail")]
                           + list(range(LFM2_VL_TOKENS["row_col"], LFM2_VL_TOKENS["row_col"] + 4)))
    ids = batch["input_ids"]
    bare = [row[~torch.isin(row, markers)] for row in ids]
    length = max(len(row) for row in bare)
    input_ids = torch.full((len(bare), length), LFM2_VL_TOKENS["pad"])
    attention_mask = torch.zeros_like(input_ids)
    for index, row in enumerate(bare):
        input_ids[index, length - len(row):] = row
        attention_mask[index, length - len(row):] = 1
    with pytest.raises(ValueError, match=r"close their images with one `<\|image_end\|>` token") as error:
        croc(**dict(batch, input_ids=input_ids, attention_mask=attention_mask, labels=input_ids.clone()),
             croc_generator=torch.Generator().manual_seed(0))
    assert "\n" not in str(error.value)


def test_last_layer_prediction_reads_the_input_of_embedding_norm():
    """LFM2's text model ends with `embedding_norm`, not `norm`: `vtr_prediction="last_layer"` reads its input (the
    last decoder layer's output), where it raised for want of a `norm`."""
    croc = SPEC.build(croc_pretraining=True, vtr_prediction="last_layer").train()
    batch = SPEC.batch(croc, 2)
    last = []
    hook = croc.model.language_model.layers[-1].register_forward_hook(lambda module, args, output: last.append(output))
    try:
        with torch.no_grad():
            out = croc.model(**{k: v for k, v in batch.items() if k != "labels"}, labels=batch["labels"],
                             croc_objectives=True, croc_generator=torch.Generator().manual_seed(0))
    finally:
        hook.remove()
    torch.testing.assert_close(out.vtr_source_states, last[0], rtol=0, atol=0)
    final = copy.deepcopy(croc)
    final.config.vtr_prediction = "final_norm"
    with torch.no_grad():
        normed = final.model(**{k: v for k, v in batch.items() if k != "labels"}, labels=batch["labels"],
                             croc_objectives=True, croc_generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(normed.vtr_source_states, out.vtr_source_states)
