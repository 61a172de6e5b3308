"""The conformance suite every Croc family on the shared mechanism (`modeling_croc/stage15.py`) passes, one spec per
family (`croc_testing.family_specs.SPECS`), each on a tiny model built in code with left-padded rows of different
lengths and images of different sizes or counts where the family allows.

Registered wherever the parent is; inference logits, `generate` and `return_dict=False` equal the parent's on shared
weights; per-image token counts without the tower; a stage-1.5 step whose two losses equal hand-computed ones and
whose gradients land where they belong (the pool on exactly the assigned rows); the mask every decoder layer
receives against the slow reference; pool tokens entering the language model as the visual tokens do; round trips
through save / load, export to a plain folder and conversion from one; the `croc_split` attention equal to the mask
path; a packed row equal to the padded batch (logits, losses, assignment, gradients) where the family takes packed
rows, one line refusing them where it cannot. M-RoPE families: positions kept in stage 1.5, videos refused. What
only one family does is in its `tests/test_family_<name>.py`.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import json
import re

import pytest
import torch
import torch.nn.functional as F
import transformers
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText
from transformers.models.auto import modeling_auto
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

from croc_testing.family_specs import (
    SPECS,
    FamilySpec,
    MaskVariant,
    inputs,
    language_model_inputs,
    layer_masks,
)
from croc_testing.reference_masks import reference_allowed
from modeling_croc.attention_mask import RECURRENT_LAYER_TYPES
from modeling_croc.convert import croc_to_llava
from modeling_croc.loading import load_croc
from modeling_croc.split_attention import SEGMENTS_KEY, SPLIT_ATTENTION, split_attention_problem

every_family = pytest.mark.parametrize("spec", SPECS, ids=str)
mrope_families = pytest.mark.parametrize("spec", [spec for spec in SPECS if spec.mrope], ids=str)
video_families = pytest.mark.parametrize("spec", [spec for spec in SPECS if spec.videos], ids=str)
packing_refused = pytest.mark.parametrize("spec", [spec for spec in SPECS if spec.model_class.croc_packing_refusal],
                                         ids=str)
packing_accepted = pytest.mark.parametrize("spec", [spec for spec in SPECS
                                                      if not spec.model_class.croc_packing_refusal], ids=str)
LOADING_PROBLEMS = ("missing_keys", "unexpected_keys", "mismatched_keys")


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _config_field(config, dotted: str):
    for name in dotted.split("."):
        config = getattr(config, name)
    return config


@every_family
def test_registered_with_every_auto_class_the_parent_is(spec: FamilySpec):
    """Every Auto class holding the parent's base or generation class resolves the Croc config to the Croc
    counterpart; a parent class with no Croc counterpart (only where the spec names it) stays the parent's alone."""
    parent = {}
    for name, auto_class in vars(modeling_auto).items():
        names = getattr(getattr(auto_class, "_model_mapping", None), "_model_mapping", None)
        if name.startswith("AutoModel") and isinstance(names, dict) and spec.parent_type in names:
            parent[name] = names[spec.parent_type]
    assert spec.auto_classes <= set(parent)
    croc_for_parent = {spec.parent_model.__name__: spec.model_class,
                       spec.parent_generation.__name__: spec.generation_class}
    for auto_name, parent_class in parent.items():
        mapping = getattr(transformers, auto_name)._model_mapping
        if parent_class in croc_for_parent:
            assert mapping[spec.config_class] is croc_for_parent[parent_class], auto_name
        else:
            assert parent_class in spec.unmapped_parent_classes, auto_name
            with pytest.raises(KeyError):
                mapping[spec.config_class]
    assert type(AutoConfig.for_model(f"croc_{spec.parent_type}")) is spec.config_class
    processor = PROCESSOR_MAPPING[spec.config_class]
    assert tuple(cls.__name__ for cls in processor.__mro__[:len(spec.processor_mro)]) == spec.processor_mro


