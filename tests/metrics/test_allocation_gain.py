"""Captured gain, regret and token savings on hand-made cases whose answers are known."""

from __future__ import annotations

import math

import pytest

from adaptok.metrics.allocation_gain import captured_gain, uniform_tokens_to_match


def test_captured_gain_and_regret() -> None:
    # uniform 20 dB, oracle 22 dB, scorer 21.5 dB: 1.5 of the 2 dB gain, 0.5 dB regret
    assert captured_gain(21.5, 20.0, 22.0) == pytest.approx((0.75, 0.5))
    assert captured_gain(19.0, 20.0, 22.0)[0] == pytest.approx(-0.5)  # worse than uniform
    assert math.isnan(captured_gain(20.0, 20.0, 20.01)[0])  # no gain to capture


def test_uniform_tokens_to_match_interpolates_the_curve() -> None:
    tokens, psnr = [4, 8, 16, 32], [18.0, 20.0, 22.0, 23.0]
    assert uniform_tokens_to_match(21.0, tokens, psnr) == pytest.approx(12.0)
    assert uniform_tokens_to_match(20.0, tokens, psnr) == pytest.approx(8.0)
    assert uniform_tokens_to_match(17.0, tokens, psnr) == 4  # the first point already reaches it
    assert uniform_tokens_to_match(24.0, tokens, psnr) == math.inf  # beyond the curve
    # a noisy dip does not create a second crossing: the curve is made monotone first
    assert uniform_tokens_to_match(21.0, [4, 8, 16, 32], [18, 21.5, 21.0, 23]) == pytest.approx(
        4 + (21.0 - 18) / (21.5 - 18) * 4
    )


def test_token_savings_example() -> None:
    """Scorer at 8 tokens/block reaches 21 dB; uniform needs 12: savings 1.5x."""
    needed = uniform_tokens_to_match(21.0, [4, 8, 16, 32], [18.0, 20.0, 22.0, 23.0])
    assert needed / 8 == pytest.approx(1.5)
