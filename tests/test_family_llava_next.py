"""Croc on LLaVA-NeXT through the shared mechanism (`modeling_croc/stage15.py`): what holds for LLaVA-1.5, checked on
a tiny LLaVA-NeXT built in code (`croc_testing.llava_next`), with AnyRes images of different token counts.

Registered wherever llava_next is; inference logits and `generate` equal `LlavaNextForConditionalGeneration`'s on
shared weights; a stage-1.5 step whose two losses equal hand-computed ones and whose gradients land where they
belong; the mask every decoder layer receives against the slow reference (global and all-sliding language models);
the per-crop normalisation (newline tokens left alone); round trips through save / load, export to a plain folder
and conversion from one.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import transformers
from transformers import AutoConfig, AutoModelForImageTextToText, LlavaNextForConditionalGeneration
from transformers.models.auto import modeling_auto
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

from croc_testing.backbones import SLIDING_WINDOW
from croc_testing.llava_next import make_llava_next_batch, tiny_croc_llava_next_config
from croc_testing.reference_masks import reference_allowed
from modeling_croc import CrocLlavaNextConfig, CrocLlavaNextForConditionalGeneration, CrocLlavaNextModel
from modeling_croc.convert import croc_to_llava
from modeling_croc.loading import load_croc


def _model(seed: int = 0, text: str = "mistral", **croc_fields) -> CrocLlavaNextForConditionalGeneration:
    torch.manual_seed(seed)
    config = tiny_croc_llava_next_config(text, **croc_fields)
    config._attn_implementation = "eager"
    return CrocLlavaNextForConditionalGeneration(config)


def _inputs(batch: dict) -> dict:
    return {name: value for name, value in batch.items() if name != "labels"}


def test_registered_with_every_auto_class_llava_next_is():
    parent = {}
    for name, auto_class in vars(modeling_auto).items():
        names = getattr(getattr(auto_class, "_model_mapping", None), "_model_mapping", None)
        if name.startswith("AutoModel") and isinstance(names, dict) and "llava_next" in names:
            parent[name] = names["llava_next"]
    assert {"AutoModel", "AutoModelForImageTextToText"} <= set(parent)
    croc_for_parent = {"LlavaNextModel": CrocLlavaNextModel,
                       "LlavaNextForConditionalGeneration": CrocLlavaNextForConditionalGeneration}
    for auto_name, parent_class in parent.items():
        resolved = getattr(transformers, auto_name)._model_mapping[CrocLlavaNextConfig]
        assert resolved is croc_for_parent[parent_class], auto_name
    assert type(AutoConfig.for_model("croc_llava_next")) is CrocLlavaNextConfig
    # The processor is LLaVA-NeXT's own, mapped for the Croc config.
    assert PROCESSOR_MAPPING[CrocLlavaNextConfig].__name__ == "LlavaNextProcessor"


def test_token_counts_follow_the_image_sizes():
    """Three sizes, three counts; the counts computed without the tower are those the tower's packing gives."""
    croc = _model().eval()
    batch = make_llava_next_batch(croc)
    counts = croc.image_token_counts(batch["input_ids"], 3, image_sizes=batch["image_sizes"])
    assert counts.tolist() == [14, 16, 24]
    with torch.no_grad():
        features = croc.model.croc_image_features(batch["pixel_values"], batch["image_sizes"])
    assert [feature.shape[0] for feature in features] == counts.tolist()
    assert croc.num_vtr_items(batch["input_ids"], 3, image_sizes=batch["image_sizes"]) == sum(
        croc.config.num_masked_tokens(count) for count in counts.tolist())


def test_inference_and_generate_equal_llava_next_on_shared_weights():
    croc = _model().eval()
    plain = croc_to_llava(croc)
    assert type(plain) is LlavaNextForConditionalGeneration
    batch = _inputs(make_llava_next_batch(croc))
    with torch.no_grad():
        expected = plain(**batch).logits
        torch.testing.assert_close(croc(**batch).logits, expected, rtol=0, atol=0)
        # Positional arguments follow the parent's order (input_ids, pixel_values, image_sizes, attention_mask).
        torch.testing.assert_close(croc(batch["input_ids"], batch["pixel_values"], batch["image_sizes"],
                                        batch["attention_mask"]).logits, expected, rtol=0, atol=0)
    generated = croc.generate(**batch, max_new_tokens=5, do_sample=False)
    assert torch.equal(generated, plain.generate(**batch, max_new_tokens=5, do_sample=False))
    with torch.no_grad():
        as_tuple = croc(**batch, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], expected, rtol=0, atol=0)


def test_stage15_step_losses_and_gradients():
    croc = _model(croc_pretraining=True).train()
    batch = make_llava_next_batch(croc, left_pad=1)
    out = croc(**batch, croc_generator=torch.Generator().manual_seed(0))
    assert out.lm_loss > 0 and out.vtr_loss > 0
    torch.testing.assert_close(out.loss, out.lm_loss + croc.config.vtr_loss_weight * out.vtr_loss)
    assert out.visual_token_mask.sum(-1).tolist() == [14, 16, 24]
    # The paper's mask ratio of each image's own count.
    assert out.replaced_token_mask.sum(-1).tolist() == [croc.config.num_masked_tokens(n) for n in (14, 16, 24)]
    with torch.no_grad():  # both terms by hand (the paper preset: linear head, standardised targets, MSE)
        base = croc.model(**_inputs(batch), labels=batch["labels"], croc_objectives=True,
                          croc_generator=torch.Generator().manual_seed(0))
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
        # The targets are the packed tokens (crops and newline tokens) the plain forward scatters.
        features = croc.model.croc_image_features(batch["pixel_values"], batch["image_sizes"])
        torch.testing.assert_close(base.visual_tokens[base.visual_token_mask], torch.cat(features))
    out.loss.backward()
    assigned = torch.zeros(croc.config.prompt_pool_size, dtype=torch.bool)
    assigned[out.pool_ids[out.pool_ids >= 0]] = True
    pool_grad = croc.prompt_pool.weight.grad.abs().sum(-1)
    assert assigned.any() and pool_grad[assigned].gt(0).all() and pool_grad[~assigned].eq(0).all()
    assert croc.model.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0
    assert croc.vtr_head.proj.weight.grad.abs().sum() > 0
    assert croc.model.language_model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("text", ["mistral", "llama"])