@every_family
def test_inference_and_generate_equal_the_parent_on_shared_weights(spec: FamilySpec):
    """Logits (keyword and positional calls), greedy `generate` and `return_dict=False` equal the parent's exactly."""
    croc = spec.build().eval()
    plain = croc_to_llava(croc)
    assert type(plain) is spec.parent_generation
    batch = inputs(spec.batch(croc, 2))
    # Positional arguments follow the parent's order: its leading forward parameters the batch has.
    parameters = list(inspect.signature(spec.parent_generation.forward).parameters)[1:]
    positional = list(itertools.takewhile(lambda name: name in batch, parameters))
    assert len(positional) >= 2 and positional[0] == "input_ids"
    with torch.no_grad():
        expected = plain(**batch).logits
        torch.testing.assert_close(croc(**batch).logits, expected, rtol=0, atol=0)
        by_position = croc(*(batch[name] for name in positional),
                           **{name: value for name, value in batch.items() if name not in positional})
        torch.testing.assert_close(by_position.logits, expected, rtol=0, atol=0)
    # An argument given by position and by name is refused, as the parent's own signature refuses it.
    for model in (croc, plain):
        with pytest.raises(TypeError, match="multiple values"):
            model(batch["input_ids"], input_ids=batch["input_ids"])
    generated = croc.generate(**batch, max_new_tokens=6, do_sample=False)
    assert torch.equal(generated, plain.generate(**batch, max_new_tokens=6, do_sample=False))
    # return_dict=False: the dict output's to_tuple(), as the parent gives.
    with torch.no_grad():
        as_tuple = croc(**batch, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], expected, rtol=0, atol=0)


@every_family
def test_token_counts_follow_the_images(spec: FamilySpec):
    """The per-image counts computed without the tower (from the batch's layout inputs) are the spec's, those the
    tower gives, and `num_vtr_items` is the paper's mask ratio of each image's own count."""
    croc = spec.build(croc_pretraining=True).eval()
    batch = spec.batch(croc, 2)
    layout = {name: batch[name] for name in croc.croc_image_layout_inputs}
    num_images = len(spec.token_counts)
    counts = croc.image_token_counts(batch["input_ids"], num_images, **layout).tolist()
    assert counts == list(spec.token_counts)
    with torch.no_grad():
        assert [feature.shape[0] for feature in spec.features(croc, batch)] == counts
    assert croc.num_vtr_items(batch["input_ids"], num_images, **layout) == sum(
        croc.config.num_masked_tokens(count) for count in counts)


@every_family
def test_stage15_step_losses_and_gradients(spec: FamilySpec):
    """One stage-1.5 step: loss = LM + weight * VTR, both equal to hand-computed ones (the paper preset: linear head,
    standardised targets, MSE, on the replaced tokens), the targets are the parent's visual tokens, and gradients
    reach the pool on exactly the assigned rows, the vision side, the VTR head and the language model."""
    croc = spec.build(croc_pretraining=True).train()
    batch = spec.batch(croc, 1)
    out = croc(**batch, croc_generator=_generator())
    assert out.lm_loss > 0 and out.vtr_loss > 0
    torch.testing.assert_close(out.loss, out.lm_loss + croc.config.vtr_loss_weight * out.vtr_loss)
    # Each image with its own count of visual tokens, the paper's mask ratio of it replaced by the pool.
    assert out.visual_token_mask.sum(-1).tolist() == list(spec.token_counts)
    assert out.replaced_token_mask.sum(-1).tolist() == [croc.config.num_masked_tokens(n) for n in spec.token_counts]
    with torch.no_grad():
        base = croc.model(**inputs(batch), labels=batch["labels"], croc_objectives=True,
                          croc_generator=_generator())
        # Only the image placeholders carry visual tokens (Pixtral's break and end tokens are text).
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
        # The targets are the visual tokens the plain forward scatters.
        features = torch.cat(spec.features(croc, batch))
        torch.testing.assert_close(base.visual_tokens[base.visual_token_mask], features, rtol=0, atol=0)
    out.loss.backward()
    assigned = torch.zeros(croc.config.prompt_pool_size, dtype=torch.bool)
    assigned[out.pool_ids[out.pool_ids >= 0]] = True
    if spec.assigned_pool_rows is not None:
        assert int(assigned.sum()) == spec.assigned_pool_rows
    pool_grad = croc.prompt_pool.weight.grad.abs().sum(-1)
    assert assigned.any() and pool_grad[assigned].gt(0).all() and pool_grad[~assigned].eq(0).all()
    for name in (*spec.grad_reaches, "vtr_head.proj.weight"):
        assert croc.get_parameter(name).grad.abs().sum() > 0, name
    # The language model wherever the family keeps it (SmolVLM's `text_model`): its first attention layer (Qwen3.5's
    # first layer is a linear-attention one, named in its `grad_reaches`).
    first_attention = next(layer for layer in croc.model.croc_language_model.layers if hasattr(layer, "self_attn"))
    assert first_attention.self_attn.q_proj.weight.grad.abs().sum() > 0
    for name in spec.grad_stays_zero:
        assert croc.get_parameter(name).grad.abs().sum() == 0, name


