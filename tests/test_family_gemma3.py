"""Croc on Gemma 3 through the shared mechanism (`modeling_croc/stage15.py`): what holds for LLaVA-1.5, checked on a
tiny Gemma 3 built in code (`croc_testing.gemma3`), rows holding different numbers of images (as pan-and-scan crops
make them) and a text model with one sliding and one global layer.

Registered wherever gemma3's base and generation classes are; inference logits and `generate` equal
`Gemma3ForConditionalGeneration`'s on shared weights (its image-bidirectional mask from `token_type_ids` included);
a stage-1.5 step whose two losses equal hand-computed ones and whose gradients land where they belong; the mask
every decoder layer receives against the slow reference, and with span "image" against the mask Gemma 3 builds for
its own images; pool tokens entering unscaled, as Gemma 3's image features do; round trips through save / load,
export to a plain folder and conversion from one.
"""

from __future__ import annotations

import inspect
import json

import pytest
import torch
import torch.nn.functional as F
import transformers
from transformers import AutoConfig, AutoModelForImageTextToText, Gemma3ForConditionalGeneration
from transformers.models.auto import modeling_auto
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

from croc_testing.gemma3 import (
    GEMMA3_SLIDING_WINDOW,
    GEMMA3_TOKENS_PER_IMAGE,
    make_gemma3_batch,
    randomize_gemma3_projector,
    tiny_croc_gemma3_config,
)
from croc_testing.reference_masks import reference_allowed
from modeling_croc import CrocGemma3Config, CrocGemma3ForConditionalGeneration, CrocGemma3Model
from modeling_croc.convert import croc_to_llava
from modeling_croc.loading import load_croc

# Two images in the first row (say a picture and its pan-and-scan crop), one in the second; rows of different
# lengths, left-padded.
IMAGES_PER_ROW = [2, 1]
TEXT_LENGTHS = [5, 7]


def _model(seed: int = 0, **croc_fields) -> CrocGemma3ForConditionalGeneration:
    torch.manual_seed(seed)
    config = tiny_croc_gemma3_config(**croc_fields)
    config._attn_implementation = "eager"
    croc = CrocGemma3ForConditionalGeneration(config)
    randomize_gemma3_projector(croc, seed)
    return croc


def _batch(config, left_pad: int = 2) -> dict[str, torch.Tensor]:
    return make_gemma3_batch(config, IMAGES_PER_ROW, TEXT_LENGTHS, left_pad=left_pad)


def _inputs(batch: dict) -> dict:
    return {name: value for name, value in batch.items() if name != "labels"}


def _layer_masks(croc, run) -> dict[int, torch.Tensor]:
    """The `attention_mask` each decoder layer receives while `run()` runs, by layer index."""
    received: dict[int, torch.Tensor] = {}
    hooks = [layer.register_forward_pre_hook(
        lambda module, args, kwargs, index=index: received.__setitem__(index, kwargs["attention_mask"]),
        with_kwargs=True) for index, layer in enumerate(croc.model.language_model.layers)]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    return received


def test_registered_with_every_auto_class_gemma3_is():
    parent = {}
    for name, auto_class in vars(modeling_auto).items():
        names = getattr(getattr(auto_class, "_model_mapping", None), "_model_mapping", None)
        if name.startswith("AutoModel") and isinstance(names, dict) and "gemma3" in names:
            parent[name] = names["gemma3"]
    assert {"AutoModel", "AutoModelForImageTextToText", "AutoModelForCausalLM"} <= set(parent)
    croc_for_parent = {"Gemma3Model": CrocGemma3Model,
                       "Gemma3ForConditionalGeneration": CrocGemma3ForConditionalGeneration}
    for auto_name, parent_class in parent.items():
        mapping = getattr(transformers, auto_name)._model_mapping
        if parent_class in croc_for_parent:
            assert mapping[CrocGemma3Config] is croc_for_parent[parent_class], auto_name
        else:  # Gemma 3's sequence-classification head: no Croc class stands for it
            assert parent_class == "Gemma3ForSequenceClassification"
            with pytest.raises(KeyError):
                mapping[CrocGemma3Config]
    assert type(AutoConfig.for_model("croc_gemma3")) is CrocGemma3Config
    # The processor is Gemma 3's own, mapped for the Croc config.
    assert PROCESSOR_MAPPING[CrocGemma3Config].__name__ == "Gemma3Processor"


