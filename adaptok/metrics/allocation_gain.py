"""What adaptive allocation buys: captured gain, regret, token savings, and whether it follows content.

Figures of merit for a rate-distortion table of ``scorer`` (IPAL on predicted costs),
``uniform`` (every block the same length) and ``oracle`` (IPAL on measured costs) at the same
budget. The paper reports the underlying curves (docs/METHOD.md section 6, ablation at 512
tokens); the ratios below are ours, so that one number says how much of the attainable gain a
scorer captures and how many tokens it saves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

__all__ = [
    "MIN_GAIN",
    "captured_gain",
    "captured_gain_interval",
    "optimised_metric",
    "uniform_tokens_to_match",
    "within_clip_spearman",
]

MIN_GAIN = {"psnr": 0.05, "psnr_pooled": 0.05, "ssim": 0.001, "lpips": 0.001}
"""Oracle gains below these (in each metric's units: dB, SSIM, LPIPS) make a captured share noise."""


def optimised_metric(cost: str, mode: str) -> tuple[str, bool]:
    """The reported quality metric that an allocation with this block cost and mode maximises.

    IPAL minimises the sum of block costs over what shares one budget: a clip in ``per_clip``
    mode, the mini-batch in the other modes (``batch``, ``causal_table``, ``streaming``). With
    ``mse`` costs (every block has the same number of values), the minimised sum is the
    clip's MSE, i.e. its PSNR is maximised (``psnr``: the mean over clips of per-clip PSNR
    from each clip's MSE), or the batch's summed squared error, i.e. the PSNR of the error
    pooled over every clip (``psnr_pooled``): a batch allocation may lower some clips' PSNR
    to raise the pooled figure more, so judging it by the mean of per-clip PSNRs misjudges it.
    Other costs are judged by their own metric (``psnr`` costs, the negated block PSNR, by
    the per-clip PSNR, which the sum of block PSNRs approximates).

    Args:
        cost: The oracle's and the scorer labels' block cost: ``mse``, ``psnr``, ``ssim`` or
            ``lpips`` (``adaptok.losses.block_quality.QualityMetric``).
        mode: The allocation mode (``adaptok.budget_planner.PLANNER_MODES``).

    Returns:
        ``(metric, higher_is_better)``: a key of ``VideoQualityMeter.compute()``.

    Raises:
        ValueError: An unknown cost.
    """
    if cost == "mse":
        return ("psnr" if mode == "per_clip" else "psnr_pooled"), True
    if cost in ("psnr", "ssim"):
        return cost, True
    if cost == "lpips":
        return "lpips", False
    raise ValueError(f"unknown block cost {cost!r}; choose from mse, psnr, ssim, lpips")


def captured_gain(
    scorer: float, uniform: float, oracle: float, min_gain: float = 0.05
) -> tuple[float, float]:
    """Share of the oracle's gain over uniform that the scorer captures, and its regret.

    Args:
        scorer: Quality of scorer-driven allocation (higher is better, e.g. PSNR in dB).
        uniform: Quality of uniform allocation at the same budget.
        oracle: Quality of oracle allocation at the same budget.
        min_gain: Below this oracle gain (quality units, default 0.05 dB) the ratio is noise
            and NaN is returned.

    Returns:
        ``(captured, regret)``: ``captured = (scorer - uniform) / (oracle - uniform)`` (1 = all of
        the oracle's gain, 0 = none, negative = worse than uniform; NaN when the oracle gains
        less than ``min_gain``), ``regret = oracle - scorer`` in the quality's units.
    """
    gain = oracle - uniform
    captured = (scorer - uniform) / gain if gain >= min_gain else math.nan
    return captured, oracle - scorer


def captured_gain_interval(
    scorer: Sequence[float] | np.ndarray,
    uniform: Sequence[float] | np.ndarray,
    oracle: Sequence[float] | np.ndarray,
    *,
    pooled_psnr: bool = False,
    min_gain: float = 0.05,
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap interval of :func:`captured_gain` over the clips (paired percentile bootstrap).

    Every resample draws the clips with replacement, the same clips for the three allocations,
    and recomputes each allocation's quality over them: the mean of the per-clip values, or,
    with ``pooled_psnr``, the PSNR of their mean MSE (the PSNR pooled over clips of one size,
    ``VideoQualityMeter``'s ``psnr_pooled``). The allocations themselves are kept, so the
    interval describes how much the share depends on which clips were evaluated, not the
    spread between solves of other batch compositions (Efron & Tibshirani, An Introduction to
    the Bootstrap, 1993, ch. 13: percentile intervals). The clips are sorted by their values
    first, so the interval does not depend on the order they come in (e.g. gathered from
    several processes).

    Args:
        scorer: (N,) per-clip quality of the scorer's allocation, higher is better (e.g. PSNR
            in dB from each clip's MSE at data range 1; negate LPIPS first).
        uniform: (N,) the same clips under uniform allocation.
        oracle: (N,) the same clips under the oracle's allocation.
        pooled_psnr: The values are per-clip PSNRs (dB) and the quality is their pooled PSNR.
        min_gain: Resamples where the oracle gains less than this give no share (as
            :func:`captured_gain`).
        level: Coverage of the interval, in (0, 1).
        resamples: Number of bootstrap resamples.
        seed: Seed of the resampling (the interval is reproducible).

    Returns:
        ``(low, high)``: the ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles of the
        resampled shares; NaN for both when there are no clips or when more than half of the
        resamples have an oracle gain under ``min_gain``.

    Raises:
        ValueError: The three arrays differ in shape or are not 1-D, or ``level`` is outside
            (0, 1), or ``resamples`` < 1.
    """
    values = [np.asarray(v, dtype=np.float64) for v in (scorer, uniform, oracle)]
    if any(v.ndim != 1 or v.shape != values[0].shape for v in values):
        raise ValueError(
            f"scorer, uniform and oracle must be 1-D per-clip arrays of one length, got "
            f"shapes {[v.shape for v in values]}"
        )
    if not 0 < level < 1 or resamples < 1:
        raise ValueError(f"need 0 < level < 1 and resamples >= 1, got {level}, {resamples}")
    count = values[0].shape[0]
    if count == 0:
        return math.nan, math.nan
    # one order whatever order the processes gathered the clips in, so the same interval
    order = np.lexsort(values)  # by the oracle's values, ties by uniform's, then scorer's
    values = [v[order] for v in values]
    draws = np.random.default_rng(seed).integers(0, count, size=(resamples, count))
    if pooled_psnr:
        quality = [10 * np.log10(1 / (10 ** (-v / 10))[draws].mean(axis=1)) for v in values]
    else:
        quality = [v[draws].mean(axis=1) for v in values]
    chosen, flat, exact = quality
    gain = exact - flat
    usable = gain >= min_gain
    if usable.sum() * 2 < resamples:
        return math.nan, math.nan
    shares = (chosen[usable] - flat[usable]) / gain[usable]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(shares, [tail, 100 - tail])
    return float(low), float(high)


def uniform_tokens_to_match(
    quality: float, tokens: Sequence[float], uniform_quality: Sequence[float]
) -> float:
    """Tokens per block uniform allocation needs to reach ``quality``, read off its curve.

    Linear interpolation on the uniform rate-distortion curve (higher quality is better). The
    curve is made monotone first (running maximum over increasing tokens), so a noisy dip
    cannot create a second crossing.

    Args:
        quality: The quality to match (e.g. the scorer's PSNR at 25 % of the tokens).
        tokens: Uniform operating points, mean tokens per block.
        uniform_quality: Uniform quality at each point.

    Returns:
        Tokens per block; ``tokens[0]`` or less when the first point already reaches
        ``quality`` (returned as ``tokens[0]``); ``inf`` when even the last point falls short.

    Raises:
        ValueError: Fewer than one point, or mismatched lengths.
    """
    if len(tokens) != len(uniform_quality) or not tokens:
        raise ValueError("tokens and uniform_quality must be non-empty and of equal length")
    order = np.argsort(np.asarray(tokens, dtype=float), kind="stable")
    x = np.asarray(tokens, dtype=float)[order]
    y = np.maximum.accumulate(np.asarray(uniform_quality, dtype=float)[order])
    if quality <= y[0]:
        return float(x[0])
    if quality > y[-1]:
        return math.inf
    upper = int(np.argmax(y >= quality))
    x0, x1, y0, y1 = x[upper - 1], x[upper], y[upper - 1], y[upper]
    return float(x0 + (quality - y0) / (y1 - y0) * (x1 - x0))


def within_clip_spearman(complexity: np.ndarray, tokens: np.ndarray) -> float:
    """Rank correlation of block complexity and tokens *within* clips, pooled over clips.

    Per-clip allocation gives every clip the same budget, so it can only move tokens between
    the blocks of one clip; a Spearman pooled over all blocks also counts the differences
    between clips, which it cannot follow (even exact costs score low there). This measures what
    it controls: each clip's blocks are ranked within the clip (average ranks for ties), the
    ranks are centred on the clip's mean, and the Pearson correlation of the centred ranks is
    taken over all blocks of all clips (the within-subject correlation of Bland & Altman,
    BMJ 1995, on ranks). A clip whose blocks all get the same tokens adds nothing to the
    covariance but its complexity spread to the variance, so not differentiating counts
    against an allocator.

    Args:
        complexity: ``(N, K)`` content complexity of each clip's blocks (any units).
        tokens: ``(N, K)`` tokens each block was given. A clip with a NaN in either array is
            left out.

    Returns:
        The correlation in [-1, 1]; NaN when fewer than 2 blocks per clip, no clip with a known
        complexity, or no spread within clips in either array.

    Raises:
        ValueError: If the shapes differ or are not 2-D.
    """
    x = np.asarray(complexity, dtype=np.float64)
    y = np.asarray(tokens, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(
            f"complexity and tokens must share an (N, K) shape; got {x.shape}, {y.shape}"
        )
    known = ~np.isnan(x).any(1) & ~np.isnan(y).any(1)
    x, y = x[known], y[known]
    if x.shape[0] == 0 or x.shape[1] < 2:
        return math.nan
    rx, ry = (rankdata(a, axis=1) for a in (x, y))
    rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    spread = math.sqrt(float((rx**2).sum()) * float((ry**2).sum()))
    return float((rx * ry).sum()) / spread if spread > 0 else math.nan
