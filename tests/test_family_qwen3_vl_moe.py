"""What only the mixture-of-experts families do on the shared mechanism (the checks every family passes are
`tests/test_families.py`; Qwen3-VL-MoE's DeepStack ones, shared with Qwen3-VL, `tests/test_family_qwen3_vl.py`;
Qwen3.5-MoE's hybrid layers are Qwen3.5's, `tests/test_family_qwen3_5.py`): the router's auxiliary loss, which the
parent adds to its loss with `output_router_logits` and Croc adds the same way (`CrocRouterAuxLossMixin`, shared by
Qwen3-VL-MoE and Qwen3.5-MoE), in stage 2 exactly as the parent and in stage 1.5 next to the VTR term; and which of
their projections LoRA's default targets reach.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from croc_testing.family_specs import SPECS_BY_NAME
from modeling_croc.convert.to_llava import croc_to_llava


@pytest.fixture(params=["qwen3_vl_moe", "qwen3_5_moe"])
def spec(request):
    """Each family whose generation model takes the router auxiliary loss through `CrocRouterAuxLossMixin`."""
    return SPECS_BY_NAME[request.param]


def _switch_loss(router_logits: tuple[torch.Tensor, ...], attention_mask: torch.Tensor, top_k: int) -> torch.Tensor:
    """The load-balancing loss written out (Switch Transformer, eq. 4-6, over every sparse layer's tokens together,
    padding left out): `E * sum_e f_e * P_e`, `f_e` the share of routed slots expert `e` got, `P_e` its mean router
    probability."""
    probs = torch.cat([logits.float().softmax(-1) for logits in router_logits])
    num_experts = probs.shape[-1]
    keep = attention_mask.flatten().float().repeat(len(router_logits))[:, None]
    chosen = F.one_hot(probs.topk(top_k, dim=-1).indices, num_experts).sum(1).float()
    share = (chosen * keep).sum(0) / keep.sum()
    mean_prob = (probs * keep).sum(0) / keep.sum()
    return num_experts * (share * mean_prob).sum()


@pytest.mark.parametrize("by", ["argument", "config", "config_under_none"])
def test_stage2_loss_is_the_parents_router_aux_loss_included(spec, by: str):
    """A training forward outside stage 1.5 (stages 1 and 2) returns the parent's loss, `aux_loss` and router logits
    exactly, on shared weights, whether `output_router_logits` is the forward's argument or the text config's (also
    under an explicit `output_router_logits=None`, which the parent reads as the config's); without it neither
    model computes an auxiliary loss and the loss is the LM loss."""
    croc = spec.build().train()
    plain = croc_to_llava(croc).train()
    batch = spec.batch(croc, 2)
    switch = {"argument": {"output_router_logits": True}, "config": {},
              "config_under_none": {"output_router_logits": None}}[by]
    if by != "argument":
        for model in (croc, plain):
            model.config.text_config.output_router_logits = True
    out, reference = croc(**batch, **switch), plain(**batch, **switch)
    assert reference.aux_loss is not None and reference.aux_loss > 0
    torch.testing.assert_close(out.loss, reference.loss, rtol=0, atol=0)
    torch.testing.assert_close(out.aux_loss, reference.aux_loss, rtol=0, atol=0)
    torch.testing.assert_close(out.logits, reference.logits, rtol=0, atol=0)
    assert len(out.router_logits) == croc.config.text_config.num_hidden_layers
    for ours, theirs in zip(out.router_logits, reference.router_logits):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    text = croc.config.text_config
    expected = _switch_loss(out.router_logits, batch["attention_mask"], text.num_experts_per_tok)
    torch.testing.assert_close(out.aux_loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.loss, out.lm_loss + text.router_aux_loss_coef * out.aux_loss)

    for model in (croc, plain):
        model.config.text_config.output_router_logits = False
    out, reference = croc(**batch, output_router_logits=False), plain(**batch)
    assert out.aux_loss is None and reference.aux_loss is None
    torch.testing.assert_close(out.loss, reference.loss, rtol=0, atol=0)
    torch.testing.assert_close(out.loss, out.lm_loss, rtol=0, atol=0)


def test_stage15_loss_adds_the_vtr_term_to_the_parents(spec):
    """Stage 1.5 with `output_router_logits`: loss = LM + router_aux_loss_coef * aux + vtr_loss_weight * VTR, the
    auxiliary loss hand-computed from the stage-1.5 forward's own router logits (pool tokens routed where they
    replaced visual tokens), padding left out. The auxiliary term alone trains every router."""
    croc = spec.build(croc_pretraining=True).train()
    batch = spec.batch(croc, 2)
    out = croc(**batch, output_router_logits=True, croc_generator=torch.Generator().manual_seed(0))
    text = croc.config.text_config
    assert out.vtr_loss > 0 and out.lm_loss > 0 and out.aux_loss > 0
    torch.testing.assert_close(out.loss, out.lm_loss + text.router_aux_loss_coef * out.aux_loss
                               + croc.config.vtr_loss_weight * out.vtr_loss)
    # One (B * L, E) router output per sparse layer, read from the forward that trains (the pool tokens in it).
    assert [tuple(logits.shape) for logits in out.router_logits] == \
        [(batch["input_ids"].numel(), text.num_experts)] * text.num_hidden_layers
    torch.testing.assert_close(out.aux_loss, _switch_loss(out.router_logits, batch["attention_mask"],
                                                          text.num_experts_per_tok), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        plain = croc(**batch, output_router_logits=True, croc_objectives=False)
    assert not torch.equal(out.router_logits[1], plain.router_logits[1])  # the stage-1.5 inputs were routed

    # The auxiliary term alone reaches every router; it reads the routers' inputs only, so the experts of the last
    # sparse layer (after the last router) get none of it, an earlier layer's experts only through a later router.
    out.aux_loss.backward()
    layers = croc.model.language_model.layers
    for layer in layers:
        assert layer.mlp.gate.weight.grad.abs().sum() > 0
    assert layers[-1].mlp.experts.gate_up_proj.grad is None
    assert layers[0].mlp.experts.gate_up_proj.grad.abs().sum() > 0


def test_stage15_without_router_logits_is_lm_plus_vtr(spec):
    """The parent's default (`output_router_logits` off): no auxiliary loss, stage 1.5's loss is LM + weight * VTR
    as every family's."""
    croc = spec.build(croc_pretraining=True).train()
    out = croc(**spec.batch(croc, 2), croc_generator=torch.Generator().manual_seed(0))
    assert out.aux_loss is None and out.router_logits is None
    torch.testing.assert_close(out.loss, out.lm_loss + croc.config.vtr_loss_weight * out.vtr_loss)


