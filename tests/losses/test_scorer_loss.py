"""The scorer's loss: the paper's MSE, and the optional term on candidate-to-candidate steps."""

import pytest
import torch

from adaptok.losses import scorer_loss


def test_zero_slope_weight_is_the_plain_mse() -> None:
    predictions = torch.tensor([[0.0, 1.0, 3.0]])
    labels = torch.tensor([[1.0, 1.0, 1.0]])
    assert scorer_loss(predictions, labels) == pytest.approx((1 + 0 + 4) / 3)


def test_slope_term_sees_wrong_steps_that_the_level_hides() -> None:
    labels = torch.tensor([[3.0, 2.0, 1.0]])
    shifted = labels + 1.0  # right steps, wrong level
    flat = torch.full_like(labels, 2.0)  # right mean level, no steps
    # The plain MSE prefers the flat guess (2/3 < 1) although it says more tokens buy nothing.
    assert scorer_loss(flat, labels) < scorer_loss(shifted, labels)
    # With the step term, the guess whose steps are right wins: flat misses each step by 1.
    assert scorer_loss(shifted, labels, 1.0) == pytest.approx(1.0)
    assert scorer_loss(flat, labels, 1.0) == pytest.approx(2 / 3 + 1.0)


def test_one_candidate_has_no_step_and_bad_arguments_are_refused() -> None:
    assert scorer_loss(torch.ones(2, 1), torch.zeros(2, 1), 5.0) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="slope_weight"):
        scorer_loss(torch.ones(1, 2), torch.ones(1, 2), -1.0)
    with pytest.raises(ValueError, match="differ"):
        scorer_loss(torch.ones(1, 2), torch.ones(1, 3))
