"""The VTR loss: zero at the target, positive elsewhere, the right reduction for each distance."""

import copy
import importlib.util

import pytest
import torch
import torch.nn.functional as F

from modeling_croc.losses import visual_token_reconstruction_loss


@pytest.mark.parametrize("distance", ["l2", "mse", "smooth_l1"])
def test_zero_at_target_positive_elsewhere(distance):
    target = torch.randn(2, 6, 8)
    positions = torch.rand(2, 6) > 0.3
    assert visual_token_reconstruction_loss(target.clone(), target, positions, distance) == 0
    assert visual_token_reconstruction_loss(target + 0.1, target, positions, distance) > 0


def test_only_selected_positions_count():
    target = torch.zeros(1, 4, 3)
    prediction = torch.zeros(1, 4, 3)
    prediction[0, 3] = 100.0
    positions = torch.tensor([[True, True, True, False]])
    assert visual_token_reconstruction_loss(prediction, target, positions) == 0


def test_reductions_match_their_definitions():
    prediction, target = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    positions = torch.tensor([[1, 0, 1, 1, 0], [0, 1, 1, 0, 0]], dtype=torch.bool)
    l2 = (prediction - target).norm(dim=-1)[positions].mean()
    torch.testing.assert_close(visual_token_reconstruction_loss(prediction, target, positions, "l2"), l2)
    mse = F.mse_loss(prediction[positions], target[positions])
    torch.testing.assert_close(visual_token_reconstruction_loss(prediction, target, positions, "mse"), mse)
    smooth = F.smooth_l1_loss(prediction[positions], target[positions], beta=0.01)
    torch.testing.assert_close(
        visual_token_reconstruction_loss(prediction, target, positions, "smooth_l1", smooth_l1_beta=0.01), smooth
    )


def test_num_items_in_batch_gives_a_step_wide_mean():
    """Two halves, each divided by the step-wide count, sum to the mean over the whole step."""
    prediction, target = torch.randn(4, 5, 3), torch.randn(4, 5, 3)
    positions = torch.rand(4, 5) > 0.4
    whole = visual_token_reconstruction_loss(prediction, target, positions)
    count = int(positions.sum())
    halves = sum(
        visual_token_reconstruction_loss(prediction[s], target[s], positions[s], num_items_in_batch=count)
        for s in (slice(0, 2), slice(2, 4))
    )
    torch.testing.assert_close(halves, whole)


def test_empty_selection_is_zero_and_differentiable():
    prediction = torch.randn(0, 0, 3, requires_grad=True)
    loss = visual_token_reconstruction_loss(prediction, torch.zeros(0, 0, 3), torch.zeros(0, 0, dtype=torch.bool))
    loss.backward()
    assert loss == 0


# --- the LM loss without logits (use_liger_kernel) -------------------------------------------------------------


def _summed_cross_entropy(hidden, weight, targets, ignore_index):
    """What Liger's fused kernel computes, written plainly (it materialises the logits: the reference only)."""
    return F.cross_entropy((hidden @ weight.T).float(), targets, ignore_index=ignore_index, reduction="sum")


@pytest.mark.parametrize("num_items", [None, 23])
def test_fused_lm_loss_equals_the_unfused_loss_and_skips_the_logits(make_config, monkeypatch, num_items):
    from croc_testing.batches import make_batch
    from modeling_croc import CrocForConditionalGeneration, losses

    monkeypatch.setattr(losses, "_liger_fused_linear_cross_entropy", _summed_cross_entropy)
    torch.manual_seed(0)
    config = make_config(croc_pretraining=True)
    unfused = CrocForConditionalGeneration(config).train()
    fused = copy.deepcopy(unfused)
    fused.fused_lm_loss = True
    batch = make_batch(config, rows=2, left_pad=1)
    extra = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    outs = [model(**batch, **extra, croc_generator=torch.Generator().manual_seed(0)) for model in (unfused, fused)]
    assert outs[0].logits is not None and outs[1].logits is None
    torch.testing.assert_close(outs[1].lm_loss, outs[0].lm_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(outs[1].loss, outs[0].loss, rtol=1e-5, atol=1e-6)
    for out in outs:
        out.loss.backward()
    for (name, a), (_, b) in zip(unfused.named_parameters(), fused.named_parameters()):
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)
    with torch.no_grad():  # outside training the logits are computed as always
        assert fused.eval()(**batch).logits is not None


