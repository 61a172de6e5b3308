"""Croc on Qwen3-VL through the shared mechanism (`modeling_croc/stage15.py`), checked on a tiny Qwen3-VL built in
code (`croc_testing.qwen3_vl`) with images of different native resolutions and two DeepStack levels.

Registered wherever qwen3_vl is; inference logits and `generate` equal `Qwen3VLForConditionalGeneration`'s on
shared weights; a stage-1.5 step whose two losses equal hand-computed ones and whose gradients land where they
belong; the mask every decoder layer receives against the slow reference; the M-RoPE positions kept in stage 1.5;
the DeepStack features the language model receives in stage 1.5 (the plain forward's at kept tokens, zeros at
replaced ones); round trips through save / load, export to a plain folder and conversion from one.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import transformers
from transformers import AutoConfig, AutoModelForImageTextToText, Qwen3VLForConditionalGeneration
from transformers.models.auto import modeling_auto
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

from croc_testing.qwen3_vl import make_qwen3_vl_batch, tiny_croc_qwen3_vl_config
from croc_testing.reference_masks import reference_allowed
from modeling_croc import CrocQwen3VLConfig, CrocQwen3VLForConditionalGeneration, CrocQwen3VLModel
from modeling_croc.convert import croc_to_llava
from modeling_croc.loading import load_croc


def _model(seed: int = 0, **croc_fields) -> CrocQwen3VLForConditionalGeneration:
    torch.manual_seed(seed)
    config = tiny_croc_qwen3_vl_config(**croc_fields)
    config._attn_implementation = "eager"
    return CrocQwen3VLForConditionalGeneration(config)


def _inputs(batch: dict) -> dict:
    return {name: value for name, value in batch.items() if name != "labels"}


class _LanguageModelInputs:
    """Records the keyword arguments the language model ran with, one dict per forward: a forward hook sees them
    after every pre-hook (Croc's stage-1.5 inputs among them) has edited them."""

    def __init__(self, model: CrocQwen3VLForConditionalGeneration):
        self.calls: list[dict] = []
        self._handle = model.model.language_model.register_forward_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs, output):
        self.calls.append(dict(kwargs))

    def __enter__(self) -> list[dict]:
        return self.calls

    def __exit__(self, *exc) -> None:
        self._handle.remove()


def test_registered_with_every_auto_class_qwen3_vl_is():
    parent = {}
    for name, auto_class in vars(modeling_auto).items():
        names = getattr(getattr(auto_class, "_model_mapping", None), "_model_mapping", None)
        if name.startswith("AutoModel") and isinstance(names, dict) and "qwen3_vl" in names:
            parent[name] = names["qwen3_vl"]
    assert {"AutoModel", "AutoModelForImageTextToText"} <= set(parent)
    croc_for_parent = {"Qwen3VLModel": CrocQwen3VLModel,
                       "Qwen3VLForConditionalGeneration": CrocQwen3VLForConditionalGeneration}
    for auto_name, parent_class in parent.items():
        resolved = getattr(transformers, auto_name)._model_mapping[CrocQwen3VLConfig]
        assert resolved is croc_for_parent[parent_class], auto_name
    assert type(AutoConfig.for_model("croc_qwen3_vl")) is CrocQwen3VLConfig
    # The processor is Qwen3-VL's own, mapped for the Croc config.
    assert PROCESSOR_MAPPING[CrocQwen3VLConfig].__name__ == "Qwen3VLProcessor"


def test_inference_and_generate_equal_qwen3_vl_on_shared_weights():
    croc = _model().eval()
    plain = croc_to_llava(croc)
    assert type(plain) is Qwen3VLForConditionalGeneration
    batch = _inputs(make_qwen3_vl_batch(croc.config))
    with torch.no_grad():
        expected = plain(**batch).logits
        torch.testing.assert_close(croc(**batch).logits, expected, rtol=0, atol=0)
        # Positional arguments follow the parent's order (input_ids, attention_mask, position_ids, ...).
        torch.testing.assert_close(croc(batch["input_ids"], batch["attention_mask"], pixel_values=batch["pixel_values"],
                                        image_grid_thw=batch["image_grid_thw"],
                                        mm_token_type_ids=batch["mm_token_type_ids"]).logits,
                                   expected, rtol=0, atol=0)
    generated = croc.generate(**batch, max_new_tokens=5, do_sample=False)
    assert torch.equal(generated, plain.generate(**batch, max_new_tokens=5, do_sample=False))
    # return_dict=False: the dict output's to_tuple(), as the parent gives.
    with torch.no_grad():
        as_tuple = croc(**batch, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], expected, rtol=0, atol=0)


