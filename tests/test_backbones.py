"""The backbone matrix: Croc on every language-model family and vision tower transformers' Llava takes (tiny random
configs built in code, `croc_testing.backbones`).

Every pair: inference logits equal `LlavaForConditionalGeneration`'s on shared weights, and a stage-1.5 step gives
both losses and gradients where they belong. Every language model (with a tower each): the mask every decoder layer
receives in stage 1.5, element by element against the slow reference for its own layer type (sliding or global),
pool tokens entering the LM exactly as the visual tokens they replace, and `generate` equal to Llava's.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from croc_testing.backbones import SLIDING_WINDOW, TEXT_BACKBONES, VISION_BACKBONES, backbone_fields
from croc_testing.batches import make_batch
from croc_testing.reference_masks import reference_allowed
from modeling_croc import CrocConfig, CrocForConditionalGeneration
from modeling_croc.convert import croc_to_llava

PAIRS = list(itertools.product(TEXT_BACKBONES, VISION_BACKBONES))
# One tower per language model for the per-model checks, every tower appearing.
PER_MODEL = [(text, list(VISION_BACKBONES)[i % len(VISION_BACKBONES)]) for i, text in enumerate(TEXT_BACKBONES)]


def _config(text: str, vision: str, **croc_fields) -> CrocConfig:
    croc_fields.setdefault("prompt_pool_size", 64)
    return CrocConfig(**backbone_fields(text, vision), attn_implementation="eager", **croc_fields)


def _model(config: CrocConfig, seed: int = 0) -> CrocForConditionalGeneration:
    torch.manual_seed(seed)
    return CrocForConditionalGeneration(config)


def _layer_type(text_config, index: int) -> str:
    layer_types = getattr(text_config, "layer_types", None)
    if layer_types:
        return layer_types[index]
    return "sliding_attention" if getattr(text_config, "sliding_window", None) else "full_attention"


@pytest.mark.parametrize("text, vision", PAIRS)
def test_inference_equals_llava_on_shared_weights(text, vision):
    croc = _model(_config(text, vision)).eval()
    llava = croc_to_llava(croc)
    batch = make_batch(croc.config, rows=2, left_pad=2)
    with torch.no_grad():
        torch.testing.assert_close(croc(**batch).logits, llava(**batch).logits, rtol=0, atol=0)
    if croc.config.tie_word_embeddings:  # Qwen2/3 and Gemma tie: still one tensor in both models
        assert croc.lm_head.weight is croc.model.language_model.embed_tokens.weight
        assert llava.lm_head.weight.data_ptr() == llava.model.language_model.embed_tokens.weight.data_ptr()


@pytest.mark.parametrize("text, vision", PAIRS)
def test_stage15_step_losses_and_gradients(text, vision):
    croc = _model(_config(text, vision, croc_pretraining=True)).train()
    batch = make_batch(croc.config, rows=2, left_pad=1)
    out = croc(**batch, croc_generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss) and out.lm_loss > 0 and out.vtr_loss > 0
    torch.testing.assert_close(out.loss, out.lm_loss + croc.config.vtr_loss_weight * out.vtr_loss)
    with torch.no_grad():  # both terms recomputed by hand (the paper preset: linear head, standardised targets, MSE)
        base = croc.model(**{k: v for k, v in batch.items() if k != "labels"}, labels=batch["labels"],
                          croc_objectives=True, croc_generator=torch.Generator().manual_seed(0))
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
    out.loss.backward()
    assigned = torch.zeros(croc.config.prompt_pool_size, dtype=torch.bool)
    assigned[out.pool_ids.flatten()] = True
    pool_grad = croc.prompt_pool.weight.grad.abs().sum(-1)
    assert pool_grad[assigned].gt(0).all() and pool_grad[~assigned].eq(0).all()
    assert croc.model.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0
    first_layer = croc.model.language_model.layers[0]
    assert first_layer.self_attn.q_proj.weight.grad.abs().sum() > 0
    if first_layer.self_attn.q_proj.bias is not None:  # Qwen2's attention biases train too
        assert first_layer.self_attn.q_proj.bias.grad.abs().sum() > 0


@pytest.mark.parametrize("span", ["image", "prompt"])
@pytest.mark.parametrize("text, vision", PER_MODEL)
def test_every_layer_gets_the_mixed_mask_of_its_own_type(text, vision, span):
    """Capture the mask each decoder layer receives in a stage-1.5 forward: global layers see causal + the block,
    sliding layers additionally keep their window (Gemma 2/3 alternate both, Mistral slides everywhere, Qwen2 here
    slides on its top layer). A single 4D mask would have reached every layer unchanged."""
    config = _config(text, vision, croc_pretraining=True, bidirectional_span=span)
    croc = _model(config).train()
    batch = make_batch(config, rows=2, left_pad=2)
    assert batch["input_ids"].shape[1] > SLIDING_WINDOW
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
    seen_types = set()
    for index, mask in received.items():
        layer_type = _layer_type(config.text_config, index)
        seen_types.add(layer_type)
        window = SLIDING_WINDOW if layer_type == "sliding_attention" else None
        expected = reference_allowed(batch["input_ids"], batch["attention_mask"], batch["labels"], span,
                                     config.image_token_id, window)
        allowed = mask[:, 0] == 0  # eager: additive float mask
        for row in range(real.shape[0]):
            assert torch.equal(allowed[row][real[row]], expected[row][real[row]]), (text, index, layer_type, row)
    assert seen_types == {_layer_type(config.text_config, i) for i in range(config.text_config.num_hidden_layers)}


@pytest.mark.parametrize("text, vision", PER_MODEL)
def test_pool_tokens_enter_the_language_model_as_the_visual_tokens_do(text, vision):
    """With a pool holding exact copies of the batch's visual tokens, Hungarian matching puts each masked token's own
    copy back (zero cost), and with causal attention the stage-1.5 hidden states equal the plain forward's. So pool
    tokens meet exactly what visual tokens meet on the way into the LM: Gemma's embedding scale (sqrt(hidden)) is
    applied inside its embedding module to token ids only, to neither of them, and the VTR targets are the
    projector's outputs at that same scale."""
    config = _config(text, vision, croc_pretraining=True, bidirectional_span="none", vtr_positions="all",
                     prompt_pool_size=32)
    croc = _model(config).train()
    batch = make_batch(config, rows=2)
    features = torch.cat(croc.model.croc_image_features(batch["pixel_values"]))
    with torch.no_grad():
        croc.prompt_pool.weight.copy_(features)
        plain = croc.model(**batch, croc_objectives=False).last_hidden_state
    out = croc.model(**batch, croc_objectives=True, croc_generator=torch.Generator().manual_seed(0))
    assert out.replaced_token_mask.any()
    torch.testing.assert_close(out.last_hidden_state, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.visual_tokens.flatten(0, 1), features)
    embed = croc.model.language_model.embed_tokens
    if hasattr(embed, "embed_scale"):  # Gemma: the scale is real, it just does not touch the visual tokens
        assert float(embed.embed_scale) == pytest.approx(config.text_config.hidden_size ** 0.5)


@pytest.mark.parametrize("text, vision", PER_MODEL)
def test_generate_equals_llava(text, vision):
    croc = _model(_config(text, vision)).eval()
    llava = croc_to_llava(croc)
    batch = make_batch(croc.config, rows=2, left_pad=1)
    batch.pop("labels")
    settings = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": croc.config.text_config.pad_token_id}
    torch.testing.assert_close(croc.generate(**batch, **settings), llava.generate(**batch, **settings), rtol=0, atol=0)