def test_config_declares_a_fixed_token_count():
    config = tiny_croc_gemma3_config()
    assert not CrocGemma3Config.croc_variable_token_count
    assert config.visual_tokens_per_image() == config.mm_tokens_per_image == GEMMA3_TOKENS_PER_IMAGE
    croc = _model(croc_pretraining=True)
    batch = _batch(croc.config)
    counts = croc.image_token_counts(batch["input_ids"], sum(IMAGES_PER_ROW))
    assert counts.tolist() == [GEMMA3_TOKENS_PER_IMAGE] * 3
    # vtr_positions="masked" (paper): round(0.75 * 4) = 3 per image.
    assert croc.num_vtr_items(batch["input_ids"], sum(IMAGES_PER_ROW)) == 9


def test_inference_and_generate_equal_gemma3_on_shared_weights():
    croc = _model().eval()
    plain = croc_to_llava(croc)
    assert type(plain) is Gemma3ForConditionalGeneration
    # Gemma 3's forward arguments stay visible (generate keeps `token_type_ids` for its image mask by them).
    assert "token_type_ids" in inspect.signature(croc.forward).parameters
    assert "token_type_ids" in inspect.signature(croc.model.forward).parameters
    batch = _inputs(_batch(croc.config))
    with torch.no_grad():
        expected = plain(**batch).logits
        torch.testing.assert_close(croc(**batch).logits, expected, rtol=0, atol=0)
        # token_type_ids reach the parent: without them its image tokens are causal and the logits differ.
        without_types = {name: value for name, value in batch.items() if name != "token_type_ids"}
        assert not torch.allclose(croc(**without_types).logits, expected)
        torch.testing.assert_close(croc(**without_types).logits, plain(**without_types).logits, rtol=0, atol=0)
        # Positional arguments follow the parent's order (input_ids, pixel_values, attention_mask, ...).
        torch.testing.assert_close(croc(batch["input_ids"], batch["pixel_values"], batch["attention_mask"],
                                        token_type_ids=batch["token_type_ids"]).logits, expected, rtol=0, atol=0)
    generated = croc.generate(**batch, max_new_tokens=6, do_sample=False)
    assert torch.equal(generated, plain.generate(**batch, max_new_tokens=6, do_sample=False))
    with torch.no_grad():
        as_tuple = croc(**batch, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], expected, rtol=0, atol=0)


def test_normalized_visual_tokens_reach_the_language_model_at_inference():
    """`normalize_visual_tokens` (the released code's step, at inference too) on Gemma 3, whose forward reads the
    features back as one tensor: each image token enters the language model with unit norm."""
    croc = _model(normalize_visual_tokens=True).eval()
    batch = _inputs(_batch(croc.config))
    received = []
    hook = croc.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: received.append(kwargs["inputs_embeds"]), with_kwargs=True)
    try:
        with torch.no_grad():
            croc(**batch)
    finally:
        hook.remove()
    image_embeds = received[0][batch["input_ids"] == croc.config.image_token_id]
    torch.testing.assert_close(image_embeds.norm(dim=-1), torch.ones(image_embeds.shape[0]))


def test_stage15_step_losses_and_gradients():
    croc = _model(croc_pretraining=True).train()
    batch = _batch(croc.config, left_pad=1)
    out = croc(**batch, croc_generator=torch.Generator().manual_seed(0))
    assert out.lm_loss > 0 and out.vtr_loss > 0
    torch.testing.assert_close(out.loss, out.lm_loss + croc.config.vtr_loss_weight * out.vtr_loss)
    assert out.visual_token_mask.sum(-1).tolist() == [GEMMA3_TOKENS_PER_IMAGE] * 3
    assert out.replaced_token_mask.sum(-1).tolist() == [3, 3, 3]
    with torch.no_grad():  # both terms by hand (the paper preset: linear head, standardised targets, MSE)
        base = croc.model(**_inputs(batch), labels=batch["labels"], croc_objectives=True,
                          croc_generator=torch.Generator().manual_seed(0))
        num_images, num_tokens, hidden = base.visual_tokens.shape
        states = base.last_hidden_state[base.image_token_mask].view(num_images, num_tokens, hidden)
        targets = base.visual_tokens.float()
        targets = (targets - targets.mean(-1, keepdim=True)) / (targets.var(-1, unbiased=False, keepdim=True)
                                                                + 1e-6).sqrt()
        per_token = ((croc.vtr_head(states).float() - targets) ** 2).mean(-1)
        torch.testing.assert_close(out.vtr_loss, per_token[base.replaced_token_mask].mean(), rtol=1e-4, atol=1e-5)
        lm = F.cross_entropy(out.logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(),
                             ignore_index=-100)
        torch.testing.assert_close(out.lm_loss, lm, rtol=1e-4, atol=1e-5)
        # The targets are the projector's outputs the plain forward scatters.
        features = croc.model.get_image_features(batch["pixel_values"]).pooler_output
        torch.testing.assert_close(base.visual_tokens, features, rtol=0, atol=0)
    out.loss.backward()
    assigned = torch.zeros(croc.config.prompt_pool_size, dtype=torch.bool)
    assigned[out.pool_ids[out.pool_ids >= 0]] = True
    assert int(assigned.sum()) == 9
    pool_grad = croc.prompt_pool.weight.grad.abs().sum(-1)
    assert pool_grad[assigned].gt(0).all() and pool_grad[~assigned].eq(0).all()
    assert croc.model.multi_modal_projector.mm_input_projection_weight.grad.abs().sum() > 0
    assert croc.model.vision_tower.encoder.layers[0].mlp.fc1.weight.grad.abs().sum() > 0
    assert croc.vtr_head.proj.weight.grad.abs().sum() > 0
    first_layer = croc.model.language_model.layers[0]
    assert first_layer.self_attn.q_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("span", ["image", "prompt"])
