"""Pixel reconstruction loss."""

from __future__ import annotations

from torch import Tensor


def l1_loss(recon: Tensor, real: Tensor) -> Tensor:
    """Mean absolute error.

    Args:
        recon: `(B, C, T, H, W)` reconstruction in [0, 1].
        real: `(B, C, T, H, W)` target in [0, 1].

    Returns:
        Scalar mean of `|recon - real|` over every element.
    """
    return (recon - real).abs().mean()