@pytest.mark.parametrize("span", ["image", "prompt"])
@pytest.mark.parametrize(("spec", "variant"),
                         [(spec, variant) for spec in SPECS for variant in spec.mask_variants],
                         ids=lambda value: str(value) if isinstance(value, FamilySpec) else value.name)
def test_every_layer_gets_the_mixed_mask_of_its_own_type(spec: FamilySpec, variant: MaskVariant, span: str):
    """Each decoder layer gets causal + the bidirectional blocks (inside its window on a sliding layer), element by
    element against the slow reference at the real (non-padding) queries; the blocks do show (not plain causal)."""
    croc = spec.build(config_kwargs=variant.config_kwargs, croc_pretraining=True, bidirectional_span=span).train()
    config = croc.config
    batch = spec.mask_batch(croc) if spec.mask_batch else spec.batch(croc, 2)
    if variant.window is not None:
        assert batch["input_ids"].shape[1] > variant.window
    if variant.mixed_layer_types:
        assert set(config.text_config.layer_types) == {"full_attention", "sliding_attention"}
    elif variant.recurrent_layers:  # global layers and one recurrent kind (Gated DeltaNet, LFM2's convolution)
        recurrent = set(config.text_config.layer_types) - {"full_attention"}
        assert len(recurrent) == 1 and recurrent <= set(RECURRENT_LAYER_TYPES)
    elif variant.window is None:  # a global layout: no layer is declared sliding
        assert set(getattr(config.text_config, "layer_types", None) or ["full_attention"]) == {"full_attention"}
    with torch.no_grad():
        received = layer_masks(croc, lambda: croc(**batch, croc_generator=_generator()))
    assert sorted(received) == [0, 1]
    layout = spec.reference_layout(batch["input_ids"]) if spec.reference_layout else batch["input_ids"]
    real = batch["attention_mask"].bool()
    references: dict[int | None, torch.Tensor] = {}  # by window: the slow reference once per layer type
    later_key_seen = False
    for index, mask in received.items():
        if variant.is_recurrent(config, index):
            # A linear-attention layer is causal by construction: no block reaches it, only its parent's padding
            # mask (tests/test_family_qwen3_5.py shows its output at a visual position reads no later one).
            assert torch.equal(mask, batch["attention_mask"]), index
            continue
        window = variant.layer_window(config, index)
        if window not in references:
            references[window] = reference_allowed(layout, batch["attention_mask"], batch["labels"], span,
                                                   config.image_token_id, window)
            if span == "image" and spec.reference_layout:  # the family's layout rewrite changes the blocks
                runs = reference_allowed(batch["input_ids"], batch["attention_mask"], batch["labels"], span,
                                         config.image_token_id, window)
                assert not torch.equal(references[window], runs)
        expected = references[window]
        allowed = mask[:, 0] == 0  # eager: additive float mask
        for row in range(real.shape[0]):
            assert torch.equal(allowed[row][real[row]], expected[row][real[row]]), (index, row)
        later_key_seen |= bool(torch.triu(allowed, diagonal=1)[real].any())
    # Not plain causal: some real query sees a later key (inside an image, or inside the prompt).
    assert later_key_seen


