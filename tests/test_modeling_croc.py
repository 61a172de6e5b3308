"""CrocForConditionalGeneration against LlavaForConditionalGeneration, and the stage-1.5 forward."""

import pytest
import torch
from transformers import LlavaForConditionalGeneration
from transformers.cache_utils import Cache

from croc_testing.batches import make_batch
from croc_testing.family_specs import layer_masks
from croc_testing.reference_masks import reference_allowed
from croc_testing.tiny import FLEX_SIZES
from modeling_croc import CrocForConditionalGeneration
from modeling_croc.convert import croc_to_llava


def _model(config, seed=0):
    torch.manual_seed(seed)
    return CrocForConditionalGeneration(config)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_logits_equal_llava_on_shared_weights(make_config, attn):
    croc = _model(make_config(attn_implementation=attn)).eval()
    llava = croc_to_llava(croc)
    assert isinstance(llava, LlavaForConditionalGeneration)
    batch = make_batch(croc.config, rows=3, left_pad=2)
    with torch.no_grad():
        ours = croc(**batch).logits
        reference = llava(**batch).logits
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)


def _assert_same_output_value(ours, reference, name):
    if isinstance(reference, Cache):
        assert type(ours) is type(reference) and ours.get_seq_length() == reference.get_seq_length(), name
    else:
        torch.testing.assert_close(ours, reference, rtol=0, atol=0, msg=name)


def test_outputs_carry_every_field_llava_returns(make_config):
    """Croc's outputs copy the parent's output object instead of naming Llava's fields, so whatever the installed
    transformers calls them (the cache, the image-encoder output, hidden states), they arrive with equal values."""
    croc = _model(make_config()).eval()
    llava = croc_to_llava(croc)
    batch = make_batch(croc.config)
    with torch.no_grad():
        ours = croc(**batch, use_cache=True, output_hidden_states=True)
        reference = llava(**batch, use_cache=True, output_hidden_states=True)
        ours_base = croc.model(**batch, use_cache=True)
        reference_base = llava.model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=True)
    assert set(reference.keys()) <= set(ours.keys()) and set(reference_base.keys()) <= set(ours_base.keys())
    for name, value in reference.items():
        _assert_same_output_value(ours[name], value, name)
    for name, value in reference_base.items():
        _assert_same_output_value(ours_base[name], value, name)


def test_croc_pretraining_is_off_at_inference(make_config):
    """`croc_pretraining` only changes training forwards: eval logits stay Llava's."""
    croc = _model(make_config(croc_pretraining=True)).eval()
    llava = croc_to_llava(croc)
    batch = make_batch(croc.config)
    with torch.no_grad():
        out = croc(**batch)
        torch.testing.assert_close(out.logits, llava(**batch).logits, rtol=0, atol=0)
    assert out.vtr_loss is None and out.pool_ids is None
    torch.testing.assert_close(out.loss, out.lm_loss)


def test_normalized_visual_tokens_have_unit_norm(make_config):
    croc = _model(make_config(croc_preset="official")).eval()
    batch = make_batch(croc.config)
    features = croc.get_image_features(batch["pixel_values"], return_dict=True).pooler_output
    norms = torch.stack([f.norm(dim=-1) for f in features])
    torch.testing.assert_close(norms, torch.ones_like(norms))
    with pytest.raises(ValueError, match="normalize_visual_tokens"):
        croc_to_llava(croc)


@pytest.mark.parametrize("preset", ["paper", "official"])
def test_stage15_losses_and_total(make_config, preset):
    croc = _model(make_config(croc_preset=preset, croc_pretraining=True)).train()
    batch = make_batch(croc.config, rows=2, left_pad=1)
    out = croc(**batch, croc_generator=torch.Generator().manual_seed(0))
    assert out.vtr_loss > 0 and out.lm_loss > 0
    torch.testing.assert_close(out.loss, out.lm_loss + croc.config.vtr_loss_weight * out.vtr_loss)
    masked = croc.config.num_masked_tokens(croc.config.image_seq_length)
    assert out.pool_ids.shape == (2, masked)
    assert out.replaced_token_mask.sum(dim=1).tolist() == [masked, masked]


