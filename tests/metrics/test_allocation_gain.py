"""Captured gain, regret and token savings on hand-made cases whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from adaptok.alloc import allocate
from adaptok.metrics.allocation_gain import (
    captured_gain,
    captured_gain_interval,
    optimised_metric,
    uniform_tokens_to_match,
    within_clip_spearman,
)


def test_captured_gain_and_regret() -> None:
    # uniform 20 dB, oracle 22 dB, scorer 21.5 dB: 1.5 of the 2 dB gain, 0.5 dB regret
    assert captured_gain(21.5, 20.0, 22.0) == pytest.approx((0.75, 0.5))
    assert captured_gain(19.0, 20.0, 22.0)[0] == pytest.approx(-0.5)  # worse than uniform
    assert math.isnan(captured_gain(20.0, 20.0, 20.01)[0])  # no gain to capture


def test_captured_gain_interval_on_clips_whose_share_is_known() -> None:
    rng = np.random.default_rng(0)
    uniform = rng.uniform(18, 30, 40)
    oracle = uniform + rng.uniform(0.2, 1.0, 40)
    # every clip captures half of its own gain: every resample's mean share is 0.5
    half = uniform + 0.5 * (oracle - uniform)
    assert captured_gain_interval(half, uniform, oracle) == pytest.approx((0.5, 0.5))
    # pooled PSNR: clips alike (20 / 21 / 20.25 dB) leave every resample at 0.25
    same = [np.full(12, v) for v in (20.25, 20.0, 21.0)]
    assert captured_gain_interval(*same, pooled_psnr=True) == pytest.approx((0.25, 0.25))


def test_captured_gain_interval_brackets_the_share_and_narrows_with_more_clips() -> None:
    rng = np.random.default_rng(1)

    def clips(count: int) -> list[np.ndarray]:
        uniform = rng.uniform(18, 30, count)
        oracle = uniform + rng.uniform(0.2, 1.0, count)
        scorer = uniform + rng.uniform(-0.5, 1.0, count) * (oracle - uniform)
        return [scorer, uniform, oracle]

    few, many = clips(16), clips(400)
    for values in (few, many):
        for pooled in (False, True):
            low, high = captured_gain_interval(*values, pooled_psnr=pooled)
            if pooled:  # the share the report states: pooled PSNR of the mean MSE
                mse = [np.mean(10 ** (-v / 10)) for v in values]
                s, u, o = (10 * np.log10(1 / m) for m in mse)
            else:
                s, u, o = (v.mean() for v in values)
            assert low < captured_gain(s, u, o)[0] < high
    width = [np.subtract(*captured_gain_interval(*v)[::-1]) for v in (few, many)]
    assert width[1] < width[0] / 2  # ~1/sqrt(clips)
    # the order the clips come in (e.g. gathered from two processes) does not matter
    order = rng.permutation(400)
    assert captured_gain_interval(*(v[order] for v in many)) == captured_gain_interval(*many)


def test_captured_gain_interval_is_nan_without_a_gain_or_clips_and_checks_its_input() -> None:
    flat = np.full(10, 20.0)
    assert all(math.isnan(x) for x in captured_gain_interval(flat, flat, flat + 0.01))
    empty = np.zeros(0)
    assert all(math.isnan(x) for x in captured_gain_interval(empty, empty, empty))
    with pytest.raises(ValueError, match="one length"):
        captured_gain_interval(flat, flat, flat[:3])
    with pytest.raises(ValueError, match="level"):
        captured_gain_interval(flat, flat, flat + 1, level=1.0)


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


def test_each_mode_is_judged_in_the_metric_it_optimises() -> None:
    assert optimised_metric("mse", "batch") == ("psnr_pooled", True)
    assert optimised_metric("mse", "streaming") == ("psnr_pooled", True)
    assert optimised_metric("mse", "per_clip") == ("psnr", True)
    assert optimised_metric("lpips", "batch") == ("lpips", False)
    with pytest.raises(ValueError, match="unknown block cost"):
        optimised_metric("vmaf", "batch")


def test_a_batch_mse_allocation_raises_the_pooled_psnr_not_the_mean_clip_psnr() -> None:
    """Why batch mode is judged by the pooled PSNR: moving tokens from a calm clip (tiny MSE)
    to a busy one lowers the summed MSE but the mean of the per-clip PSNRs falls."""
    # 2 clips x 1 block; candidate lengths 1, 2, 3; block MSE at each length
    costs = np.array([[[1e-4, 0.5e-4, 0.4e-4]], [[2e-2, 1.5e-2, 1e-2]]])
    oracle = allocate(costs, [1, 2, 3], 2.0, mode="batch").lengths[:, 0]
    assert oracle.tolist() == [1, 3]  # the busy clip gets the tokens
    mse = {"uniform": costs[:, 0, 1], "oracle": np.array([1e-4, 1e-2])}
    pooled = {k: -10 * np.log10(v.mean()) for k, v in mse.items()}
    per_clip = {k: float(np.mean(-10 * np.log10(v))) for k, v in mse.items()}
    assert pooled["oracle"] - pooled["uniform"] == pytest.approx(1.73, abs=0.01)
    assert per_clip["oracle"] - per_clip["uniform"] == pytest.approx(-0.62, abs=0.01)


def test_within_clip_spearman_ignores_differences_between_clips() -> None:
    # two clips: a calm one (complexity 1-4) and a busy one (10-40); per-clip allocation gives
    # each the same tokens in total, and follows complexity inside each clip
    complexity = np.array([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
    tokens = np.array([[4.0, 8.0, 12.0, 16.0], [4.0, 8.0, 12.0, 16.0]])
    assert within_clip_spearman(complexity, tokens) == pytest.approx(1.0)
    pooled = spearmanr(complexity.ravel(), tokens.ravel()).statistic
    assert pooled < 0.8  # the pooled figure also asks for more tokens in the busy clip
    assert within_clip_spearman(complexity, tokens[:, ::-1]) == pytest.approx(-1.0)
    # one clip ordered, one reversed: nothing overall
    mixed = np.stack([tokens[0], tokens[1, ::-1]])
    assert within_clip_spearman(complexity, mixed) == pytest.approx(0.0)
    # a clip given equal tokens adds its complexity spread but no covariance
    flat = np.stack([tokens[0], np.full(4, 10.0)])
    assert within_clip_spearman(complexity, flat) == pytest.approx(0.5**0.5)
    # clips without a known complexity are left out; no spread at all is NaN
    unknown = np.vstack([complexity, [[np.nan] * 4]])
    assert within_clip_spearman(unknown, np.vstack([tokens, tokens[:1]])) == pytest.approx(1.0)
    assert math.isnan(within_clip_spearman(complexity, np.full((2, 4), 8.0)))
    assert math.isnan(within_clip_spearman(complexity[:, :1], tokens[:, :1]))
    with pytest.raises(ValueError, match="shape"):
        within_clip_spearman(complexity, tokens[:, :3])
