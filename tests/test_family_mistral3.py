"""Croc on Mistral 3 through the shared mechanism (`modeling_croc/stage15.py`): what holds for LLaVA-1.5, checked on
a tiny Mistral 3 built in code (`croc_testing.mistral3`: a Pixtral tower at native resolution, its patch merger),
with images of different sizes in Pixtral's token layout (`[IMG]` rows closed by `[IMG_BREAK]`, the image by
`[IMG_END]`).

Registered wherever mistral3 is; inference logits and `generate` equal `Mistral3ForConditionalGeneration`'s on shared
weights; a stage-1.5 step whose two losses equal hand-computed ones and whose gradients land where they belong; the
mask every decoder layer receives against the slow reference, an image's block being its whole extent (its break
tokens included), on the global and the all-sliding language model; round trips through save / load, export to a
plain folder and conversion from one.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import transformers
from transformers import AutoConfig, AutoModelForImageTextToText, Mistral3ForConditionalGeneration
from transformers.models.auto import modeling_auto
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

from croc_testing.backbones import SLIDING_WINDOW
from croc_testing.mistral3 import MISTRAL3_TOKENS, make_mistral3_batch, tiny_croc_mistral3_config
from croc_testing.reference_masks import reference_allowed
from modeling_croc import CrocMistral3Config, CrocMistral3ForConditionalGeneration, CrocMistral3Model
from modeling_croc.attention_mask import image_block_ids, image_extent_block_ids
from modeling_croc.convert import croc_to_llava
from modeling_croc.loading import load_croc

# The merged tokens of `croc_testing.mistral3.MISTRAL3_SIZES`: 2 x 3, 3 x 4, 1 x 2.
COUNTS = [6, 12, 2]


def _model(seed: int = 0, sliding: bool = True, **croc_fields) -> CrocMistral3ForConditionalGeneration:
    torch.manual_seed(seed)
    config = tiny_croc_mistral3_config(sliding, **croc_fields)
    config._attn_implementation = "eager"
    return CrocMistral3ForConditionalGeneration(config)


def _inputs(batch: dict) -> dict:
    return {name: value for name, value in batch.items() if name != "labels"}


def test_registered_with_every_auto_class_mistral3_is():
    parent = {}
    for name, auto_class in vars(modeling_auto).items():
        names = getattr(getattr(auto_class, "_model_mapping", None), "_model_mapping", None)
        if name.startswith("AutoModel") and isinstance(names, dict) and "mistral3" in names:
            parent[name] = names["mistral3"]
    assert {"AutoModel", "AutoModelForImageTextToText"} <= set(parent)
    croc_for_parent = {"Mistral3Model": CrocMistral3Model,
                       "Mistral3ForConditionalGeneration": CrocMistral3ForConditionalGeneration}
    for auto_name, parent_class in parent.items():
        resolved = getattr(transformers, auto_name)._model_mapping[CrocMistral3Config]
        assert resolved is croc_for_parent[parent_class], auto_name
    assert type(AutoConfig.for_model("croc_mistral3")) is CrocMistral3Config
    # The processor is Pixtral's, as for mistral3, mapped for the Croc config.
    assert PROCESSOR_MAPPING[CrocMistral3Config].__name__ == "PixtralProcessor"


def test_token_counts_follow_the_image_sizes():
    croc = _model().eval()
    batch = make_mistral3_batch(croc.config)
    assert croc.image_token_counts(batch["input_ids"], 3, image_sizes=batch["image_sizes"]).tolist() == COUNTS
    with torch.no_grad():
        features = croc.model.croc_image_features(batch["pixel_values"], batch["image_sizes"])
    assert [feature.shape[0] for feature in features] == COUNTS
    assert croc.num_vtr_items(batch["input_ids"], 3, image_sizes=batch["image_sizes"]) == sum(
        croc.config.num_masked_tokens(count) for count in COUNTS)


def test_inference_and_generate_equal_mistral3_on_shared_weights():
    croc = _model().eval()
    plain = croc_to_llava(croc)
    assert type(plain) is Mistral3ForConditionalGeneration
    batch = _inputs(make_mistral3_batch(croc.config))
    with torch.no_grad():
        expected = plain(**batch).logits
        torch.testing.assert_close(croc(**batch).logits, expected, rtol=0, atol=0)
        # Positional arguments follow the parent's order (input_ids, pixel_values, attention_mask, ...).
        torch.testing.assert_close(croc(batch["input_ids"], batch["pixel_values"], batch["attention_mask"],
                                        image_sizes=batch["image_sizes"]).logits, expected, rtol=0, atol=0)
    generated = croc.generate(**batch, max_new_tokens=5, do_sample=False)
    assert torch.equal(generated, plain.generate(**batch, max_new_tokens=5, do_sample=False))
    with torch.no_grad():
        as_tuple = croc(**batch, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], expected, rtol=0, atol=0)


def test_stage15_step_losses_and_gradients():
    croc = _model(croc_pretraining=True).train()
    batch = make_mistral3_batch(croc.config, left_pad=1)
    out = croc(**batch, croc_generator=torch.Generator().manual_seed(0))
    assert out.lm_loss > 0 and out.vtr_loss > 0
    torch.testing.assert_close(out.loss, out.lm_loss + croc.config.vtr_loss_weight * out.vtr_loss)
    assert out.visual_token_mask.sum(-1).tolist() == COUNTS
    assert out.replaced_token_mask.sum(-1).tolist() == [croc.config.num_masked_tokens(n) for n in COUNTS]
    with torch.no_grad():  # both terms by hand (the paper preset: linear head, standardised targets, MSE)
        base = croc.model(**_inputs(batch), labels=batch["labels"], croc_objectives=True,
                          croc_generator=torch.Generator().manual_seed(0))
        # Only the [IMG] positions carry visual tokens: the break and end tokens are text.
        assert torch.equal(base.image_token_mask, batch["input_ids"] == MISTRAL3_TOKENS["image"])
        num_images, num_tokens, hidden = base.visual_tokens.shape
        states = base.last_hidden_state.new_zeros(num_images, num_tokens, hidden)
        states[base.visual_token_mask] = base.last_hidden_state[base.image_token_mask]
        targets = base.visual_tokens.float()
        targets = (targets - targets.mean(-1, keepdim=True)) / (targets.var(-1, unbiased=False, keepdim=True)
                                                                + 1e-6).sqrt()
        per_token = ((croc.vtr_head(states).float() - targets) ** 2).mean(-1)
        torch.testing.assert_close(out.vtr_loss, per_token[base.replaced_token_mask].mean(), rtol=1e-4, atol=1e-5)
        lm = F.cross_entropy(out.logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(),
                             ignore_index=-100)
        torch.testing.assert_close(out.lm_loss, lm, rtol=1e-4, atol=1e-5)
        # The targets are the merger's projected outputs the plain forward scatters.
        features = croc.model.croc_image_features(batch["pixel_values"], batch["image_sizes"])
        torch.testing.assert_close(base.visual_tokens[base.visual_token_mask], torch.cat(features))
    out.loss.backward()
    assigned = torch.zeros(croc.config.prompt_pool_size, dtype=torch.bool)
    assigned[out.pool_ids[out.pool_ids >= 0]] = True
    pool_grad = croc.prompt_pool.weight.grad.abs().sum(-1)
    assert assigned.any() and pool_grad[assigned].gt(0).all() and pool_grad[~assigned].eq(0).all()
    projector = croc.model.multi_modal_projector
    assert projector.linear_1.weight.grad.abs().sum() > 0
    assert projector.patch_merger.merging_layer.weight.grad.abs().sum() > 0
    assert croc.vtr_head.proj.weight.grad.abs().sum() > 0
    assert croc.model.language_model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


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


@pytest.mark.parametrize("sliding", [True, False])
@pytest.mark.parametrize("span", ["image", "prompt"])
def test_every_layer_gets_the_mixed_mask(span, sliding):
    """Mistral's text model has no `layer_types`: every layer slides when `sliding_window` is set (one windowed mask
    for all), else every layer is global (Mistral-Small-3.1). Each layer's mask is checked element by element against
    the slow reference, for which an image is one run from its first `[IMG]` to its `[IMG_END]` (exclusive): the
    reference reads the layout with the break tokens counted as the image's, so the block is the whole image."""
    croc = _model(sliding=sliding, croc_pretraining=True, bidirectional_span=span).train()
    # Two images back to back in the first row ([IMG_END] between them), one in the second.
    batch = make_mistral3_batch(croc.config, images_per_row=(2, 1))
    assert batch["input_ids"].shape[1] > SLIDING_WINDOW
    received: dict[int, torch.Tensor] = {}
    hooks = [layer.register_forward_pre_hook(
        lambda module, args, kwargs, index=index: received.__setitem__(index, kwargs["attention_mask"]),
        with_kwargs=True) for index, layer in enumerate(croc.model.language_model.layers)]
    try:
        with torch.no_grad():
            croc(**batch, croc_generator=torch.Generator().manual_seed(0))
    finally:
        for hook in hooks:
            hook.remove()
    assert sorted(received) == [0, 1]
    window = SLIDING_WINDOW if sliding else None
    breaks = batch["input_ids"] == MISTRAL3_TOKENS["image_break"]
    as_one_run = batch["input_ids"].masked_fill(breaks, MISTRAL3_TOKENS["image"])
    expected = reference_allowed(as_one_run, batch["attention_mask"], batch["labels"], span,
                                 croc.config.image_token_id, window)
    if span == "image":  # the per-row runs would be a different mask: the test tells the two apart
        runs = reference_allowed(batch["input_ids"], batch["attention_mask"], batch["labels"], span,
                                 croc.config.image_token_id, window)
        assert not torch.equal(runs, expected)
    real = batch["attention_mask"].bool()
    for index, mask in received.items():
        allowed = mask[:, 0] == 0  # eager: additive float mask
        for row in range(real.shape[0]):
            assert torch.equal(allowed[row][real[row]], expected[row][real[row]]), (index, row)