def test_hungarian_assignment_is_one_to_one_per_image(make_config):
    croc = _model(make_config(croc_pretraining=True, prompt_pool_size=12)).train()
    out = croc(**make_batch(croc.config, rows=3), croc_generator=torch.Generator().manual_seed(1))
    for ids in out.pool_ids:
        assert len(set(ids.tolist())) == len(ids)


def test_nearest_assignment_is_argmin_of_replaced_tokens(make_config):
    croc = _model(make_config(croc_pretraining=True, token_matching="nearest")).train()
    batch = make_batch(croc.config, rows=2)
    generator = torch.Generator().manual_seed(2)
    out = croc(**batch, croc_generator=generator)
    targets = out.visual_tokens
    replaced = targets[out.replaced_token_mask].view(2, -1, targets.shape[-1])
    distances = torch.cdist(replaced.float(), croc.prompt_pool.weight.detach().float()[None])
    torch.testing.assert_close(out.pool_ids, distances.argmin(-1))


def test_mask_draw_is_seeded_and_differs_per_image_and_seed(make_config):
    croc = _model(make_config(croc_pretraining=True)).train()
    batch = make_batch(croc.config, rows=2)

    def replaced(seed):
        return croc(**batch, croc_generator=torch.Generator().manual_seed(seed)).replaced_token_mask

    first, again, other = replaced(3), replaced(3), replaced(4)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.equal(first[0], first[1])


def test_gradients_reach_pool_rows_projector_and_llm_but_not_the_choice(make_config):
    croc = _model(make_config(croc_pretraining=True)).train()
    out = croc(**make_batch(croc.config), croc_generator=torch.Generator().manual_seed(0))
    assert out.pool_ids.grad_fn is None and not out.pool_ids.dtype.is_floating_point
    out.loss.backward()
    pool_grad = croc.prompt_pool.weight.grad
    assigned = torch.zeros(pool_grad.shape[0], dtype=torch.bool)
    assigned[out.pool_ids.flatten()] = True
    assert pool_grad[assigned].abs().sum(-1).gt(0).all(), "every assigned pool row gets gradient"
    assert pool_grad[~assigned].abs().sum() == 0, "unassigned pool rows get none"
    assert croc.model.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0
    assert croc.model.language_model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


def test_vtr_target_is_detached(make_config):
    """The reconstruction target is the projector output, but the VTR loss sends no gradient into it."""
    from modeling_croc.losses import visual_token_reconstruction_loss

    croc = _model(make_config(croc_pretraining=True)).train()
    out = croc(**make_batch(croc.config), croc_generator=torch.Generator().manual_seed(0))
    assert out.visual_tokens.requires_grad
    prediction = torch.randn_like(out.visual_tokens, requires_grad=True)
    loss = visual_token_reconstruction_loss(prediction, out.visual_tokens, out.replaced_token_mask)
    projector = croc.model.multi_modal_projector.linear_2.weight
    (grad,) = torch.autograd.grad(loss, projector, allow_unused=True)
    assert grad is None


def test_text_only_batch_gets_only_lm_loss_and_keeps_pool_in_graph(make_config):
    croc = _model(make_config(croc_pretraining=True)).train()
    input_ids = torch.randint(3, 100, (2, 9))
    out = croc(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=input_ids)
    assert out.vtr_loss == 0
    torch.testing.assert_close(out.loss, out.lm_loss)
    out.loss.backward()
    assert croc.prompt_pool.weight.grad is not None and croc.prompt_pool.weight.grad.abs().sum() == 0
    assert croc.model.vision_tower.embeddings.patch_embedding.weight.grad is None, "no dummy image ran"