@pytest.mark.parametrize("span", ["image", "prompt"])
@pytest.mark.parametrize(("spec", "variant"),
                         [(spec, variant) for spec in SPECS for variant in spec.mask_variants],
                         ids=lambda value: str(value) if isinstance(value, FamilySpec) else value.name)
def test_split_attention_equals_the_mask_path(spec: FamilySpec, variant: MaskVariant, span: str):
    """A model on `croc_split`, as the trainer loads it (every decoder layer gets the batch's query segments and an
    empty placeholder mask, no L x L mask; the vision tower, called without segments, takes sdpa) gives the sdpa
    mask path's stage-1.5 step on shared weights: loss, logits at the real tokens and every gradient, on each of the
    family's layer layouts (sliding ones too)."""
    masked = spec.build(config_kwargs=variant.config_kwargs, croc_pretraining=True, bidirectional_span=span)
    if (problem := split_attention_problem(masked.config.text_config)) is not None:
        # A language model the split path cannot compute (Gemma 2's soft-capped attention) is refused in one line.
        masked.set_attn_implementation(SPLIT_ATTENTION)
        with pytest.raises(ValueError, match=re.escape(problem)):
            masked.train()(**spec.batch(masked, 2), croc_generator=_generator())
        return
    masked.set_attn_implementation("sdpa")
    split = copy.deepcopy(masked)
    split.set_attn_implementation(SPLIT_ATTENTION)
    batch = spec.mask_batch(masked) if spec.mask_batch else spec.batch(masked, 2)
    out_masked = masked.train()(**batch, croc_generator=_generator())
    with language_model_inputs(split) as calls:
        received = layer_masks(split, lambda: calls.append(split.train()(**batch, croc_generator=_generator())))
    out_split = calls.pop()
    assert len(calls) == 1 and calls[0][SEGMENTS_KEY] is not None
    assert sorted(received) == list(range(len(split.model.croc_language_model.layers)))
    for index, mask in received.items():
        if variant.is_recurrent(split.config, index):
            # A linear-attention layer reads no segments, only its parent's padding mask, on this path too.
            assert torch.equal(mask, batch["attention_mask"]), index
        else:
            assert mask.shape[-2:] == (0, 0), index
    real = batch["attention_mask"].bool()
    for name in ("loss", "lm_loss", "vtr_loss"):
        torch.testing.assert_close(getattr(out_split, name), getattr(out_masked, name), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out_split.logits[real], out_masked.logits[real], rtol=1e-5, atol=1e-5)
    out_masked.loss.backward()
    out_split.loss.backward()
    for (name, a), (_, b) in zip(masked.named_parameters(), split.named_parameters(), strict=True):
        if a.grad is None:
            assert b.grad is None, name
            continue
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-5, msg=name)


def _layer_calls(croc, batch: dict) -> dict[int, tuple[tuple, dict]]:
    """The arguments every decoder layer ran with in one stage-1.5 forward, by layer index."""
    calls: dict[int, tuple[tuple, dict]] = {}
    hooks = [layer.register_forward_pre_hook(
        lambda module, args, kwargs, index=index: calls.__setitem__(index, (args, dict(kwargs))), with_kwargs=True)
        for index, layer in enumerate(croc.model.croc_language_model.layers)]
    try:
        with torch.no_grad():
            croc(**batch, croc_generator=_generator())
    finally:
        for hook in hooks:
            hook.remove()
    return calls


def _rerun_with_later_positions_changed(layer, call: tuple[tuple, dict], row: int, position: int) -> torch.Tensor:
    """The layer's output on its own inputs and on the same inputs with every position of `row` after `position`
    replaced by noise: `(2, L, D)`, the two outputs of `row`."""
    args, kwargs = call
    hidden = args[0] if args else kwargs.pop("hidden_states")
    kwargs = {**kwargs, "cache": None}  # each rerun on its own: nothing read from or added to the forward's cache
    changed = hidden.clone()
    changed[row, position + 1:] = torch.randn_like(changed[row, position + 1:]) * 10
    with torch.no_grad():
        outputs = [layer(states, *args[1:], **kwargs) for states in (hidden, changed)]
    return torch.stack([output[row] for output in outputs])