def test_lora_default_targets_are_refused_where_no_dense_mlp_has_them(spec):
    """LoRA wraps linear layers; the routed experts are fused parameters, which it cannot. Qwen3-VL-MoE's decoder
    layers have no other MLP, so the default targets' `gate_proj` names nothing and is refused in one line listing its
    projections. Qwen3.5-MoE's layers add a shared expert (a dense MLP): the defaults are accepted and reach its
    shared experts and full-attention layers, never a routed expert (docs/MODELS.md)."""
    from trainer.cli import ConfigError
    from trainer.lora import language_model_name, lora_target_regex
    from trainer.model_checks import check_lora_targets
    from trainer.script_args import DEFAULT_LORA_TARGETS

    model = spec.build()
    if spec.name == "qwen3_vl_moe":
        with pytest.raises(ConfigError, match=r"'gate_proj' names no module .* k_proj, o_proj, q_proj, v_proj$"):
            check_lora_targets(model, list(DEFAULT_LORA_TARGETS))
        return
    check_lora_targets(model, list(DEFAULT_LORA_TARGETS))
    pattern = re.compile(lora_target_regex(list(DEFAULT_LORA_TARGETS), language_model_name(model)))
    adapted = {name.split("layers.", 1)[1] for name, _ in model.named_modules() if pattern.fullmatch(name)}
    assert adapted == {"1.self_attn.q_proj", "1.self_attn.k_proj", "1.self_attn.v_proj", "1.self_attn.o_proj",
                       *(f"{layer}.mlp.shared_expert.{name}" for layer in (0, 1)
                         for name in ("gate_proj", "up_proj", "down_proj"))}
