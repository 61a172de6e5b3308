"""Croc on InternVL through the shared mechanism (`modeling_croc/stage15.py`): what holds for LLaVA-1.5, checked on
a tiny InternVL built in code (`croc_testing.internvl`: an InternViT tower on 16-px tiles, 4 tokens a tile after the
pixel shuffle, a Qwen2 language model with a global and a sliding layer), with images of 1, 3 and 2 tiles.

Registered wherever internvl is; inference logits and `generate` equal `InternVLForConditionalGeneration`'s on
shared weights; an image's visual tokens are all its tiles' tokens, joined from the per-tile vision outputs by the
image runs of `input_ids`; a stage-1.5 step whose two losses equal hand-computed ones and whose gradients land where
they belong; the mask every decoder layer receives against the slow reference; round trips through save / load,
export to a plain folder and conversion from one.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import transformers
from transformers import AutoConfig, AutoModelForImageTextToText, InternVLForConditionalGeneration
from transformers.models.auto import modeling_auto

from croc_testing.backbones import SLIDING_WINDOW
from croc_testing.internvl import INTERNVL_TILES, make_internvl_batch, tiny_croc_internvl_config
from croc_testing.reference_masks import reference_allowed
from modeling_croc import CrocInternVLConfig, CrocInternVLForConditionalGeneration, CrocInternVLModel
from modeling_croc.convert import croc_to_llava
from modeling_croc.loading import load_croc

# 4 tokens a tile: the images of `INTERNVL_TILES` (1, 3 and 2 tiles).
COUNTS = [4, 12, 8]


def _model(seed: int = 0, **croc_fields) -> CrocInternVLForConditionalGeneration:
    torch.manual_seed(seed)
    config = tiny_croc_internvl_config(**croc_fields)
    config._attn_implementation = "eager"
    return CrocInternVLForConditionalGeneration(config)


def _inputs(batch: dict) -> dict:
    return {name: value for name, value in batch.items() if name != "labels"}


def test_registered_with_every_auto_class_internvl_is():
    parent = {}
    for name, auto_class in vars(modeling_auto).items():
        names = getattr(getattr(auto_class, "_model_mapping", None), "_model_mapping", None)
        if name.startswith("AutoModel") and isinstance(names, dict) and "internvl" in names:
            parent[name] = names["internvl"]
    assert {"AutoModel", "AutoModelForImageTextToText"} <= set(parent)
    croc_for_parent = {"InternVLModel": CrocInternVLModel,
                       "InternVLForConditionalGeneration": CrocInternVLForConditionalGeneration}
    for auto_name, parent_class in parent.items():
        resolved = getattr(transformers, auto_name)._model_mapping[CrocInternVLConfig]
        assert resolved is croc_for_parent[parent_class], auto_name
    assert type(AutoConfig.for_model("croc_internvl")) is CrocInternVLConfig
    assert tiny_croc_internvl_config().visual_tokens_per_image() == 4


def test_an_image_is_all_its_tiles():
    croc = _model().eval()
    batch = make_internvl_batch(croc.config)
    # The trainer passes the rows of pixel_values (tiles, here 6) as the image count: the runs decide.
    assert croc.image_token_counts(batch["input_ids"], len(batch["pixel_values"])).tolist() == COUNTS
    assert croc.num_vtr_items(batch["input_ids"], 6) == sum(croc.config.num_masked_tokens(n) for n in COUNTS)
    with torch.no_grad():
        tiles = croc.model.croc_image_features(batch["pixel_values"])
        images = croc.model.croc_images_of(tiles, batch["input_ids"])
    assert len(tiles) == sum(INTERNVL_TILES) and [image.shape[0] for image in images] == COUNTS
    # The second image is tiles 1, 2, 3 in the processor's order.
    torch.testing.assert_close(images[1], torch.cat(tiles[1:4]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="do not split into the 5 tiles"):
        croc.model.croc_images_of(tiles[:5], batch["input_ids"])


def test_inference_and_generate_equal_internvl_on_shared_weights():
    croc = _model().eval()
    plain = croc_to_llava(croc)
    assert type(plain) is InternVLForConditionalGeneration
    batch = _inputs(make_internvl_batch(croc.config))
    with torch.no_grad():
        expected = plain(**batch).logits
        torch.testing.assert_close(croc(**batch).logits, expected, rtol=0, atol=0)
        # Positional arguments follow the parent's order (input_ids, pixel_values, attention_mask, ...).
        torch.testing.assert_close(croc(batch["input_ids"], batch["pixel_values"], batch["attention_mask"]).logits,
                                   expected, rtol=0, atol=0)
    generated = croc.generate(**batch, max_new_tokens=5, do_sample=False)
    assert torch.equal(generated, plain.generate(**batch, max_new_tokens=5, do_sample=False))
    with torch.no_grad():
        as_tuple = croc(**batch, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], expected, rtol=0, atol=0)


def test_stage15_step_losses_and_gradients():
    croc = _model(croc_pretraining=True).train()
    batch = make_internvl_batch(croc.config, left_pad=1)
    out = croc(**batch, croc_generator=torch.Generator().manual_seed(0))
    assert out.lm_loss > 0 and out.vtr_loss > 0
    torch.testing.assert_close(out.loss, out.lm_loss + croc.config.vtr_loss_weight * out.vtr_loss)
    assert out.visual_token_mask.sum(-1).tolist() == COUNTS
    assert out.replaced_token_mask.sum(-1).tolist() == [croc.config.num_masked_tokens(n) for n in COUNTS]
    with torch.no_grad():  # both terms by hand (the paper preset: linear head, standardised targets, MSE)
        base = croc.model(**_inputs(batch), labels=batch["labels"], croc_objectives=True,
                          croc_generator=torch.Generator().manual_seed(0))
        assert torch.equal(base.image_token_mask, batch["input_ids"] == croc.config.image_token_id)
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
        # The targets are the projected tile tokens the plain forward scatters, in their order.
        features = croc.model.croc_image_features(batch["pixel_values"])
        torch.testing.assert_close(base.visual_tokens[base.visual_token_mask], torch.cat(features))
    out.loss.backward()
    assigned = torch.zeros(croc.config.prompt_pool_size, dtype=torch.bool)
    assigned[out.pool_ids[out.pool_ids >= 0]] = True
    pool_grad = croc.prompt_pool.weight.grad.abs().sum(-1)
    assert assigned.any() and pool_grad[assigned].gt(0).all() and pool_grad[~assigned].eq(0).all()
    assert croc.model.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0
    assert croc.vtr_head.proj.weight.grad.abs().sum() > 0
    assert croc.model.language_model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("span", ["image", "prompt"])
def test_every_layer_gets_the_mixed_mask_of_its_own_type(span):
    """Qwen2's text model with its top layer sliding: the global layer gets causal + the blocks, the sliding layer
    the same inside its window; an image's block is its run of placeholders (`<img>` and `</img>` outside it), each
    element checked against the slow reference."""
    croc = _model(croc_pretraining=True, bidirectional_span=span).train()
    batch = make_internvl_batch(croc.config)
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
    layer_types = croc.config.text_config.layer_types
    assert sorted(received) == [0, 1] and set(layer_types) == {"full_attention", "sliding_attention"}
    real = batch["attention_mask"].bool()
    for index, mask in received.items():
        window = SLIDING_WINDOW if layer_types[index] == "sliding_attention" else None
        expected = reference_allowed(batch["input_ids"], batch["attention_mask"], batch["labels"], span,
                                     croc.config.image_token_id, window)
        allowed = mask[:, 0] == 0  # eager: additive float mask
        for row in range(real.shape[0]):
            assert torch.equal(allowed[row][real[row]], expected[row][real[row]]), (index, row)


def test_pool_tokens_enter_the_language_model_as_the_visual_tokens_do():
    croc = _model(croc_pretraining=True, bidirectional_span="none", vtr_positions="all").train()
    batch = _inputs(make_internvl_batch(croc.config))
    with torch.no_grad():
        features = torch.cat(croc.model.croc_image_features(batch["pixel_values"]))
        croc.prompt_pool.weight.zero_()
        croc.prompt_pool.weight[: features.shape[0]] = features
        plain = croc.model(**batch, croc_objectives=False).last_hidden_state
        out = croc.model(**batch, croc_objectives=True, croc_generator=torch.Generator().manual_seed(0))
    assert out.replaced_token_mask.any()
    torch.testing.assert_close(out.last_hidden_state, plain, rtol=1e-5, atol=1e-5)


def test_save_load_export_and_conversion_round_trips(tmp_path):
    croc = _model().eval()
    batch = _inputs(make_internvl_batch(croc.config))
    with torch.no_grad():
        expected = croc(**batch).logits

    croc.save_pretrained(tmp_path / "croc")
    saved = json.loads((tmp_path / "croc" / "config.json").read_text())
    assert saved["model_type"] == "croc_internvl"
    assert saved["auto_map"]["AutoModelForImageTextToText"].endswith("CrocInternVLForConditionalGeneration")
    assert saved["auto_map"]["AutoModel"].endswith("CrocInternVLModel")
    loaded, info = AutoModelForImageTextToText.from_pretrained(tmp_path / "croc", output_loading_info=True,
                                                               attn_implementation="eager")
    assert type(loaded) is CrocInternVLForConditionalGeneration
    assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**batch).logits, expected, rtol=0, atol=0)

    # Export: a plain internvl folder (no pool, no head) that the parent class loads with the same logits.
    croc_to_llava(croc).save_pretrained(tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["model_type"] == "internvl"
    plain, info = InternVLForConditionalGeneration.from_pretrained(tmp_path / "plain", output_loading_info=True,
                                                                   attn_implementation="eager")
    assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(**batch).logits, expected, rtol=0, atol=0)

    # Conversion: Croc from the plain folder, the same weights plus a fresh pool and head, ready for stage 1.5.
    converted, processor = load_croc(tmp_path / "plain", croc_fields={"croc_pretraining": True},
                                     attn_implementation="eager")
    assert type(converted) is CrocInternVLForConditionalGeneration and processor is None  # weights-only folder
    assert converted.config.croc_pretraining and converted.config.downsample_ratio == 0.5
    with torch.no_grad():
        torch.testing.assert_close(converted.eval()(**batch).logits, expected, rtol=0, atol=0)