@pytest.mark.parametrize("span", ["image", "prompt"])
@pytest.mark.parametrize("spec", [spec for spec in SPECS if any(variant.recurrent_layers
                                                                for variant in spec.mask_variants)], ids=str)
def test_a_recurrent_layer_is_causal_at_visual_positions_where_a_full_one_is_not(spec: FamilySpec, span: str):
    """In a stage-1.5 forward, a recurrent layer's output (Qwen3.5's Gated DeltaNet, LFM2's short convolution) at the
    first visual position of an image reads no later position (changing every later input leaves it and every
    earlier output as they were), where the full-attention layer's output there reads the later tokens of the same
    block (the span's bidirectional attention): the span holds on the full-attention layers only."""
    croc = spec.build(croc_pretraining=True, bidirectional_span=span).train()
    variant = next(variant for variant in spec.mask_variants if variant.recurrent_layers)
    layer_count = len(croc.model.croc_language_model.layers)
    recurrent = next(index for index in range(layer_count) if variant.is_recurrent(croc.config, index))
    full = next(index for index in range(layer_count) if not variant.is_recurrent(croc.config, index))
    batch = spec.batch(croc, 2)
    calls = _layer_calls(croc, batch)
    layers = croc.model.croc_language_model.layers
    row = 0
    first_visual = int((batch["input_ids"][row] == croc.config.image_token_id).nonzero()[0])
    assert batch["attention_mask"][row, first_visual]

    outputs = _rerun_with_later_positions_changed(layers[recurrent], calls[recurrent], row, first_visual)
    torch.testing.assert_close(outputs[1, :first_visual + 1], outputs[0, :first_visual + 1], rtol=0, atol=1e-6)
    assert not torch.allclose(outputs[1, first_visual + 1:], outputs[0, first_visual + 1:])  # later ones did change

    outputs = _rerun_with_later_positions_changed(layers[full], calls[full], row, first_visual)
    assert not torch.allclose(outputs[1, first_visual], outputs[0, first_visual], rtol=1e-4, atol=1e-4)


@every_family
def test_pool_tokens_enter_the_language_model_as_the_visual_tokens_do(spec: FamilySpec):
    """Pool = copies of the visual tokens (each replaced token matched to its own copy), span "none": the first
    decoder layer receives exactly the plain forward's embeddings (image tokens as the features, text tokens the
    family's scaled embeddings) and the language model gives the plain forward's hidden states. Where a pool token
    lacks something a visual token carries (Qwen3-VL's DeepStack residuals), the plain forward withholds it at the
    replaced tokens, and withholding it is shown to matter."""
    croc = spec.build(croc_pretraining=True, bidirectional_span="none", vtr_positions="all",
                      prompt_pool_size=spec.copy_pool_size).train()
    # The plain forward causal, as span "none".
    batch = {name: value for name, value in inputs(spec.batch(croc, 2)).items()
             if name not in spec.bidirectional_inputs}
    features = torch.cat(spec.features(croc, batch)).detach()
    assert features.shape[0] <= croc.config.prompt_pool_size
    received = []
    # What the first decoder layer reads: after every edit of the language model's inputs (Croc's hook included).
    hook = croc.model.croc_language_model.layers[0].register_forward_pre_hook(
        lambda module, args, kwargs: received.append(args[0] if args else kwargs["hidden_states"]), with_kwargs=True)
    try:
        with torch.no_grad():
            croc.prompt_pool.weight.zero_()
            croc.prompt_pool.weight[: features.shape[0]] = features
            plain = croc.model(**batch, croc_objectives=False).last_hidden_state
        out = croc.model(**batch, croc_objectives=True, croc_generator=_generator())
    finally:
        hook.remove()
    assert int(out.replaced_token_mask.sum()) == sum(croc.config.num_masked_tokens(n) for n in spec.token_counts)
    image_positions = batch["input_ids"] == croc.config.image_token_id
    plain_embeds, stage15_embeds = received
    torch.testing.assert_close(stage15_embeds, plain_embeds, rtol=0, atol=0)
    torch.testing.assert_close(stage15_embeds[image_positions], features, rtol=0, atol=0)
    scale = spec.text_embed_scale(croc.config) if spec.text_embed_scale else 1.0
    text_ids = batch["input_ids"][~image_positions]
    torch.testing.assert_close(stage15_embeds[~image_positions],
                               croc.model.croc_language_model.embed_tokens.weight[text_ids] * scale)
    if spec.withhold_replaced is None:
        torch.testing.assert_close(out.last_hidden_state, plain, rtol=1e-5, atol=1e-5)
        return
    # Images fill the visual positions in order: the replaced mask, flattened the same way.
    replaced = out.replaced_token_mask[out.visual_token_mask]
    with torch.no_grad(), spec.withhold_replaced(croc, replaced):
        plain_without = croc.model(**batch, croc_objectives=False).last_hidden_state
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(out.last_hidden_state[real], plain_without[real], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out.last_hidden_state[real], plain[real], rtol=1e-3, atol=1e-3)


