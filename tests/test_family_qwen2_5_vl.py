"""Croc on Qwen2.5-VL through the shared mechanism (`modeling_croc/stage15.py`): what holds for LLaVA-1.5, checked
on a tiny Qwen2.5-VL built in code (`croc_testing.families`), with images of different native resolutions.

Registered wherever qwen2_5_vl is; inference logits and `generate` equal `Qwen2_5_VLForConditionalGeneration`'s
on shared weights; a stage-1.5 step whose two losses equal hand-computed ones and whose gradients land where they
belong; the mask every decoder layer receives against the slow reference (global and sliding layers); the M-RoPE
positions kept in stage 1.5; round trips through save / load, export to a plain folder and conversion from one.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import transformers
from transformers import AutoConfig, AutoModelForImageTextToText, Qwen2_5_VLForConditionalGeneration
from transformers.models.auto import modeling_auto
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

from croc_testing.families import QWEN_SLIDING_WINDOW, make_qwen_batch, tiny_croc_qwen2_5_vl_config
from croc_testing.reference_masks import reference_allowed
from modeling_croc import CrocQwen2_5_VLConfig, CrocQwen2_5_VLForConditionalGeneration, CrocQwen2_5_VLModel
from modeling_croc.convert import croc_to_llava
from modeling_croc.loading import load_croc

# Two images of different native resolutions (16 and 12 patches: 4 and 3 merged tokens), rows of different lengths.
GRIDS = [(1, 4, 4), (1, 2, 6)]
TEXT_LENGTHS = [5, 7]


def _model(seed: int = 0, **croc_fields) -> CrocQwen2_5_VLForConditionalGeneration:
    torch.manual_seed(seed)
    config = tiny_croc_qwen2_5_vl_config(**croc_fields)
    config._attn_implementation = "eager"
    return CrocQwen2_5_VLForConditionalGeneration(config)


def _batch(config, left_pad: int = 2):
    return make_qwen_batch(config, GRIDS, TEXT_LENGTHS, left_pad=left_pad)


def _inputs(batch: dict) -> dict:
    return {name: value for name, value in batch.items() if name != "labels"}


def test_registered_with_every_auto_class_qwen2_5_vl_is():
    parent = {}
    for name, auto_class in vars(modeling_auto).items():
        names = getattr(getattr(auto_class, "_model_mapping", None), "_model_mapping", None)
        if name.startswith("AutoModel") and isinstance(names, dict) and "qwen2_5_vl" in names:
            parent[name] = names["qwen2_5_vl"]
    assert {"AutoModel", "AutoModelForImageTextToText"} <= set(parent)
    croc_for_parent = {"Qwen2_5_VLModel": CrocQwen2_5_VLModel,
                       "Qwen2_5_VLForConditionalGeneration": CrocQwen2_5_VLForConditionalGeneration}
    for auto_name, parent_class in parent.items():
        resolved = getattr(transformers, auto_name)._model_mapping[CrocQwen2_5_VLConfig]
        assert resolved is croc_for_parent[parent_class], auto_name
    assert type(AutoConfig.for_model("croc_qwen2_5_vl")) is CrocQwen2_5_VLConfig
    # The processor is Qwen2.5-VL's own without its video part (which needs torchvision).
    assert PROCESSOR_MAPPING[CrocQwen2_5_VLConfig].__name__ == "CrocQwen2_5_VLProcessor"
    assert PROCESSOR_MAPPING[CrocQwen2_5_VLConfig].__mro__[1].__name__ == "Qwen2_5_VLProcessor"


def test_inference_and_generate_equal_qwen2_5_vl_on_shared_weights():
    croc = _model().eval()
    plain = croc_to_llava(croc)
    assert type(plain) is Qwen2_5_VLForConditionalGeneration
    batch = _inputs(_batch(croc.config))
    with torch.no_grad():
        torch.testing.assert_close(croc(**batch).logits, plain(**batch).logits, rtol=0, atol=0)
        # Positional arguments follow the parent's order (input_ids, attention_mask, position_ids, ...).
        torch.testing.assert_close(croc(batch["input_ids"], batch["attention_mask"], pixel_values=batch["pixel_values"],
                                        image_grid_thw=batch["image_grid_thw"],
                                        mm_token_type_ids=batch["mm_token_type_ids"]).logits,
                                   plain(**batch).logits, rtol=0, atol=0)
    generated = croc.generate(**batch, max_new_tokens=6, do_sample=False)
    assert torch.equal(generated, plain.generate(**batch, max_new_tokens=6, do_sample=False))
    # return_dict=False: the dict output's to_tuple(), as the parent gives.
    with torch.no_grad():
        as_tuple = croc(**batch, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], croc(**batch).logits)


def test_stage15_step_losses_and_gradients():
    croc = _model(croc_pretraining=True).train()
    batch = _batch(croc.config, left_pad=1)
    out = croc(**batch, croc_generator=torch.Generator().manual_seed(0))
    assert out.lm_loss > 0 and out.vtr_loss > 0
    torch.testing.assert_close(out.loss, out.lm_loss + croc.config.vtr_loss_weight * out.vtr_loss)
    # Each image with its own count of merged tokens, the pool replacing them.
    assert out.visual_token_mask.sum(-1).tolist() == [4, 3]
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
        # The targets are the merger's outputs the plain forward scatters.
        features = croc.model.croc_image_features(batch["pixel_values"], image_grid_thw=batch["image_grid_thw"])
        torch.testing.assert_close(base.visual_tokens[base.visual_token_mask], torch.cat(features))
    out.loss.backward()
    assigned = torch.zeros(croc.config.prompt_pool_size, dtype=torch.bool)
    assigned[out.pool_ids[out.pool_ids >= 0]] = True
    pool_grad = croc.prompt_pool.weight.grad.abs().sum(-1)
    assert pool_grad[assigned].gt(0).all() and pool_grad[~assigned].eq(0).all()
    assert croc.model.visual.merger.mlp[0].weight.grad.abs().sum() > 0
    assert croc.vtr_head.proj.weight.grad.abs().sum() > 0
    first_layer = croc.model.language_model.layers[0]
    assert first_layer.self_attn.q_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("span", ["image", "prompt"])
def test_every_layer_gets_the_mixed_mask_of_its_own_type(span):
    """Qwen2.5-VL's text model with its top layer sliding: the global layer gets causal + the blocks, the sliding
    layer the same inside its window, each element checked against the slow reference."""
    torch.manual_seed(0)
    config = tiny_croc_qwen2_5_vl_config(sliding=True, croc_pretraining=True, bidirectional_span=span)
    config._attn_implementation = "eager"
    croc = CrocQwen2_5_VLForConditionalGeneration(config).train()
    batch = _batch(config)
    assert batch["input_ids"].shape[1] > QWEN_SLIDING_WINDOW
    received: dict[int, torch.Tensor] = {}
    hooks = [layer.register_forward_pre_hook(
        lambda module, args, kwargs, index=index: received.__setitem__(index, kwargs["attention_mask"]),
        with_kwargs=True) for index, layer in enumerate(croc.model.language_model.layers)]
    try:
        croc(**batch, croc_generator=torch.Generator().manual_seed(0))
    finally:
        for hook in hooks:
            hook.remove()
    real = batch["attention_mask"].bool()
    assert set(config.text_config.layer_types) == {"full_attention", "sliding_attention"}
    for index, mask in received.items():
        window = QWEN_SLIDING_WINDOW if config.text_config.layer_types[index] == "sliding_attention" else None
        expected = reference_allowed(batch["input_ids"], batch["attention_mask"], batch["labels"], span,
                                     config.image_token_id, window)
        allowed = mask[:, 0] == 0  # eager: additive float mask
        for row in range(real.shape[0]):
            assert torch.equal(allowed[row][real[row]], expected[row][real[row]]), (index, row)
    assert sorted(received) == [0, 1]


def test_stage15_keeps_the_multimodal_positions():
    """The language model receives the same M-RoPE positions (temporal, height, width rows, images on their 2D
    grid) in the stage-1.5 forward as in the plain one."""
    croc = _model(croc_pretraining=True).train()
    batch = _batch(croc.config)
    received = []
    hook = croc.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: received.append(kwargs["position_ids"]), with_kwargs=True)
    try:
        with torch.no_grad():
            croc(**batch, croc_objectives=False)
            croc(**batch, croc_generator=torch.Generator().manual_seed(0))
    finally:
        hook.remove()
    plain, stage15 = received
    assert plain.shape == (3, 2, batch["input_ids"].shape[1])
    torch.testing.assert_close(stage15, plain, rtol=0, atol=0)
    image_positions = plain[:, batch["input_ids"] == croc.config.image_token_id]
    assert not torch.equal(image_positions[1], image_positions[2])  # height and width differ on the grid


def test_pool_tokens_enter_the_language_model_as_the_visual_tokens_do():
    croc = _model(croc_pretraining=True, bidirectional_span="none", vtr_positions="all", prompt_pool_size=16).train()
    batch = _inputs(_batch(croc.config))
    features = torch.cat(croc.model.croc_image_features(batch["pixel_values"], image_grid_thw=batch["image_grid_thw"]))
    with torch.no_grad():
        croc.prompt_pool.weight.zero_()
        croc.prompt_pool.weight[: features.shape[0]] = features
        plain = croc.model(**batch, croc_objectives=False).last_hidden_state
    out = croc.model(**batch, croc_objectives=True, croc_generator=torch.Generator().manual_seed(0))
    assert out.replaced_token_mask.any()
    torch.testing.assert_close(out.last_hidden_state, plain, rtol=1e-5, atol=1e-5)


def test_packed_rows_are_refused_with_one_line():
    croc = _model(croc_pretraining=True).train()
    batch = _batch(croc.config, left_pad=0)
    length = batch["input_ids"].shape[1]
    positions = torch.cat([torch.arange(length // 2), torch.arange(length - length // 2)]).expand(2, -1)
    with pytest.raises(ValueError, match="M-RoPE positions are computed per sample"):
        croc(**{**_inputs(batch), "attention_mask": None}, position_ids=positions)


def test_videos_are_refused_in_stage15():
    croc = _model(croc_pretraining=True).train()
    batch = _batch(croc.config)
    with pytest.raises(ValueError, match="stage 1.5 trains on images"):
        croc(**batch, pixel_values_videos=batch["pixel_values"], video_grid_thw=batch["image_grid_thw"])


def test_save_load_export_and_conversion_round_trips(tmp_path):
    croc = _model().eval()
    batch = _inputs(_batch(croc.config))
    with torch.no_grad():
        expected = croc(**batch).logits

    croc.save_pretrained(tmp_path / "croc")
    saved = json.loads((tmp_path / "croc" / "config.json").read_text())
    assert saved["model_type"] == "croc_qwen2_5_vl"
    assert saved["auto_map"]["AutoModelForImageTextToText"].endswith("CrocQwen2_5_VLForConditionalGeneration")
    assert saved["auto_map"]["AutoModel"].endswith("CrocQwen2_5_VLModel")
    # Eager as the original (padding rows differ between backends: compared at every position here).
    loaded, info = AutoModelForImageTextToText.from_pretrained(tmp_path / "croc", output_loading_info=True,
                                                               attn_implementation="eager")
    assert type(loaded) is CrocQwen2_5_VLForConditionalGeneration
    assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**batch).logits, expected, rtol=0, atol=0)

    # Export: a plain qwen2_5_vl folder (no pool, no head) that the parent class loads with the same logits.
    croc_to_llava(croc).save_pretrained(tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["model_type"] == "qwen2_5_vl"
    plain, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "plain", output_loading_info=True,
                                                                     attn_implementation="eager")
    assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(**batch).logits, expected, rtol=0, atol=0)

    # Conversion: Croc from the plain folder, the same weights plus a fresh pool and head, ready for stage 1.5.
    converted, processor = load_croc(tmp_path / "plain", croc_fields={"croc_pretraining": True},
                                     attn_implementation="eager")
    assert type(converted) is CrocQwen2_5_VLForConditionalGeneration and processor is None  # weights-only folder
    assert converted.config.croc_pretraining and converted.config.text_config.vocab_size == 160
    with torch.no_grad():
        torch.testing.assert_close(converted.eval()(**batch).logits, expected, rtol=0, atol=0)
