"""The VTR loss: zero at the target, positive elsewhere, the right reduction for each distance."""

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