def test_stage15_step_losses_and_gradients():
    croc = _model(croc_pretraining=True).train()
    batch = make_qwen3_vl_batch(croc.config, left_pad=1)
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
        # The targets are the final merger's outputs the plain forward scatters.
        features = croc.model.croc_image_features(batch["pixel_values"], image_grid_thw=batch["image_grid_thw"])
        torch.testing.assert_close(base.visual_tokens[base.visual_token_mask], torch.cat(features), rtol=0, atol=0)
    out.loss.backward()
    assigned = torch.zeros(croc.config.prompt_pool_size, dtype=torch.bool)
    assigned[out.pool_ids[out.pool_ids >= 0]] = True
    pool_grad = croc.prompt_pool.weight.grad.abs().sum(-1)
    assert pool_grad[assigned].gt(0).all() and pool_grad[~assigned].eq(0).all()
    assert croc.model.visual.merger.linear_fc1.weight.grad.abs().sum() > 0
    # The kept tokens' DeepStack features reach the language model: the first level, added after decoder layer 0,
    # feeds layer 1 and so both losses. The second is added after the tiny model's last layer, at kept positions
    # only, which no loss reads (the VTR loss reads replaced positions, where DeepStack is zero; the LM loss text
    # positions): its merger gets exactly no gradient, as in the parent on the same loss.
    first_level, last_level = croc.model.visual.deepstack_merger_list
    assert first_level.linear_fc1.weight.grad.abs().sum() > 0
    assert last_level.linear_fc1.weight.grad.abs().sum() == 0
    assert croc.vtr_head.proj.weight.grad.abs().sum() > 0
    first_layer = croc.model.language_model.layers[0]
    assert first_layer.self_attn.q_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("span", ["image", "prompt"])
def test_every_layer_gets_the_mixed_mask(span):
    """Qwen3-VL's text model has global layers only: each gets causal + the blocks, element by element against the
    slow reference at the real (non-padding) queries."""
    croc = _model(croc_pretraining=True, bidirectional_span=span).train()
    batch = make_qwen3_vl_batch(croc.config)
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
    real = batch["attention_mask"].bool()
    expected = reference_allowed(batch["input_ids"], batch["attention_mask"], batch["labels"], span,
                                 croc.config.image_token_id)
    # Not plain causal: some real query sees a later key (inside an image, or inside the prompt).
    assert (expected & ~torch.ones_like(expected[0]).tril().bool()).any()
    for index, mask in received.items():
        allowed = mask[:, 0] == 0  # eager: additive float mask
        for row in range(real.shape[0]):
            assert torch.equal(allowed[row][real[row]], expected[row][real[row]]), (index, row)


def test_stage15_keeps_the_multimodal_positions():
    """The language model receives the same M-RoPE positions (temporal, height, width rows, images on their 2D
    grid) in the stage-1.5 forward as in the plain one."""
    croc = _model(croc_pretraining=True).train()
    batch = make_qwen3_vl_batch(croc.config)
    with _LanguageModelInputs(croc) as calls, torch.no_grad():
        croc(**batch, croc_objectives=False)
        croc(**batch, croc_generator=torch.Generator().manual_seed(0))
    plain, stage15 = (call["position_ids"] for call in calls)
    assert plain.shape == (3, 2, batch["input_ids"].shape[1])
    torch.testing.assert_close(stage15, plain, rtol=0, atol=0)
    image_positions = plain[:, batch["input_ids"] == croc.config.image_token_id]
    assert not torch.equal(image_positions[1], image_positions[2])  # height and width differ on the grid


def test_stage15_deepstack_features_are_the_kept_tokens_and_zero_at_replaced_ones():
    """The DeepStack inputs of the language model in stage 1.5: the same visual positions as the plain forward,
    and per level the plain forward's features at kept tokens, exact zeros where a pool token replaced the token
    (its features must not reach the language model another way; a pool token has no DeepStack features)."""
    croc = _model(croc_pretraining=True).train()
    batch = make_qwen3_vl_batch(croc.config)
    with _LanguageModelInputs(croc) as calls, torch.no_grad():
        croc(**batch, croc_objectives=False)
        out = croc(**batch, croc_generator=torch.Generator().manual_seed(0))
    plain, stage15 = calls
    assert torch.equal(stage15["visual_pos_masks"], plain["visual_pos_masks"])
    assert torch.equal(plain["visual_pos_masks"], batch["input_ids"] == croc.config.image_token_id)
    # Images fill the visual positions in order: the replaced mask, flattened the same way.
    replaced = out.replaced_token_mask[out.visual_token_mask]
    assert replaced.any() and (~replaced).any()
    assert len(stage15["deepstack_visual_embeds"]) == len(plain["deepstack_visual_embeds"]) == 2
    for received, reference in zip(stage15["deepstack_visual_embeds"], plain["deepstack_visual_embeds"]):
        torch.testing.assert_close(received[~replaced], reference[~replaced], rtol=0, atol=0)
        assert torch.equal(received[replaced], torch.zeros_like(reference[replaced]))
        assert reference[replaced].abs().sum() > 0  # what was withheld was not zero already