def test_mixed_image_and_text_rows(make_config):
    croc = _model(make_config(croc_pretraining=True)).train()
    batch = make_batch(croc.config, rows=2)
    text_row = torch.randint(3, 100, (batch["input_ids"].shape[1],))
    batch["input_ids"][1] = text_row
    batch["labels"][1] = text_row
    batch["pixel_values"] = batch["pixel_values"][:1]
    out = croc(**batch, croc_generator=torch.Generator().manual_seed(0))
    assert out.pool_ids.shape[0] == 1 and out.vtr_loss > 0


@pytest.mark.parametrize("span, expect_change", [("image", True), ("none", False)])
def test_mixed_attention_makes_visual_tokens_see_later_visual_tokens(make_config, span, expect_change):
    """Perturbing the last visual token (after the vision tower, which is bidirectional itself) changes the first
    visual token's hidden state only under mixed attention; text before the image never sees it."""
    croc = _model(make_config(croc_pretraining=True, bidirectional_span=span, mask_ratio=0.0)).train()
    batch = make_batch(croc.config, rows=1)
    first = (batch["input_ids"][0] == croc.config.image_token_id).nonzero().flatten()[0]

    def hidden(delta):
        def shift_last_token(module, args, output):
            output = output.clone()
            output[:, -1] += delta
            return output

        handle = croc.model.multi_modal_projector.register_forward_hook(shift_last_token)
        try:
            out = croc.model(**batch, croc_objectives=True)
        finally:
            handle.remove()
        return out.last_hidden_state[0]

    base, changed = hidden(0.0), hidden(3.0)
    moved = (base[first] - changed[first]).abs().max() > 1e-6
    assert bool(moved) == expect_change
    torch.testing.assert_close(base[:first], changed[:first])


@pytest.mark.parametrize("span", ["image", "prompt", "none"])
@pytest.mark.parametrize("backend", ["flash_attention_2", "flash_attention_3", "kernels-community/flash-attn2"])
def test_flash_attention_backend_is_refused_only_for_mixed_attention(make_config, span, backend):
    """Mixed spans refuse a mask-less backend; with `bidirectional_span="none"` (ViCToR) stage 1.5 builds no custom
    mask and hands the language model the 2D padding mask, so any backend runs it. (FlashAttention cannot run on a
    CPU: the forward is stopped where the language model would start, after every Croc step before it.)"""
    croc = _model(make_config(croc_pretraining=True, bidirectional_span=span)).train()
    croc.config.text_config._attn_implementation_internal = backend
    batch = make_batch(croc.config, rows=2, left_pad=1)
    if span != "none":
        with pytest.raises(ValueError, match="silently stay causal"):
            croc(**batch, croc_generator=torch.Generator().manual_seed(0))
        return

    class ReachedLanguageModel(Exception):
        pass

    received = {}

    def stop(module, args, kwargs):
        received.update(kwargs)
        raise ReachedLanguageModel

    croc.model.language_model.register_forward_pre_hook(stop, with_kwargs=True)
    with pytest.raises(ReachedLanguageModel):
        croc(**batch, croc_generator=torch.Generator().manual_seed(0))
    assert received["attention_mask"] is batch["attention_mask"]