def test_every_layer_gets_the_mixed_mask_of_its_own_type(span):
    """Gemma 3's sliding layer gets causal + the blocks inside its window, its global layer causal + the blocks,
    each element checked against the slow reference."""
    croc = _model(croc_pretraining=True, bidirectional_span=span).train()
    config = croc.config
    batch = _batch(config)
    assert batch["input_ids"].shape[1] > GEMMA3_SLIDING_WINDOW
    received = _layer_masks(croc, lambda: croc(**batch, croc_generator=torch.Generator().manual_seed(0)))
    assert sorted(received) == [0, 1]
    assert set(config.text_config.layer_types) == {"full_attention", "sliding_attention"}
    real = batch["attention_mask"].bool()
    for index, mask in received.items():
        window = GEMMA3_SLIDING_WINDOW if config.text_config.layer_types[index] == "sliding_attention" else None
        expected = reference_allowed(batch["input_ids"], batch["attention_mask"], batch["labels"], span,
                                     config.image_token_id, window)
        allowed = mask[:, 0] == 0  # eager: additive float mask
        for row in range(real.shape[0]):
            assert torch.equal(allowed[row][real[row]], expected[row][real[row]]), (index, row)
    # The spans do differ from plain causal attention (a query sees a later key somewhere).
    assert any(torch.triu(mask[:, 0] == 0, diagonal=1).any() for mask in received.values())


def test_image_span_mask_equals_gemma3s_own_image_mask():
    """With span "image", every layer's stage-1.5 mask is, element by element, the one Gemma 3 itself builds from
    `token_type_ids` on the plain forward (sliding and global)."""
    croc = _model(croc_pretraining=True, bidirectional_span="image").train()
    batch = _batch(croc.config)
    with torch.no_grad():
        own = _layer_masks(croc, lambda: croc(**_inputs(batch), croc_objectives=False))
        mixed = _layer_masks(croc, lambda: croc(**batch, croc_generator=torch.Generator().manual_seed(0)))
    assert sorted(own) == sorted(mixed) == [0, 1]
    for index in own:
        assert torch.equal(mixed[index], own[index]), index
    # Gemma 3's image blocks are bidirectional: the first image token sees the image's last one.
    first = int((batch["input_ids"][0] == croc.config.image_token_id).nonzero()[0])
    assert own[1][0, 0, first, first + GEMMA3_TOKENS_PER_IMAGE - 1] == 0


def test_pool_tokens_enter_the_language_model_as_the_visual_tokens_do():
    """Pool = copies of the visual tokens: the language model receives the same (unscaled) embeddings and gives the
    same hidden states as the plain forward; text tokens keep Gemma 3's sqrt(hidden) scale."""
    croc = _model(croc_pretraining=True, bidirectional_span="none", vtr_positions="all", prompt_pool_size=16).train()
    # The plain forward without token_type_ids: causal, as span "none".
    batch = {name: value for name, value in _inputs(_batch(croc.config)).items() if name != "token_type_ids"}
    features = croc.model.get_image_features(batch["pixel_values"]).pooler_output.flatten(0, 1).detach()
    received = []
    # What the first decoder layer reads: after every edit of the language model's inputs (Croc's hook included).
    hook = croc.model.language_model.layers[0].register_forward_pre_hook(
        lambda module, args, kwargs: received.append(args[0] if args else kwargs["hidden_states"]), with_kwargs=True)
    try:
        with torch.no_grad():
            croc.prompt_pool.weight.zero_()
            croc.prompt_pool.weight[: features.shape[0]] = features
            plain = croc.model(**batch, croc_objectives=False).last_hidden_state
        out = croc.model(**batch, croc_objectives=True, croc_generator=torch.Generator().manual_seed(0))
    finally:
        hook.remove()
    assert out.replaced_token_mask.sum() == 9
    image_positions = batch["input_ids"] == croc.config.image_token_id
    plain_embeds, stage15_embeds = received
    torch.testing.assert_close(stage15_embeds, plain_embeds, rtol=0, atol=0)
    torch.testing.assert_close(stage15_embeds[image_positions], features, rtol=0, atol=0)
    text_ids = batch["input_ids"][~image_positions]
    scale = croc.config.text_config.hidden_size ** 0.5
    torch.testing.assert_close(stage15_embeds[~image_positions],
                               croc.model.language_model.embed_tokens.weight[text_ids] * scale)
    torch.testing.assert_close(out.last_hidden_state, plain, rtol=1e-5, atol=1e-5)


