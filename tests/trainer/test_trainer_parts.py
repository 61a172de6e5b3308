"""The pieces of CrocTrainer on their own: parameter groups and weight decay, pool metrics, mask-draw offsets, the
epoch-seeded modality sampler."""

from __future__ import annotations

import math
from unittest import mock

import pytest
import torch

from croc_testing.tiny import tiny_croc_config
from modeling_croc import CrocForConditionalGeneration
from trainer.croc_rng import mask_generator, step_draw_offsets
from trainer.croc_trainer import CrocTrainer, EpochSeededModalitySampler
from trainer.metrics import CrocMetrics, pool_statistics
from trainer.model_loading import apply_trainable_parts
from trainer.stages import parameter_group
from trainer.training_args import CrocTrainingArguments


def test_optimizer_groups_rates_decay_and_betas(tmp_path):
    model = CrocForConditionalGeneration(tiny_croc_config(croc_preset="official", croc_pretraining=True))
    args = CrocTrainingArguments(output_dir=str(tmp_path), stage="1.5", croc_preset="official", weight_decay=0.1,
                                 use_cpu=True, report_to="none", optim="adamw_torch")
    apply_trainable_parts(model, args.trainable_parts)
    trainer = CrocTrainer(model=model, args=args)
    optimizer = trainer.create_optimizer()
    assert all(group["betas"] == (0.9, 0.999) for group in optimizer.param_groups)
    names = {id(param): name for name, param in model.named_parameters()}
    seen = set()
    for group in optimizer.param_groups:
        for param in group["params"]:
            name = names[id(param)]
            seen.add(name)
            assert parameter_group(name) == group["croc_group"]
            expected = {"projector": 1.5e-4, "prompt_pool": 2e-5, "vtr_head": 2e-5, "language_model": 2e-5}
            assert group["lr"] == expected[group["croc_group"]]
            no_decay = name.endswith("bias") or "norm" in name
            assert group["weight_decay"] == (0.0 if no_decay else 0.1), name
    assert any(name.startswith("vtr_head.") for name in seen)  # the head trains, in its own group
    assert not any("vision_tower" in name for name in seen)  # frozen parts stay out
    assert seen == {name for name, param in model.named_parameters() if param.requires_grad}


def test_pool_statistics_and_window_reduction():
    assert pool_statistics(torch.tensor([2.0, 2.0, 0.0, 0.0])) == pytest.approx(
        {"pool_utilisation": 0.5, "pool_entropy": float(torch.log(torch.tensor(2.0)))})
    metrics = CrocMetrics(pool_size=4)
    metrics.add(step=5, scale=0.5, lm_loss=torch.tensor(2.0), vtr_loss=torch.tensor(1.0),
                pool_ids=torch.tensor([[0, 1], [1, 1]]))
    metrics.add(step=5, scale=0.5, lm_loss=torch.tensor(4.0), vtr_loss=torch.tensor(3.0), pool_ids=None)
    metrics.add(step=6, scale=0.5, lm_loss=torch.tensor(2.0), vtr_loss=torch.tensor(1.0),
                pool_ids=torch.tensor([[3, 3]]))
    metrics.add(step=6, scale=0.5, lm_loss=torch.tensor(2.0), vtr_loss=torch.tensor(1.0), pool_ids=None)
    logs = metrics.compute(accelerator=None, current_step=7)  # two optimiser steps in the window
    assert logs["lm_loss"] == pytest.approx(2.5) and logs["vtr_loss"] == pytest.approx(1.5)
    assert logs["pool_utilisation"] == pytest.approx(0.75)
    assert not metrics.has_data


