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

__all__ = ["captured_gain", "uniform_tokens_to_match"]


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
