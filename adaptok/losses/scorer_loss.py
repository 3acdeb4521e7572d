"""The scorer's regression loss: costs per candidate length, optionally their differences."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["scorer_loss"]


def scorer_loss(predictions: Tensor, labels: Tensor, slope_weight: float = 0.0) -> Tensor:
    """MSE between predicted and measured costs, plus an MSE on their candidate-to-candidate steps.

    The paper's scorer regresses the normalised cost of a block at each candidate length
    (docs/METHOD.md section 3): ``mean((p - y)^2)``. An allocator reads only how the cost of
    a block changes from one candidate to the next (the marginal gain of more tokens), and a
    regression that gets each block's level right can still get those steps wrong, so
    ``slope_weight > 0`` adds ``slope_weight * mean((dp - dy)^2)`` with ``d`` the difference
    between consecutive candidates (a deviation from the paper, docs/DEVIATIONS.md).

    Args:
        predictions: ``(..., J)`` predicted normalised costs, candidates in increasing length.
        labels: ``(..., J)`` measured normalised costs, same shape.
        slope_weight: Weight of the step term, >= 0 (0: the paper's loss).

    Returns:
        Scalar loss.

    Raises:
        ValueError: Shapes differ, or ``slope_weight`` is negative.
    """
    if predictions.shape != labels.shape:
        raise ValueError(
            f"predictions {tuple(predictions.shape)} and labels {tuple(labels.shape)} differ"
        )
    if slope_weight < 0:
        raise ValueError(f"slope_weight must be >= 0, got {slope_weight}")
    loss = F.mse_loss(predictions, labels)
    if slope_weight > 0 and predictions.shape[-1] > 1:
        loss = loss + slope_weight * F.mse_loss(predictions.diff(dim=-1), labels.diff(dim=-1))
    return loss