def test_the_first_window_of_a_run_is_averaged_over_its_steps():
    """The run's first window opens at step 0: with logging_steps=3 its lm_loss and vtr_loss were the three steps'
    sums (step 0 taken for no window), three times the loss they are logged beside."""
    metrics = CrocMetrics(pool_size=None, vtr_loss_weight=10.0, croc_objectives=True)
    for step in range(3):
        metrics.add(step=step, scale=1.0, lm_loss=torch.tensor(2.0 + step), vtr_loss=torch.tensor(0.5), pool_ids=None)
    logs = metrics.compute(None, current_step=3)
    assert logs["lm_loss"] == pytest.approx(3.0) and logs["vtr_loss"] == pytest.approx(0.5)


def test_a_skipped_step_leaves_the_window_as_it_leaves_the_logged_loss():
    """A step skipped for a non-finite loss or gradient (`max_nonfinite_steps`) is not in the logged `loss` (the
    applied steps' mean, `RunControl.window_loss`); its terms were: a NaN lm_loss made the window's lm_loss NaN, and
    a finite step with an infinite gradient was averaged in (found by a hostile tester of the logged numbers)."""
    metrics = CrocMetrics(pool_size=4, vtr_loss_weight=10.0)
    metrics.add(step=0, scale=1.0, lm_loss=torch.tensor(2.0), vtr_loss=torch.tensor(1.0),
                pool_ids=torch.tensor([[0, 1]]))
    nan = torch.tensor(float("nan"))
    metrics.add(step=1, scale=1.0, lm_loss=nan, vtr_loss=nan, pool_ids=torch.tensor([[2, 2]]))
    metrics.discard_step(1)
    metrics.add(step=2, scale=1.0, lm_loss=torch.tensor(4.0), vtr_loss=torch.tensor(3.0),
                pool_ids=torch.tensor([[1, 1]]))
    saved = metrics.window_state()  # a checkpoint inside the window carries the applied steps only
    assert (saved["losses"], saved["steps"], saved["vtr_steps"]) == ([6.0, 4.0], 2, 2.0)
    reopened = CrocMetrics(pool_size=4, vtr_loss_weight=10.0)
    reopened.load_window_state(saved, torch.device("cpu"))
    for window in (metrics, reopened):
        logs = window.compute(None, current_step=3, loss=23.0)
        assert (logs["lm_loss"], logs["vtr_loss"]) == (3.0, 2.0)
        assert logs["vtr_share"] == pytest.approx(20.0 / 23.0)
        assert logs["pool_utilisation"] == 0.5  # pool rows 0 and 1: the skipped step's row 2 is not counted
    every = CrocMetrics(pool_size=None, vtr_loss_weight=10.0, croc_objectives=True)
    every.add(step=0, scale=1.0, lm_loss=nan, vtr_loss=nan, pool_ids=None)
    every.discard_step(0)
    assert every.compute(None, current_step=1, loss=float("nan")) == {}


def test_vtr_terms_are_means_over_the_steps_that_reconstruct_something():
    """A step of text-only rows (`group_by_modality_length` makes whole steps of them) has no VTR term: it logged
    `vtr_loss` 0 and, with no pool row assigned, `pool_utilisation` and `pool_entropy` 0 (the entropy of one token
    taking everything), and averaged those zeros into its window; the model card then published them. `vtr_share`
    stays the VTR term's share of the window's whole loss."""
    metrics = CrocMetrics(pool_size=4, vtr_loss_weight=10.0)
    metrics.add(step=0, scale=1.0, lm_loss=torch.tensor(2.0), vtr_loss=torch.tensor(1.0),
                pool_ids=torch.tensor([[0, 1]]), num_vtr_items=torch.tensor(2),
                vtr_norm_sums=torch.tensor([4.0, 2.0, 2.0]))
    metrics.add(step=1, scale=1.0, lm_loss=torch.tensor(4.0), vtr_loss=None, pool_ids=None,
                num_vtr_items=torch.tensor(0))
    logs = metrics.compute(None, current_step=2, loss=8.0)  # steps' losses: 2 + 10 * 1 and 4
    assert (logs["lm_loss"], logs["vtr_loss"]) == (3.0, 1.0)
    assert logs["vtr_share"] == pytest.approx(10 * 0.5 / 8.0)
    assert logs["pool_utilisation"] == 0.5 and logs["pool_entropy"] == pytest.approx(math.log(2))
    metrics.add(step=2, scale=1.0, lm_loss=torch.tensor(4.0), vtr_loss=None, pool_ids=None,
                num_vtr_items=torch.tensor(0))
    assert metrics.compute(None, current_step=3, loss=4.0) == {"lm_loss": 4.0, "vtr_share": 0.0}
    # Where a micro-batch of another process holds the step's VTR targets (the step-wide count is global when
    # tokens are averaged across devices), this process's step is a VTR step too: its 0 is part of the step's term.
    other = CrocMetrics(pool_size=None, vtr_loss_weight=10.0, croc_objectives=True)
    other.add(step=0, scale=2.0, lm_loss=torch.tensor(1.0), vtr_loss=None, pool_ids=None,
              num_vtr_items=torch.tensor(6))
    assert other.compute(None, current_step=1)["vtr_loss"] == 0.0