def test_stage15_takes_precomputed_image_outputs_with_their_deepstack_features():
    """`mm_encoder_outputs` (as the parent takes them, DeepStack features included) give the same step as pixels."""
    croc = _model(croc_pretraining=True).train()
    batch = make_qwen3_vl_batch(croc.config)
    with torch.no_grad():
        from_pixels = croc(**batch, croc_generator=torch.Generator().manual_seed(0))
        image_outputs = croc.model.get_image_features(batch["pixel_values"], batch["image_grid_thw"],
                                                      return_dict=True)
        precomputed = croc(**{**batch, "pixel_values": None}, mm_encoder_outputs={"image": image_outputs},
                           croc_generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(precomputed.loss, from_pixels.loss, rtol=0, atol=0)
    del image_outputs.deepstack_features
    with pytest.raises(ValueError, match="DeepStack features"):
        croc(**{**batch, "pixel_values": None}, mm_encoder_outputs={"image": image_outputs})


def test_pool_tokens_enter_the_language_model_as_the_visual_tokens_do():
    """With the pool holding copies of the visual tokens (each replaced token matched to its own copy), stage 1.5
    gives the plain forward's hidden states, once the plain forward also withholds the replaced tokens' DeepStack
    features: a pool token enters exactly as the visual token it stands for would without its DeepStack residuals,
    which it does not have. With them (the plain forward as it is) the states differ: DeepStack is not a no-op."""
    croc = _model(croc_pretraining=True, bidirectional_span="none", vtr_positions="all", prompt_pool_size=16).train()
    batch = _inputs(make_qwen3_vl_batch(croc.config))
    features = torch.cat(croc.model.croc_image_features(batch["pixel_values"], image_grid_thw=batch["image_grid_thw"]))
    with torch.no_grad():
        croc.prompt_pool.weight.zero_()
        croc.prompt_pool.weight[: features.shape[0]] = features
        out = croc.model(**batch, croc_objectives=True, croc_generator=torch.Generator().manual_seed(0))
        replaced = out.replaced_token_mask[out.visual_token_mask]
        assert replaced.any()
        plain = croc.model(**batch, croc_objectives=False).last_hidden_state

        def withhold_replaced_deepstack(module, args, kwargs):
            kwargs["deepstack_visual_embeds"] = [level.masked_fill(replaced[:, None], 0)
                                                 for level in kwargs["deepstack_visual_embeds"]]
            return args, kwargs

        hook = croc.model.language_model.register_forward_pre_hook(withhold_replaced_deepstack, with_kwargs=True)
        try:
            plain_without = croc.model(**batch, croc_objectives=False).last_hidden_state
        finally:
            hook.remove()
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(out.last_hidden_state[real], plain_without[real], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out.last_hidden_state[real], plain[real], rtol=1e-3, atol=1e-3)


def test_packed_rows_are_refused_with_one_line():
    croc = _model(croc_pretraining=True).train()
    batch = make_qwen3_vl_batch(croc.config, left_pad=0)
    length = batch["input_ids"].shape[1]
    positions = torch.cat([torch.arange(length // 2), torch.arange(length - length // 2)]).expand(2, -1)
    with pytest.raises(ValueError, match="M-RoPE positions are computed per sample"):
        croc(**{**_inputs(batch), "attention_mask": None}, position_ids=positions)


def test_videos_are_refused_in_stage15():
    croc = _model(croc_pretraining=True).train()
    batch = make_qwen3_vl_batch(croc.config)
    with pytest.raises(ValueError, match="stage 1.5 trains on images"):
        croc(**batch, pixel_values_videos=batch["pixel_values"], video_grid_thw=batch["image_grid_thw"])


def test_save_load_export_and_conversion_round_trips(tmp_path):
    croc = _model().eval()
    batch = _inputs(make_qwen3_vl_batch(croc.config))
    with torch.no_grad():
        expected = croc(**batch).logits

    croc.save_pretrained(tmp_path / "croc")
    saved = json.loads((tmp_path / "croc" / "config.json").read_text())
    assert saved["model_type"] == "croc_qwen3_vl"
    assert saved["auto_map"]["AutoModelForImageTextToText"].endswith("CrocQwen3VLForConditionalGeneration")
    assert saved["auto_map"]["AutoModel"].endswith("CrocQwen3VLModel")
    loaded, info = AutoModelForImageTextToText.from_pretrained(tmp_path / "croc", output_loading_info=True,
                                                               attn_implementation="eager")
    assert type(loaded) is CrocQwen3VLForConditionalGeneration
    assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**batch).logits, expected, rtol=0, atol=0)

    # Export: a plain qwen3_vl folder (no pool, no head) that the parent class loads with the same logits.
    croc_to_llava(croc).save_pretrained(tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["model_type"] == "qwen3_vl"
    plain, info = Qwen3VLForConditionalGeneration.from_pretrained(tmp_path / "plain", output_loading_info=True,
                                                                  attn_implementation="eager")
    assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(**batch).logits, expected, rtol=0, atol=0)

    # Conversion: Croc from the plain folder, the same weights plus a fresh pool and head, ready for stage 1.5.
    converted, processor = load_croc(tmp_path / "plain", croc_fields={"croc_pretraining": True},
                                     attn_implementation="eager")
    assert type(converted) is CrocQwen3VLForConditionalGeneration and processor is None  # weights-only folder
    assert converted.config.croc_pretraining and converted.config.text_config.vocab_size == 160
    with torch.no_grad():
        torch.testing.assert_close(converted.eval()(**batch).logits, expected, rtol=0, atol=0)