@pytest.mark.parametrize("span", ["image", "prompt"])
def test_every_layer_gets_the_mixed_mask(span, text):
    """LLaVA-NeXT-Mistral's language model slides on every layer (no `layer_types`: one mask for all, windowed),
    Llama's attends globally; each layer's mask checked element by element against the slow reference. An image's
    packed tokens are one uninterrupted run of `<image>` tokens, so the reference's run is the image."""
    croc = _model(text=text, croc_pretraining=True, bidirectional_span=span).train()
    batch = make_llava_next_batch(croc)
    window = SLIDING_WINDOW if text == "mistral" else None
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
    expected = reference_allowed(batch["input_ids"], batch["attention_mask"], batch["labels"], span,
                                 croc.config.image_token_id, window)
    real = batch["attention_mask"].bool()
    for index, mask in received.items():
        allowed = mask[:, 0] == 0  # eager: additive float mask
        for row in range(real.shape[0]):
            assert torch.equal(allowed[row][real[row]], expected[row][real[row]]), (index, row)


def test_normalisation_is_per_crop_and_leaves_the_newline_tokens():
    """`normalize_visual_tokens` normalises each crop's projected tokens before packing, as the released code's
    `encode_images`: every packed token has unit norm except the newline tokens, which stay the learned vector."""
    croc = _model(normalize_visual_tokens=True).eval()
    batch = make_llava_next_batch(croc)
    with torch.no_grad():
        croc.model.image_newline.mul_(3.0 / croc.model.image_newline.norm())  # a norm no normalised token has
        features = torch.cat(croc.model.croc_image_features(batch["pixel_values"], batch["image_sizes"]))
    newline = (features == croc.model.image_newline).all(-1)
    assert newline.sum() > 0
    torch.testing.assert_close(features[newline].norm(dim=-1), torch.full((int(newline.sum()),), 3.0))
    torch.testing.assert_close(features[~newline].norm(dim=-1), torch.ones(int((~newline).sum())))


def test_pool_tokens_enter_the_language_model_as_the_visual_tokens_do():
    croc = _model(croc_pretraining=True, bidirectional_span="none", vtr_positions="all").train()
    batch = _inputs(make_llava_next_batch(croc))
    with torch.no_grad():
        features = torch.cat(croc.model.croc_image_features(batch["pixel_values"], batch["image_sizes"]))
        croc.prompt_pool.weight.zero_()
        croc.prompt_pool.weight[: features.shape[0]] = features
        plain = croc.model(**batch, croc_objectives=False).last_hidden_state
        out = croc.model(**batch, croc_objectives=True, croc_generator=torch.Generator().manual_seed(0))
    assert features.shape[0] <= croc.config.prompt_pool_size and out.replaced_token_mask.any()
    torch.testing.assert_close(out.last_hidden_state, plain, rtol=1e-5, atol=1e-5)


def test_save_load_export_and_conversion_round_trips(tmp_path):
    croc = _model().eval()
    batch = _inputs(make_llava_next_batch(croc))
    with torch.no_grad():
        expected = croc(**batch).logits

    croc.save_pretrained(tmp_path / "croc")
    saved = json.loads((tmp_path / "croc" / "config.json").read_text())
    assert saved["model_type"] == "croc_llava_next"
    assert saved["auto_map"]["AutoModelForImageTextToText"].endswith("CrocLlavaNextForConditionalGeneration")
    assert saved["auto_map"]["AutoModel"].endswith("CrocLlavaNextModel")
    loaded, info = AutoModelForImageTextToText.from_pretrained(tmp_path / "croc", output_loading_info=True,
                                                               attn_implementation="eager")
    assert type(loaded) is CrocLlavaNextForConditionalGeneration
    assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**batch).logits, expected, rtol=0, atol=0)

    # Export: a plain llava_next folder (no pool, no head) that the parent class loads with the same logits.
    croc_to_llava(croc).save_pretrained(tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["model_type"] == "llava_next"
    plain, info = LlavaNextForConditionalGeneration.from_pretrained(tmp_path / "plain", output_loading_info=True,
                                                                    attn_implementation="eager")
    assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(**batch).logits, expected, rtol=0, atol=0)

    # Conversion: Croc from the plain folder, the same weights plus a fresh pool and head, ready for stage 1.5.
    converted, processor = load_croc(tmp_path / "plain", croc_fields={"croc_pretraining": True},
                                     attn_implementation="eager")
    assert type(converted) is CrocLlavaNextForConditionalGeneration and processor is None  # weights-only folder
    assert converted.config.croc_pretraining and converted.config.image_grid_pinpoints == croc.config.image_grid_pinpoints
    with torch.no_grad():
        torch.testing.assert_close(converted.eval()(**batch).logits, expected, rtol=0, atol=0)
