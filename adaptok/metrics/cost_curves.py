"""What a scorer gets right of a block's cost curve: its level, and how it falls.

IPAL (docs/METHOD.md section 4) reads only the steps of each block's cost curve, how much the
cost falls from one candidate length to the next; a scorer can rank blocks by cost well and
still give an allocator nothing to choose by. These diagnostics split a table of block costs
into a per-block *level* and a *shape* in log space, ``log c[n, k, j] = level[n, k] +
shape[j] + rest[n, k, j]``, so that one can ask separately how well a scorer predicts the
levels and the steps, and how much of the oracle's gain the levels alone could buy (the
costs ``exp(level + shape)``, every block given the mean shape). Ours, not the paper's.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.stats import spearmanr

__all__ = [
    "LOG_FLOOR",
    "curve_agreement",
    "level_and_shape",
    "level_shape_costs",
    "polynomial_fit_costs",
    "spearman",
]

LOG_FLOOR = 1e-6
"""Costs are floored here before the log (an MSE of 1e-6 is 60 dB PSNR)."""


def _log_costs(costs: np.ndarray) -> np.ndarray:
    """``(N, K, J)`` positive costs -> their logs, floored at ``LOG_FLOOR``."""
    costs = np.asarray(costs, dtype=np.float64)
    if costs.ndim != 3 or costs.shape[2] < 2:
        raise ValueError(f"expected costs of shape (N, K, J >= 2), got {costs.shape}")
    if not np.isfinite(costs).all() or (costs < 0).any():
        raise ValueError("costs must be finite and >= 0 (e.g. block MSE or LPIPS)")
    return np.log(np.maximum(costs, LOG_FLOOR))


def level_and_shape(costs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares split of log costs into per-block levels and one shape over candidates.

    Args:
        costs: ``(N, K, J)`` costs (>= 0) of N clips, K blocks, J candidate lengths in
            increasing order.

    Returns:
        ``(level, shape)``: ``(N, K)`` mean log cost of each block, and the ``(J,)`` mean over
        blocks of each block's log curve minus its level (sums to 0).

    Raises:
        ValueError: Not a 3-D array with ``J >= 2``, or a negative or non-finite cost.
    """
    logs = _log_costs(costs)
    level = logs.mean(axis=2)
    shape = (logs - level[..., None]).mean(axis=(0, 1))
    return level, shape


def level_shape_costs(costs: np.ndarray) -> np.ndarray:
    """Each block's measured level with the mean shape: ``exp(level[n, k] + shape[j])``.

    Allocating with these costs shows what a scorer that knew every block's level exactly,
    but not how its own curve falls, could win.

    Args:
        costs: ``(N, K, J)`` measured costs (>= 0).

    Returns:
        ``(N, K, J)`` costs in the same units.
    """
    level, shape = level_and_shape(costs)
    return np.exp(level[..., None] + shape)


def polynomial_fit_costs(costs: np.ndarray, lengths: np.ndarray, degree: int) -> np.ndarray:
    """Each block's own curve, smoothed: a least-squares polynomial in log length, in log cost.

    ``log c[n, k, j] ~ sum_d a[n, k, d] log(lengths[j])^d``, fitted per block. Degree 1 is a
    power law (the block's level and its slope), degree 2 adds its curvature. Allocating with
    these costs shows what a scorer that knew ``degree + 1`` numbers of every block's curve
    exactly could win, i.e. how much of the oracle's gain lies in the smooth part of the curves
    and how much in their block-by-block detail.

    Args:
        costs: ``(N, K, J)`` measured costs (>= 0).
        lengths: ``(J,)`` candidate token lengths (> 0), increasing.
        degree: Polynomial degree, 0 <= degree < J (degree 0: each block's level, flat).

    Returns:
        ``(N, K, J)`` costs in the same units.

    Raises:
        ValueError: A bad table (as :func:`level_and_shape`), lengths that do not match its
            last axis or are not positive, or a degree outside ``[0, J)``.
    """
    logs = _log_costs(costs)
    lengths = np.asarray(lengths, dtype=np.float64)
    count = logs.shape[2]
    if lengths.shape != (count,) or (lengths <= 0).any():
        raise ValueError(f"lengths must be {count} positive values, got {lengths.tolist()}")
    if not 0 <= degree < count:
        raise ValueError(f"degree must be in [0, {count}), got {degree}")
    basis = np.vander(np.log(lengths), degree + 1)  # (J, degree + 1)
    rows = logs.reshape(-1, count).T  # (J, N * K)
    coefficients = np.linalg.lstsq(basis, rows, rcond=None)[0]
    return np.exp((basis @ coefficients).T.reshape(logs.shape))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two equal-size arrays (scipy; average ranks for ties).

    Returns:
        The correlation in [-1, 1]; NaN with fewer than 2 values or a constant array (equal
        up to float rounding: spread <= 1e-12 of the largest magnitude).
    """
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()

    def constant(x: np.ndarray) -> bool:
        return bool(np.ptp(x) <= 1e-12 * max(1.0, float(np.abs(x).max())))

    if a.size < 2 or constant(a) or constant(b):
        return float("nan")
    return float(spearmanr(a, b).statistic)


def curve_agreement(measured: np.ndarray, predicted: np.ndarray) -> Mapping[str, object]:
    """How well predicted cost curves agree with measured ones, over all blocks.

    Args:
        measured: ``(N, K, J)`` measured block costs (>= 0).
        predicted: ``(N, K, J)`` predicted costs in the same units (>= 0).

    Returns:
        ``per_candidate``: list of J Spearman correlations of the costs at each candidate;
        ``level``: Spearman of the blocks' levels (mean log cost); ``level_within_clip``:
        Spearman of each block's level minus its clip's mean level (what a ``per_clip``
        allocation, which only moves tokens inside a clip, can use); ``steps``: list of J - 1
        Spearman correlations of the log-cost step ``log c[j] - log c[j + 1]`` between
        consecutive candidates (what an allocator reads; 0 = no better than the mean shape).

    Raises:
        ValueError: Shapes differ, or invalid costs (:func:`level_and_shape`).
    """
    if np.shape(measured) != np.shape(predicted):
        raise ValueError(f"shapes differ: {np.shape(measured)} vs {np.shape(predicted)}")
    true_logs, pred_logs = _log_costs(measured), _log_costs(predicted)
    num_candidates = true_logs.shape[2]
    true_levels, pred_levels = true_logs.mean(axis=2), pred_logs.mean(axis=2)
    true_steps = true_logs[..., :-1] - true_logs[..., 1:]
    pred_steps = pred_logs[..., :-1] - pred_logs[..., 1:]
    return {
        "per_candidate": [
            spearman(measured[..., j], predicted[..., j]) for j in range(num_candidates)
        ],
        "level": spearman(true_levels, pred_levels),
        "level_within_clip": spearman(
            true_levels - true_levels.mean(axis=1, keepdims=True),
            pred_levels - pred_levels.mean(axis=1, keepdims=True),
        ),
        "steps": [
            spearman(true_steps[..., j], pred_steps[..., j]) for j in range(num_candidates - 1)
        ],
    }