def test_pool_tokens_enter_the_language_model_as_the_visual_tokens_do():
    croc = _model(croc_pretraining=True, bidirectional_span="none", vtr_positions="all").train()
    batch = _inputs(make_mistral3_batch(croc.config))
    with torch.no_grad():
        features = torch.cat(croc.model.croc_image_features(batch["pixel_values"], batch["image_sizes"]))
        croc.prompt_pool.weight.zero_()
        croc.prompt_pool.weight[: features.shape[0]] = features
        plain = croc.model(**batch, croc_objectives=False).last_hidden_state
        out = croc.model(**batch, croc_objectives=True, croc_generator=torch.Generator().manual_seed(0))
    assert out.replaced_token_mask.any()
    torch.testing.assert_close(out.last_hidden_state, plain, rtol=1e-5, atol=1e-5)


def test_save_load_export_and_conversion_round_trips(tmp_path):
    croc = _model().eval()
    batch = _inputs(make_mistral3_batch(croc.config))
    with torch.no_grad():
        expected = croc(**batch).logits

    croc.save_pretrained(tmp_path / "croc")
    saved = json.loads((tmp_path / "croc" / "config.json").read_text())
    assert saved["model_type"] == "croc_mistral3"
    assert saved["auto_map"]["AutoModelForImageTextToText"].endswith("CrocMistral3ForConditionalGeneration")
    assert saved["auto_map"]["AutoModel"].endswith("CrocMistral3Model")
    loaded, info = AutoModelForImageTextToText.from_pretrained(tmp_path / "croc", output_loading_info=True,
                                                               attn_implementation="eager")
    assert type(loaded) is CrocMistral3ForConditionalGeneration
    assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**batch).logits, expected, rtol=0, atol=0)

    # Export: a plain mistral3 folder (no pool, no head) that the parent class loads with the same logits.
    croc_to_llava(croc).save_pretrained(tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["model_type"] == "mistral3"
    plain, info = Mistral3ForConditionalGeneration.from_pretrained(tmp_path / "plain", output_loading_info=True,
                                                                   attn_implementation="eager")
    assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(**batch).logits, expected, rtol=0, atol=0)

    # Conversion: Croc from the plain folder, the same weights plus a fresh pool and head, ready for stage 1.5.
    converted, processor = load_croc(tmp_path / "plain", croc_fields={"croc_pretraining": True},
                                     attn_implementation="eager")
    assert type(converted) is CrocMistral3ForConditionalGeneration and processor is None  # weights-only folder
    assert converted.config.croc_pretraining and converted.config.text_config.sliding_window == SLIDING_WINDOW
    with torch.no_grad():
        torch.testing.assert_close(converted.eval()(**batch).logits, expected, rtol=0, atol=0)
