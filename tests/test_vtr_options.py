"""The VTR options of `CrocConfig`, each against a reference computed by hand from the model's own pieces: where the
prediction is read, the head, the target normalisation, the distance, the masking count, the logged norms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from croc_testing.batches import make_batch
from modeling_croc import CrocConfig, CrocForConditionalGeneration
from modeling_croc.prompt_pool import CrocPromptPool
from modeling_croc.vtr_head import CrocLinearVTRHead, CrocVTRHead


def _forward(config, seed=0):
    torch.manual_seed(seed)
    croc = CrocForConditionalGeneration(config).train()
    batch = make_batch(croc.config, rows=2, left_pad=1)
    return croc, batch, croc(**batch, croc_generator=torch.Generator().manual_seed(seed))


def _reference_states(croc, batch, seed, before_final_norm: bool):
    """The LM's states at the visual positions, recomputed: the same stage-1.5 forward of the base model, reading
    the final norm's input through a hook of this test's own."""
    captured = []
    handle = croc.model.language_model.norm.register_forward_pre_hook(lambda m, args: captured.append(args[0]))
    try:
        out = croc.model(**{k: v for k, v in batch.items() if k != "labels"}, labels=batch["labels"],
                         croc_objectives=True, croc_generator=torch.Generator().manual_seed(seed))
    finally:
        handle.remove()
    states = captured[0] if before_final_norm else out.last_hidden_state
    num_images, num_tokens, hidden = out.visual_tokens.shape
    return states[out.image_token_mask].view(num_images, num_tokens, hidden), out


def _reference_loss(prediction, target, positions, distance, beta=0.01):
    prediction, target = prediction.float(), target.float()
    if distance == "l2":
        per_token = (prediction - target).norm(dim=-1)
    elif distance == "mse":
        per_token = ((prediction - target) ** 2).mean(-1)
    elif distance == "smooth_l1":
        diff = (prediction - target).abs()
        per_token = torch.where(diff < beta, 0.5 * diff**2 / beta, diff - 0.5 * beta).mean(-1)
    else:
        per_token = 1 - (prediction * target).sum(-1) / (prediction.norm(dim=-1) * target.norm(dim=-1))
    return per_token[positions].mean()


@pytest.mark.parametrize("prediction", ["final_norm", "last_layer"])
@pytest.mark.parametrize("normalization", ["none", "l2", "standardize"])
@pytest.mark.parametrize("distance", ["l2", "mse", "smooth_l1", "cosine"])
def test_vtr_loss_matches_a_hand_computed_reference(make_config, prediction, normalization, distance):
    config = make_config(croc_pretraining=True, vtr_prediction=prediction, vtr_target_normalization=normalization,
                         vtr_loss=distance, vtr_head="none")
    croc, batch, out = _forward(config)
    with torch.no_grad():
        states, base = _reference_states(croc, batch, 0, before_final_norm=prediction == "last_layer")
        target = base.visual_tokens.float()
        if normalization == "l2":
            target = target / target.norm(dim=-1, keepdim=True)
        elif normalization == "standardize":
            # MAE's norm_pix_loss, its epsilon included
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, unbiased=False, keepdim=True)
                                                                 + 1e-6).sqrt()
        expected = _reference_loss(states, target, base.replaced_token_mask, distance)
        torch.testing.assert_close(out.vtr_loss, expected, rtol=1e-4, atol=1e-5)
        positions = base.replaced_token_mask
        expected_norms = torch.stack([states[positions].norm(dim=-1).sum(), target[positions].norm(dim=-1).sum(),
                                      positions.sum().float()])
        torch.testing.assert_close(out.vtr_norm_sums, expected_norms, rtol=1e-4, atol=1e-3)


def test_last_layer_prediction_is_not_the_final_norm_output(make_config):
    """The two read points differ (the final RMSNorm sits between them), and both carry gradient to the LM."""
    losses = {}
    for prediction in ("final_norm", "last_layer"):
        croc, _, out = _forward(make_config(croc_pretraining=True, vtr_prediction=prediction))
        out.vtr_loss.backward()
        assert croc.model.language_model.layers[-1].mlp.down_proj.weight.grad.abs().sum() > 0
        norm_grad = croc.model.language_model.norm.weight.grad
        # Only the final-norm read point passes the VTR gradient through the final norm's gain.
        assert (norm_grad is not None and norm_grad.abs().sum() > 0) == (prediction == "final_norm")
        losses[prediction] = float(out.vtr_loss.detach())
    assert losses["final_norm"] != pytest.approx(losses["last_layer"])


def test_linear_head_is_one_linear_layer_applied_to_the_states(make_config):
    config = make_config(croc_pretraining=True, vtr_head="linear", vtr_loss="mse", vtr_target_normalization="none")
    croc, batch, out = _forward(config)
    assert isinstance(croc.vtr_head, CrocLinearVTRHead)
    assert [type(m) for m in croc.vtr_head.modules()] == [CrocLinearVTRHead, nn.Linear]
    with torch.no_grad():
        states, base = _reference_states(croc, batch, 0, before_final_norm=False)
        expected = _reference_loss(croc.vtr_head.proj(states), base.visual_tokens, base.replaced_token_mask, "mse")
        torch.testing.assert_close(out.vtr_loss, expected, rtol=1e-4, atol=1e-6)
    out.loss.backward()
    assert croc.vtr_head.proj.weight.grad.abs().sum() > 0


def test_bert_head_drops_out_where_bert_does(make_config):
    """BERT drops out on the attention probabilities, after the attention output and after the output dense
    layer, not after the feed-forward activation (torch's encoder layer does, the released head does not)."""
    config = make_config(croc_pretraining=True, vtr_head="bert", vtr_head_layers=2, vtr_head_dropout=0.5)
    head = CrocVTRHead(config).train()
    for layer in head.layers:
        assert isinstance(layer.dropout, nn.Identity)
        assert layer.dropout1.p == layer.dropout2.p == layer.self_attn.dropout == 0.5
    # Functionally: with only the activation's dropout left in place, a train-mode forward is deterministic.
    for layer in head.layers:
        layer.dropout1.p = layer.dropout2.p = 0.0
        layer.self_attn.dropout = 0.0
    states = torch.randn(2, config.image_seq_length, config.text_config.hidden_size)
    torch.testing.assert_close(head(states), head(states), rtol=0, atol=0)


@pytest.mark.parametrize("tokens, nearest, keep_floor", [(6, 4, 5), (14, 10, 11), (30, 22, 23), (16, 12, 12),
                                                         (576, 432, 432)])
def test_mask_rounding(tokens, nearest, keep_floor):
    """`round(0.75 T)` (banker's rounding at .5) against the released code's `T - T // 4`."""
    assert CrocConfig(mask_ratio=0.75, mask_rounding="nearest").num_masked_tokens(tokens) == nearest
    assert CrocConfig(mask_ratio=0.75, mask_rounding="keep_floor").num_masked_tokens(tokens) == keep_floor
    assert CrocConfig(croc_preset="official").mask_rounding == "keep_floor"


@pytest.mark.parametrize("ratio, tokens, masked", [(0.9, 10, 9), (0.9, 100, 90), (0.8, 5, 4), (0.8, 10, 8),
                                                   (0.9, 576, 519), (0.75, 729, 547)])
def test_keep_floor_counts_the_ratio_as_written(ratio, tokens, masked):
    """`T - floor((1 - mask_ratio) * T)` of the decimal ratio: in binary 1 - 0.9 is 0.09999999999999998, and a bare
    floor kept 0 of 10 tokens, masking every one of them. Both counting paths (one image; a tensor of counts, as
    the pool and the trainer's VTR count use) agree, and so does the pool's draw."""
    config = CrocConfig(mask_ratio=ratio, mask_rounding="keep_floor", token_matching="nearest")
    assert config.num_masked_tokens(tokens) == masked
    assert config.num_masked_tokens_per_image(torch.tensor([tokens, tokens])).tolist() == [masked, masked]
    pool = CrocPromptPool(config)
    out = pool(torch.randn(2, tokens, config.text_config.hidden_size), torch.Generator().manual_seed(0))
    assert out.replaced.sum(dim=1).tolist() == [masked, masked]


def test_cosine_distance_ignores_the_prediction_scale():
    from modeling_croc.losses import visual_token_reconstruction_loss

    prediction, target = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    positions = torch.ones(2, 5, dtype=torch.bool)
    base = visual_token_reconstruction_loss(prediction, target, positions, distance="cosine")
    scaled = visual_token_reconstruction_loss(13.0 * prediction, target, positions, distance="cosine")
    torch.testing.assert_close(base, scaled)
    torch.testing.assert_close(base, (1 - F.cosine_similarity(prediction, target, dim=-1)).mean())