def _fused_and_unfused(make_config, monkeypatch):
    from modeling_croc import CrocForConditionalGeneration, losses

    monkeypatch.setattr(losses, "_liger_fused_linear_cross_entropy", _summed_cross_entropy)
    torch.manual_seed(0)
    config = make_config(croc_pretraining=False)
    unfused = CrocForConditionalGeneration(config)
    fused = copy.deepcopy(unfused)
    fused.fused_lm_loss = True
    return config, unfused, fused


def test_fused_lm_loss_reads_shift_labels_as_they_are(make_config, monkeypatch):
    """`shift_labels` (the Trainer's context parallelism shards labels already shifted) are the targets as they are,
    as transformers' `ForCausalLMLoss` reads them: not shifted again."""
    from croc_testing.batches import make_batch

    config, unfused, fused = _fused_and_unfused(make_config, monkeypatch)
    batch = make_batch(config, rows=2, left_pad=1)
    shift_labels = torch.full_like(batch["labels"], -100)
    shift_labels[:, -6:-1] = batch["input_ids"][:, -5:]  # a shard's targets: what the unshifted labels cannot say
    losses = [model.train()(**batch, shift_labels=shift_labels, num_items_in_batch=torch.tensor(10)).lm_loss
              for model in (unfused, fused)]
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(losses[1], fused(**batch, num_items_in_batch=torch.tensor(10)).lm_loss)


def test_fused_lm_loss_in_an_evaluation_that_skips_the_logits(make_config, monkeypatch):
    """With `use_liger_kernel`, the Trainer's loss-only evaluation passes `skip_logits=True`: the fused loss then
    runs in eval mode too (no logits), equal to the unfused one; without it an evaluation returns its logits."""
    from croc_testing.batches import make_batch

    config, unfused, fused = _fused_and_unfused(make_config, monkeypatch)
    batch = make_batch(config, rows=2, left_pad=1)
    with torch.no_grad():
        reference = unfused.eval()(**batch, skip_logits=True)
        skipped = fused.eval()(**batch, skip_logits=True)
        kept = fused(**batch)
    assert reference.logits is not None  # no fused loss: the flag changes nothing
    assert skipped.logits is None and kept.logits is not None
    torch.testing.assert_close(skipped.loss, reference.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(kept.loss, reference.loss, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_items", [None, 0])
def test_fused_lm_loss_with_no_supervised_token_is_the_unfused_loss(make_config, monkeypatch, num_items):
    """No label to predict: transformers' loss is NaN (a mean over nothing, or a sum over 0 items), and so is the
    fused one, rather than a silent 0 that only the fused path would report."""
    from croc_testing.batches import make_batch

    config, unfused, fused = _fused_and_unfused(make_config, monkeypatch)
    batch = make_batch(config, rows=2, left_pad=1)
    batch["labels"] = torch.full_like(batch["labels"], -100)
    extra = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    losses = [model.train()(**batch, **extra).lm_loss for model in (unfused, fused)]
    assert losses[0].isnan() and losses[1].isnan()


@pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("liger_kernel") is None,
                    reason="Liger's kernels run on CUDA with liger-kernel installed")
def test_liger_fused_lm_loss_on_cuda_equals_the_unfused_loss(make_config):
    """Liger's fused loss alone, and the trainer's whole `use_liger_kernel` (`apply_liger_kernels`: the fused loss
    and the language model's Liger kernels, norms, MLP and rotary embeddings, patched on the instance), against the
    plain model in float32: the loss and every gradient."""
    from croc_testing.batches import make_batch
    from modeling_croc import CrocForConditionalGeneration
    from trainer.croc_trainer import apply_liger_kernels

    torch.manual_seed(0)
    config = make_config(croc_pretraining=False)
    unfused = CrocForConditionalGeneration(config).cuda().train()
    fused = copy.deepcopy(unfused)
    fused.fused_lm_loss = True
    patched = copy.deepcopy(unfused)
    apply_liger_kernels(patched)
    assert patched.fused_lm_loss
    batch = {k: v.cuda() for k, v in make_batch(config, rows=2, left_pad=1).items()}
    losses = [model(**batch).loss for model in (unfused, fused, patched)]
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(losses[2], losses[0], rtol=1e-3, atol=1e-4)
    for loss in losses:
        loss.backward()
    for (name, a), (_, b), (_, c) in zip(unfused.named_parameters(), fused.named_parameters(),
                                         patched.named_parameters(), strict=True):
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-5, msg=name)
            torch.testing.assert_close(c.grad, a.grad, rtol=1e-2, atol=1e-4, msg=name)