def test_any_number_of_image_tokens(make_config):
    """Nothing assumes 576: a 4x4 and an 8x8 patch grid both run the stage-1.5 forward."""
    for image_size in (56, 112):
        config = make_config(image_size=image_size, croc_pretraining=True)
        croc = _model(config).train()
        out = croc(**make_batch(config, rows=2), croc_generator=torch.Generator().manual_seed(0))
        assert out.replaced_token_mask.shape == (2, (image_size // 14) ** 2)


def test_vtr_head_is_used_in_official_preset(make_config):
    croc = _model(make_config(croc_preset="official", croc_pretraining=True)).train()
    assert croc.vtr_head is not None and len(croc.vtr_head.layers) == 1
    out = croc(**make_batch(croc.config), croc_generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert croc.vtr_head.proj.weight.grad.abs().sum() > 0
    assert croc.vtr_head.position_embedding.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("between", [[6, 7], []], ids=["text-between", "back-to-back"])
def test_two_images_in_one_row(make_config, between):
    """Several images per row: each image gets its own mask and assignment and is its own bidirectional block,
    element by element against the slow reference told each image's token count, also with nothing between the
    two (`<image><image>`), where one run of placeholders made them one block."""
    config = make_config(croc_pretraining=True)
    croc = _model(config).train()
    tokens = config.image_seq_length
    image = torch.full((tokens,), config.image_token_id)
    row = torch.cat([torch.tensor([1, 5]), image, torch.tensor(between, dtype=torch.long), image,
                     torch.tensor([8, 9, 10])])
    input_ids = row[None]
    labels = torch.full_like(input_ids, -100)
    labels[0, -3:] = input_ids[0, -3:]
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels,
             "pixel_values": torch.randn(2, 3, 56, 56)}
    received = layer_masks(croc, lambda: croc(**batch, croc_generator=torch.Generator().manual_seed(0)))
    expected = reference_allowed(input_ids, batch["attention_mask"], labels, "image", config.image_token_id,
                                 image_token_counts=[tokens, tokens])
    for mask in received.values():
        assert torch.equal(mask[0, 0] == 0, expected[0])  # eager: additive float mask
    second = 2 + tokens + len(between)
    assert not expected[0, 2, second] and expected[0, second, 2] and expected[0, 2, 1 + tokens]

    out = croc(**batch, croc_generator=torch.Generator().manual_seed(0))
    assert out.pool_ids.shape == (2, config.num_masked_tokens(tokens))
    assert out.vtr_loss > 0
    for ids in out.pool_ids:
        assert len(set(ids.tolist())) == len(ids)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flex_attention has no backward on CPU")
def test_flex_attention_matches_sdpa_on_cuda(make_config):
    grads = {}
    for attn in ("sdpa", "flex_attention"):
        croc = _model(make_config(**FLEX_SIZES, attn_implementation=attn, croc_pretraining=True)).cuda().train()
        batch = {k: v.cuda() for k, v in make_batch(croc.config, rows=2, left_pad=1).items()}
        out = croc(**batch, croc_generator=torch.Generator(device="cuda").manual_seed(0))
        out.loss.backward()
        grads[attn] = (out.loss.detach(), croc.prompt_pool.weight.grad.clone())
    torch.testing.assert_close(grads["flex_attention"][0], grads["sdpa"][0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grads["flex_attention"][1], grads["sdpa"][1], rtol=1e-3, atol=1e-4)


def test_croc_only_prefixes_are_exactly_what_llava_lacks(make_config):
    """`modeling_croc.constants.CROC_ONLY_PREFIXES` (used by loading, export, quantisation and the learning-rate
    groups) select exactly the parameters a Llava model of the same architecture does not have."""
    from modeling_croc.constants import CROC_ONLY_PATTERNS, CROC_ONLY_PREFIXES

    croc = _model(make_config(croc_preset="official"))  # with a VTR head
    llava = croc_to_llava(croc.__class__(make_config(croc_preset="paper")))
    extra = set(croc.state_dict()) - set(llava.state_dict())
    assert extra == {name for name in croc.state_dict() if name.startswith(CROC_ONLY_PREFIXES)}
    assert {prefix for prefix in CROC_ONLY_PREFIXES if any(name.startswith(prefix) for name in extra)} == set(
        CROC_ONLY_PREFIXES)
    # The load-time patterns also find them inside CrocModel alone (no `model.` prefix).
    import re

    base_names = set(croc.model.state_dict())
    assert {n for n in base_names if any(re.search(p, n) for p in CROC_ONLY_PATTERNS)} == {"prompt_pool.weight"}
