"""Cost-curve diagnostics on hand-made tables where the answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adaptok.metrics.cost_curves import (
    curve_agreement,
    level_and_shape,
    level_shape_costs,
    polynomial_fit_costs,
    spearman,
)


def _table() -> np.ndarray:
    """3 clips x 2 blocks x 4 candidates: a level times each block's own falling curve."""
    rng = np.random.default_rng(0)
    levels = rng.uniform(0.01, 0.2, size=(3, 2, 1))
    falls = rng.uniform(0.05, 0.9, size=(3, 2, 3))  # log-cost steps, a different set per block
    return levels * np.exp(-np.concatenate([np.zeros((3, 2, 1)), falls.cumsum(2)], axis=2))


def test_level_and_shape_recover_a_product_table() -> None:
    shape = np.log([1.0, 0.5, 0.25, 0.125])
    shape -= shape.mean()
    level = np.log([[0.1, 0.3], [0.02, 0.05]])
    costs = np.exp(level[..., None] + shape)
    found_level, found_shape = level_and_shape(costs)
    np.testing.assert_allclose(found_level, level)
    np.testing.assert_allclose(found_shape, shape, atol=1e-12)
    np.testing.assert_allclose(level_shape_costs(costs), costs)


def test_levels_only_keep_each_level_but_not_its_shape() -> None:
    costs = _table()
    flat = level_shape_costs(costs)
    np.testing.assert_allclose(np.log(flat).mean(2), np.log(costs).mean(2))
    steps = np.log(flat[..., :-1]) - np.log(flat[..., 1:])
    np.testing.assert_allclose(steps, np.broadcast_to(steps[0, 0], steps.shape))


def test_agreement_separates_levels_from_steps() -> None:
    costs = _table()
    perfect = curve_agreement(costs, costs)
    assert perfect["level"] == pytest.approx(1.0)
    assert perfect["level_within_clip"] == pytest.approx(1.0)
    assert all(r == pytest.approx(1.0) for r in perfect["per_candidate"])
    assert all(r == pytest.approx(1.0) for r in perfect["steps"])
    # every level right, every block the same shape: steps carry no rank (constant -> NaN)
    levels_only = curve_agreement(costs, level_shape_costs(costs))
    assert levels_only["level"] == pytest.approx(1.0)
    assert all(math.isnan(r) for r in levels_only["steps"])
    # each curve mirrored about its level (log c -> 2 level - log c): the step ranks invert
    swapped = np.exp(np.log(costs).mean(2, keepdims=True) * 2 - np.log(costs))
    inverted = curve_agreement(costs, swapped)
    assert all(r == pytest.approx(-1.0) for r in inverted["steps"])


def test_bad_tables_are_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        level_and_shape(np.ones((2, 3)))
    with pytest.raises(ValueError, match=">= 0"):
        level_and_shape(-np.ones((1, 2, 3)))
    with pytest.raises(ValueError, match="shapes differ"):
        curve_agreement(np.ones((1, 2, 3)), np.ones((1, 2, 4)))


def test_spearman_is_nan_for_constants_and_handles_ties() -> None:
    assert math.isnan(spearman(np.ones(4), np.arange(4)))
    assert spearman(np.array([1, 2, 2, 3]), np.array([1, 2, 2, 3])) == pytest.approx(1.0)
    assert spearman(np.arange(5), -np.arange(5)) == pytest.approx(-1.0)


def test_within_clip_levels_ignore_what_whole_clips_share() -> None:
    """Levels ranked right across clips but inverted inside each clip: level ~ +1, within -1."""
    clip_level = np.log([1e-4, 1e-3, 1e-2, 1e-1])[:, None]  # 4 clips far apart
    offsets = np.random.default_rng(1).uniform(-0.2, 0.2, size=(4, 3))  # small, inside a clip
    shape = np.array([0.3, 0.0, -0.3])
    measured = np.exp(clip_level[..., None] + offsets[..., None] + shape)
    predicted = np.exp(clip_level[..., None] - offsets[..., None] + shape)
    agreement = curve_agreement(measured, predicted)
    assert agreement["level"] > 0.8  # the clips, far apart, dominate the ranks
    assert agreement["level_within_clip"] == pytest.approx(-1.0)


def test_polynomial_fits_recover_power_laws_and_smooth_the_rest() -> None:
    lengths = np.array([6, 12, 18, 24, 30, 36, 42, 48])
    rng = np.random.default_rng(2)
    level = rng.uniform(-6, -2, size=(3, 2, 1))
    slope = rng.uniform(-1.2, -0.2, size=(3, 2, 1))
    power_law = np.exp(level + slope * np.log(lengths))
    np.testing.assert_allclose(polynomial_fit_costs(power_law, lengths, 1), power_law)
    # a kink at one length is smoothed away; more degrees follow the curve more closely
    kinked = power_law * np.exp(0.3 * (lengths == 24))
    errors = [
        np.abs(np.log(polynomial_fit_costs(kinked, lengths, d)) - np.log(kinked)).max()
        for d in (0, 1, 2, 7)
    ]
    assert errors[0] > errors[1] > 0.1 and errors[3] < 1e-8  # degree J - 1 interpolates
    flat = polynomial_fit_costs(kinked, lengths, 0)  # degree 0: the block's level
    np.testing.assert_allclose(np.log(flat).mean(2), np.log(kinked).mean(2))
    for bad in ({"degree": 8}, {"degree": -1}, {"lengths": lengths[:-1]}, {"lengths": -lengths}):
        with pytest.raises(ValueError):
            polynomial_fit_costs(kinked, **{"lengths": lengths, "degree": 1, **bad})