def test_packed_rows_are_refused_with_one_line():
    """Why: with position_ids restarting per sample, the sliding layer's image blocks are looked up at the sample's
    positions, so Gemma 3 itself gives a packed row's second sample other hidden states than alone."""
    croc = _model().eval()
    batch = _batch(croc.config, left_pad=0)
    lengths = batch["attention_mask"].sum(1).tolist()
    rows = [batch["input_ids"][index, -length:] for index, length in enumerate(lengths)]
    packed_ids = torch.cat(rows)[None]
    positions = torch.cat([torch.arange(length) for length in lengths])[None]
    plain = croc_to_llava(croc)
    with torch.no_grad():
        alone = plain.model(input_ids=rows[1][None], pixel_values=batch["pixel_values"][2:],
                            token_type_ids=(rows[1][None] == croc.config.image_token_id).long()).last_hidden_state
        packed = plain.model(input_ids=packed_ids, pixel_values=batch["pixel_values"], position_ids=positions,
                             token_type_ids=(packed_ids == croc.config.image_token_id).long(),
                             use_cache=False).last_hidden_state
    assert not torch.allclose(packed[0, lengths[0]:], alone[0], atol=1e-3)
    croc = croc.train()
    croc.config.croc_pretraining = True
    with pytest.raises(ValueError, match="Gemma 3's sliding layers would read the image blocks"):
        croc(input_ids=packed_ids, pixel_values=batch["pixel_values"], position_ids=positions,
             token_type_ids=(packed_ids == croc.config.image_token_id).long())


def test_save_load_export_and_conversion_round_trips(tmp_path):
    croc = _model().eval()
    batch = _inputs(_batch(croc.config))
    with torch.no_grad():
        expected = croc(**batch).logits

    croc.save_pretrained(tmp_path / "croc")
    saved = json.loads((tmp_path / "croc" / "config.json").read_text())
    assert saved["model_type"] == "croc_gemma3"
    assert saved["auto_map"]["AutoModelForImageTextToText"].endswith("CrocGemma3ForConditionalGeneration")
    assert saved["auto_map"]["AutoModel"].endswith("CrocGemma3Model")
    loaded, info = AutoModelForImageTextToText.from_pretrained(tmp_path / "croc", output_loading_info=True,
                                                               attn_implementation="eager")
    assert type(loaded) is CrocGemma3ForConditionalGeneration
    assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    # The head stays tied to the embeddings, as Gemma 3's.
    assert loaded.lm_head.weight.data_ptr() == loaded.model.language_model.embed_tokens.weight.data_ptr()
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**batch).logits, expected, rtol=0, atol=0)

    # Export: a plain gemma3 folder (no pool, no head) that the parent class loads with the same logits.
    croc_to_llava(croc).save_pretrained(tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["model_type"] == "gemma3"
    plain, info = Gemma3ForConditionalGeneration.from_pretrained(tmp_path / "plain", output_loading_info=True,
                                                                 attn_implementation="eager")
    assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(**batch).logits, expected, rtol=0, atol=0)

    # Conversion: Croc from the plain folder, the same weights plus a fresh pool and head, ready for stage 1.5.
    converted, processor = load_croc(tmp_path / "plain", croc_fields={"croc_pretraining": True},
                                     attn_implementation="eager")
    assert type(converted) is CrocGemma3ForConditionalGeneration and processor is None  # weights-only folder
    assert converted.config.croc_pretraining and converted.config.mm_tokens_per_image == GEMMA3_TOKENS_PER_IMAGE
    with torch.no_grad():
        torch.testing.assert_close(converted.eval()(**batch).logits, expected, rtol=0, atol=0)