def test_draw_offsets_follow_the_global_order_and_split_invariance():
    # 2 processes x 2 micro-batches; visual tokens per micro-batch. Global order: (m0 r0), (m0 r1), (m1 r0), (m1 r1).
    counts = torch.tensor([[16, 0], [32, 16]])
    assert step_draw_offsets(counts, 0) == [0, 48]
    assert step_draw_offsets(counts, 1) == [16, 48]
    whole = torch.rand(5, 16, generator=mask_generator(0, 3, 0))
    second = torch.rand(3, 16, generator=mask_generator(0, 3, 2 * 16))
    torch.testing.assert_close(whole[2:], second, rtol=0, atol=0)
    assert not torch.equal(torch.rand(4, generator=mask_generator(0, 4, 0)), torch.rand(4, generator=mask_generator(0, 3, 0)))


def test_masks_of_images_with_different_token_counts_are_split_invariant():
    """Images of different token counts (AnyRes, native resolution) draw one uniform per visual token, so the offsets
    the trainer skips (the micro-batches' visual-token counts) give every image of a step the mask it gets in the
    whole batch, and no two micro-batches read the same uniforms; equal counts draw what they always drew."""
    from modeling_croc.replaced_positions import draw_replaced_positions

    counts = torch.tensor([2, 16, 16, 2])
    masked = torch.round(0.75 * counts).long()

    def draw(part, offset):
        return draw_replaced_positions(len(counts[part]), int(counts[part].max()), masked[part], torch.device("cpu"),
                                       mask_generator(0, 3, offset), token_counts=counts[part])

    whole = draw(slice(0, 4), 0)
    offsets = step_draw_offsets(torch.tensor([[int(counts[:2].sum()), int(counts[2:].sum())]]), 0)
    split = [draw(slice(0, 2), offsets[0]), draw(slice(2, 4), offsets[1])]
    for image in range(4):
        part, row = split[image // 2], image % 2
        assert torch.equal(part[row, :counts[image]], whole[image, :counts[image]]), image
    # Equal counts: the draw of `rand(num_images, T)`, as before.
    equal = draw_replaced_positions(3, 8, torch.tensor([6, 6, 6]), torch.device("cpu"), mask_generator(0, 3, 0),
                                    token_counts=torch.tensor([8, 8, 8]))
    scores = torch.rand(3, 8, generator=mask_generator(0, 3, 0))
    expected = torch.zeros(3, 8, dtype=torch.bool).scatter_(1, scores.topk(6, dim=1, largest=False).indices, True)
    assert torch.equal(equal, expected)


def test_modality_sampler_order_depends_on_seed_and_epoch_only():
    lengths = [20, -5, 30, -7, 25, 40, -3, 18]

    def order(epoch, seed=1):
        sampler = EpochSeededModalitySampler(lengths, batch_size=2, world_size=1, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(0) == order(0) and order(1) == order(1) and order(0) != order(1)
    for start in range(0, len(order(0)), 2):  # every batch holds one modality
        batch = order(0)[start:start + 2]
        assert len({lengths[i] > 0 for i in batch}) == 1


@pytest.mark.parametrize(("images", "texts", "batch", "world"), [(6, 2, 4, 1), (5, 0, 2, 2), (8, 8, 4, 2),
                                                                   (1, 7, 3, 1)])
def test_the_grouped_epoch_length_is_the_samplers(images, texts, batch, world):
    """`grouped_epoch_rows` (the epoch-repeats line and the short-epoch warning) counts what the sampler yields."""
    from trainer.sampler import ModalityGroupedSampler, grouped_epoch_rows

    lengths = [10] * images + [-3] * texts
    assert grouped_epoch_rows(lengths, batch, world) == len(ModalityGroupedSampler(lengths, batch, world)) == len(
        list(ModalityGroupedSampler(lengths, batch, world, generator=torch.Generator().manual_seed(0))))


def test_vtr_norms_are_window_means_over_positions():
    metrics = CrocMetrics(pool_size=4, vtr_loss_weight=10.0)
    metrics.add(step=0, scale=1.0, lm_loss=torch.tensor(2.0), vtr_loss=torch.tensor(0.5), pool_ids=None,
                vtr_norm_sums=torch.tensor([6.0, 2.0, 3.0]))
    metrics.add(step=0, scale=1.0, lm_loss=torch.tensor(2.0), vtr_loss=torch.tensor(0.5), pool_ids=None,
                vtr_norm_sums=torch.tensor([10.0, 6.0, 5.0]))
    logs = metrics.compute(None, current_step=1)
    assert logs["vtr_prediction_norm"] == pytest.approx(16 / 8) and logs["vtr_target_norm"] == pytest.approx(8 / 8)
    assert logs["vtr_share"] == pytest.approx(10 * 1.0 / (4.0 + 10 * 1.0))


def test_vtr_loss_is_logged_without_the_pool_histogram():
    """`log_pool_utilisation=false` drops the pool statistics, not the VTR term of a stage-1.5 run."""
    metrics = CrocMetrics(pool_size=None, vtr_loss_weight=10.0, croc_objectives=True)
    metrics.add(step=0, scale=1.0, lm_loss=torch.tensor(2.0), vtr_loss=torch.tensor(0.5), pool_ids=None)
    logs = metrics.compute(None, current_step=1)
    assert logs["vtr_loss"] == pytest.approx(0.5) and logs["vtr_share"] == pytest.approx(5.0 / 7.0)
    assert "pool_utilisation" not in logs
    stage2 = CrocMetrics(pool_size=None, croc_objectives=False)
    stage2.add(step=0, scale=1.0, lm_loss=torch.tensor(2.0), vtr_loss=None, pool_ids=None)
    assert set(stage2.compute(None, current_step=1)) == {"lm_loss"}


def test_the_auxiliary_loss_is_summed_and_carried_with_the_window():
    # `aux_loss` rides in the loss sums: averaged over the window's steps like lm_loss, saved with a checkpoint's
    # window. A window saved before it was summed (two sums) logs no aux_loss rather than one missing its first steps.
    metrics = CrocMetrics(pool_size=None, vtr_loss_weight=10.0, croc_objectives=True)
    for step, aux in ((0, 2.0), (1, 4.0)):
        metrics.add(step=step, scale=1.0, lm_loss=torch.tensor(1.0), vtr_loss=torch.tensor(0.5), pool_ids=None,
                    aux_loss=torch.tensor(aux))
    saved = metrics.window_state()
    assert saved["losses"] == [2.0, 1.0, 6.0]
    reopened = CrocMetrics(pool_size=None, vtr_loss_weight=10.0, croc_objectives=True)
    reopened.load_window_state(saved, torch.device("cpu"))
    assert reopened.compute(None, current_step=2)["aux_loss"] == metrics.compute(None, current_step=2)["aux_loss"] == 3.0

    earlier = CrocMetrics(pool_size=None, vtr_loss_weight=10.0, croc_objectives=True)
    earlier.load_window_state({"window_start_step": 0, "losses": [2.0, 1.0], "histogram": None, "norms": None},
                              torch.device("cpu"))
    earlier.add(step=2, scale=1.0, lm_loss=torch.tensor(1.0), vtr_loss=torch.tensor(0.5), pool_ids=None,
                aux_loss=torch.tensor(2.0))
    logs = earlier.compute(None, current_step=3)
    assert "aux_loss" not in logs and logs["lm_loss"] == 1.0
    earlier.add(step=3, scale=1.0, lm_loss=torch.tensor(1.0), vtr_loss=torch.tensor(0.5), pool_ids=None,
                aux_loss=torch.tensor(2.0))
    assert earlier.compute(None, current_step=4)["aux_loss"] == 2.0


def test_every_accepted_data_seed_draws_every_epoch():
    # The samplers seed their generator with data_seed + epoch: the largest data_seed the checks accept (2**64 - 1
    # before) drew epoch 0 and ended the run in a traceback at epoch 1.
    from accelerate.data_loader import SeedableRandomSampler

    from trainer.argument_checks import MAX_DATA_SEED, MIN_DATA_SEED

    for seed in (MIN_DATA_SEED, MAX_DATA_SEED):
        plain = SeedableRandomSampler(range(4), data_seed=seed)
        grouped = EpochSeededModalitySampler([3, -3, 4, -4], batch_size=2, world_size=1, seed=seed)
        for epoch in range(3):
            grouped.set_epoch(epoch)
            assert sorted(plain) == sorted(grouped) == [0, 1, 2, 3]


def test_a_trainer_given_no_data_report_says_its_lines_on_the_process_that_logs(tmp_path):
    # Its own report counts the rows every process gathers: a replica saying them repeated each line once per GPU.
    args = CrocTrainingArguments(output_dir=str(tmp_path), stage="1.5", use_cpu=True, report_to="none")
    model = CrocForConditionalGeneration(tiny_croc_config(croc_pretraining=True))
    with mock.patch.object(CrocTrainingArguments, "should_log", new_callable=mock.PropertyMock, return_value=False):
        assert CrocTrainer(model=model, args=args).data_report.logs is False
    assert CrocTrainer(model=model, args=args).data_report.logs is True


class _NumberedRows(torch.utils.data.Dataset):
    """Rows that are their own index, half with an image (modality lengths > 0), for reading a sampler's order."""

    modality_lengths = [5, -5, 6, -6, 7, -7, 8, -8, 9, -9, 10, -10]

    def __len__(self) -> int:
        return len(self.modality_lengths)

    def __getitem__(self, index: int) -> int:
        return index


@pytest.mark.parametrize("grouped", [True, False], ids=["modality sampler", "random sampler"])
def test_an_unset_data_seed_draws_the_order_of_the_seeds_own_value(tmp_path, grouped):
    # What the resume's `data_seed` comparison rests on (`run_record._compared`): unset, both samplers draw from
    # `seed`, so unset and `data_seed=seed` are one order, and unset is not 0.
    model = CrocForConditionalGeneration(tiny_croc_config())

    def order(seed: int, data_seed: int | None) -> list[int]:
        args = CrocTrainingArguments(output_dir=str(tmp_path), stage="2", use_cpu=True, report_to="none", seed=seed,
                                     data_seed=data_seed, group_by_modality_length=grouped,
                                     per_device_train_batch_size=2, remove_unused_columns=False)
        trainer = CrocTrainer(model=model, args=args, train_dataset=_NumberedRows(),
                              data_collator=lambda rows: {"rows": torch.tensor(rows)})
        return [int(row) for batch in trainer.get_train_dataloader() for row in batch["rows"]]

    assert order(7, None) == order(7, 7) != order(7, 0)
    assert order(0, None) == order(0, 0)
