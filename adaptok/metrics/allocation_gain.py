"""What adaptive allocation buys: captured gain, regret and token savings.

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

__all__ = ["MIN_GAIN", "captured_gain", "optimised_metric", "uniform_tokens_to_match"]

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