@every_family
def test_save_load_export_and_conversion_round_trips(spec: FamilySpec, tmp_path):
    """A saved Croc folder loads through the Auto class with every weight and the same logits; its export is a
    plain parent folder the parent class loads with the same logits; converting that folder gives Croc again (same
    weights, a fresh pool and head, ready for stage 1.5) with the same logits. Attention stays eager throughout,
    as the original (padding rows differ between backends: compared at every position here)."""
    croc = spec.build().eval()
    batch = inputs(spec.batch(croc, 2))
    with torch.no_grad():
        expected = croc(**batch).logits

    croc.save_pretrained(tmp_path / "croc")
    saved = json.loads((tmp_path / "croc" / "config.json").read_text())
    assert saved["model_type"] == f"croc_{spec.parent_type}"
    assert saved["auto_map"]["AutoModelForImageTextToText"].endswith(spec.generation_class.__name__)
    assert saved["auto_map"]["AutoModel"].endswith(spec.model_class.__name__)
    loaded, info = AutoModelForImageTextToText.from_pretrained(tmp_path / "croc", output_loading_info=True,
                                                               attn_implementation="eager")
    assert type(loaded) is spec.generation_class
    assert not any(info[kind] for kind in LOADING_PROBLEMS), info
    # The head is the input embedding where the family ties them, after loading too.
    for model in (croc, loaded):
        embeddings = model.model.croc_language_model.embed_tokens.weight
        assert (model.lm_head.weight.data_ptr() == embeddings.data_ptr()) is spec.tied_head
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**batch).logits, expected, rtol=0, atol=0)

    # Export: a plain parent folder (no pool, no head) that the parent class loads with the same logits.
    croc_to_llava(croc).save_pretrained(tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["model_type"] == spec.parent_type
    plain, info = spec.parent_generation.from_pretrained(tmp_path / "plain", output_loading_info=True,
                                                         attn_implementation="eager")
    assert not any(info[kind] for kind in LOADING_PROBLEMS), info
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(**batch).logits, expected, rtol=0, atol=0)

    # Conversion: Croc from the plain folder, the same weights plus a fresh pool and head, ready for stage 1.5.
    converted, processor = load_croc(tmp_path / "plain", croc_fields={"croc_pretraining": True},
                                     attn_implementation="eager")
    assert type(converted) is spec.generation_class and processor is None  # weights-only folder
    assert converted.config.croc_pretraining
    for name in spec.conversion_kept:
        assert _config_field(converted.config, name) == _config_field(croc.config, name), name
    with torch.no_grad():
        torch.testing.assert_close(converted.eval()(**batch).logits, expected, rtol=0, atol=0)


