"""TokenBudget: the three readings of a budget and their conversions."""

from __future__ import annotations

import dataclasses

import pytest

from adaptok.alloc import TokenBudget


def test_conversions_between_fraction_mean_and_clip_tokens() -> None:
    budget = TokenBudget.from_fraction(0.25, 512)
    assert budget.mean_tokens == 128.0
    assert budget.fraction == 0.25
    assert budget.clip_tokens(4) == 512.0
    assert TokenBudget(128, 512) == budget  # the same budget, however it was written
    assert str(budget) == "0.25 of 512 tokens per block (128)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        budget.mean_tokens = 3.0  # type: ignore[misc]


def test_a_mean_given_directly_is_kept_exactly() -> None:
    """A mean read back is the mean given, not mean / M x M (which can lose a bit)."""
    budget = TokenBudget(3.0, 7)
    assert budget.mean_tokens == 3.0
    assert budget.fraction == pytest.approx(3 / 7)


@pytest.mark.parametrize(
    ("mean", "tokens", "message"),
    [
        (0.0, 8, r"mean in \(0, 8\]"),
        (9.0, 8, r"mean in \(0, 8\]"),
        (float("nan"), 8, r"mean in \(0, 8\]"),
        (4.0, 0, "integer >= 1"),
        (4.0, 8.5, "integer >= 1"),
    ],
)
def test_invalid_budgets_are_refused(mean: float, tokens: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TokenBudget(mean, tokens)


def test_a_fraction_outside_zero_one_is_refused() -> None:
    with pytest.raises(ValueError, match=r"fraction\s+in \(0, 1\]"):
        TokenBudget.from_fraction(1.5, 16)