@every_family
def test_the_base_model_loads_every_weight_of_a_saved_folder(spec: FamilySpec, tmp_path):
    """`AutoModel` on a saved Croc folder is the family's Croc base model with every saved weight, the pool included,
    whichever layout the folder has: written by a model built here, re-saved after a load, or converted from a plain
    parent folder. Only the generation model's heads are left over. (Qwen2-VL's base-model rename captured the pool,
    which was then drawn afresh without a word; LLaVA-OneVision-1.5's lost the language model of a folder built
    here.)"""
    croc = spec.build().eval()
    croc.save_pretrained(tmp_path / "built")
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "built", attn_implementation="eager")
    reloaded.save_pretrained(tmp_path / "resaved")
    croc_to_llava(croc).save_pretrained(tmp_path / "plain")
    converted, _ = load_croc(tmp_path / "plain", croc_fields={"croc_pretraining": True}, attn_implementation="eager")
    converted.save_pretrained(tmp_path / "converted")

    for folder, source in (("built", croc), ("resaved", croc), ("converted", converted)):
        base, info = AutoModel.from_pretrained(tmp_path / folder, output_loading_info=True,
                                               attn_implementation="eager")
        assert type(base) is spec.model_class
        assert not info["missing_keys"] and not info["mismatched_keys"], (folder, info)
        assert not [key for key in info["unexpected_keys"] if "lm_head" not in key and "vtr_head" not in key], \
            (folder, info)
        expected = source.model.state_dict()
        assert base.state_dict().keys() == expected.keys()
        for name, tensor in base.state_dict().items():
            torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0, msg=f"{folder}: {name}")
    # A loaded base model saves a folder the base model loads whole again (the renames apply to loading only).
    base.save_pretrained(tmp_path / "base")
    again, info = AutoModel.from_pretrained(tmp_path / "base", output_loading_info=True, attn_implementation="eager")
    assert not any(info[kind] for kind in LOADING_PROBLEMS), info
    for name, tensor in base.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], tensor, rtol=0, atol=0, msg=name)


@mrope_families
def test_stage15_keeps_the_multimodal_positions(spec: FamilySpec):
    """The language model receives the same M-RoPE positions (temporal, height, width rows, images on their 2D
    grid) in the stage-1.5 forward as in the plain one."""
    croc = spec.build(croc_pretraining=True).train()
    batch = spec.batch(croc, 2)
    with language_model_inputs(croc) as calls, torch.no_grad():
        croc(**batch, croc_objectives=False)
        croc(**batch, croc_generator=_generator())
    plain, stage15 = (call["position_ids"] for call in calls)
    assert plain.shape == (3, 2, batch["input_ids"].shape[1])
    torch.testing.assert_close(stage15, plain, rtol=0, atol=0)
    image_positions = plain[:, batch["input_ids"] == croc.config.image_token_id]
    assert not torch.equal(image_positions[1], image_positions[2])  # height and width differ on the grid


@pytest.mark.parametrize("span", ["none", "image", "prompt"])
@mrope_families
def test_explicit_multimodal_positions_without_a_mask_train_on_both_attention_paths(spec: FamilySpec, span: str):
    """A row given its M-RoPE positions `(3, 1, L)` (the model's own `get_rope_index`) and no attention mask: one
    sample, as the parent's text model reads 3-row positions. A training step (stage 2 for span "none") on sdpa's
    mask and on croc_split gives the step without explicit positions; the 3-row positions once crashed both the
    mask building and the segments."""
    masked = spec.build(croc_pretraining=span != "none", **({} if span == "none" else {"bidirectional_span": span}))
    masked.set_attn_implementation("sdpa")
    split = copy.deepcopy(masked)
    split.set_attn_implementation(SPLIT_ATTENTION)
    batch = spec.batch(masked, 0)
    row = int(batch["attention_mask"].sum(1).argmax())
    assert batch["attention_mask"][row].all()
    patches = batch["image_grid_thw"].prod(-1)
    start = int(patches[:row].sum())
    one = {"input_ids": batch["input_ids"][row:row + 1], "labels": batch["labels"][row:row + 1],
           "mm_token_type_ids": batch["mm_token_type_ids"][row:row + 1],
           "pixel_values": batch["pixel_values"][start:start + int(patches[row])],
           "image_grid_thw": batch["image_grid_thw"][row:row + 1]}
    positions = masked.model.get_rope_index(one["input_ids"], one["mm_token_type_ids"], one["image_grid_thw"])[0]
    assert positions.shape == (3, 1, one["input_ids"].shape[1])

    def loss(model, **position_ids):
        generator = {} if span == "none" else {"croc_generator": _generator()}
        return model.train()(**one, **position_ids, **generator).loss

    reference = loss(masked)
    for model in (masked, split):
        torch.testing.assert_close(loss(model, position_ids=positions), reference, rtol=1e-5, atol=1e-6)


@packing_refused
def test_packed_rows_are_refused_with_one_line(spec: FamilySpec):
    """Where a family cannot take packed rows (M-RoPE positions come per sample from the image grids; Gemma's sliding
    layers look their image blocks up at the sample's positions), position_ids restarting inside a row are refused
    with its one line."""
    croc = spec.build(croc_pretraining=True).train()
    batch = spec.batch(croc, 0)
    length = batch["input_ids"].shape[1]
    positions = torch.cat([torch.arange(length // 2), torch.arange(length - length // 2)]).expand(2, -1)
    with pytest.raises(ValueError, match=re.escape(spec.model_class.croc_packing_refusal)):
        croc(**{**inputs(batch), "attention_mask": None}, position_ids=positions)


@packing_accepted
def test_a_packed_row_equals_the_padded_batch_in_stage15(spec: FamilySpec):
    """Where a family takes packed rows, the padded batch's rows laid end to end in one row (position_ids restarting
    per sample, no attention mask, each sample's first label blanked as the collator does) give the same stage-1.5
    step: the logits at every real token, both losses, the pool assignment and every gradient."""
    croc = spec.build(croc_pretraining=True).train()
    padded = spec.batch(croc, 2)
    real = padded["attention_mask"].bool()
    lengths = real.sum(dim=1)
    per_token = [name for name, value in padded.items()
                 if name != "attention_mask" and isinstance(value, torch.Tensor) and value.shape == real.shape]
    packed = {name: value for name, value in padded.items() if name != "attention_mask" and name not in per_token}
    packed |= {name: padded[name][real][None] for name in per_token}
    packed["labels"][0, torch.cumsum(lengths, 0) - lengths] = -100
    packed["position_ids"] = torch.cat([torch.arange(int(length)) for length in lengths])[None]

    def step(batch):
        croc.zero_grad()
        out = croc(**batch, croc_generator=_generator())
        out.loss.backward()
        return out, {name: p.grad.clone() for name, p in croc.named_parameters() if p.grad is not None}

    reference, reference_grads = step(padded)
    out, grads = step(packed)
    torch.testing.assert_close(out.logits[0], reference.logits[real], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.lm_loss, reference.lm_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.vtr_loss, reference.vtr_loss, rtol=1e-5, atol=1e-6)
    assert torch.equal(out.pool_ids, reference.pool_ids)
    assert grads.keys() == reference_grads.keys()
    for name, grad in reference_grads.items():
        # Absolute to the largest entry: a key bias of a softmax (the towers') has a true gradient of zero, which
        # both forwards give as rounding noise of different sizes.
        torch.testing.assert_close(grads[name], grad, rtol=0, atol=1e-4 * float(grad.abs().max()) + 1e-8,
                                   msg=lambda message, name=name: f"{name}: {message}")


@video_families
def test_videos_are_refused_in_stage15(spec: FamilySpec):
    """Stage 1.5 trains on images: a batch with videos is refused."""
    croc = spec.build(croc_pretraining=True).train()
    batch = spec.batch(croc, 2)
    with pytest.raises(ValueError, match="stage 1.5 trains on images"):
        croc(**batch, pixel_values_videos=batch["pixel_values"], video_grid_thw=batch["image_grid_thw"])
