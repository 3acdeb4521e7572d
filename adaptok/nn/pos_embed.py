"""Fixed sin-cos position embeddings: 1D (latent token indices) and 3D (video patches)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sincos_1d", "sincos_3d"]


def sincos_1d(positions: Tensor, dim: int, base: float = 10000.0) -> Tensor:
    """Sin-cos embedding of (possibly non-contiguous) integer positions.

    Args:
        positions: Positions of any shape `S`.
        dim: Embedding width; must be even.
        base: Wavelength base.

    Returns:
        float32 `(*S, dim)`: first half sines, second half cosines.
    """
    if dim % 2 != 0:
        raise ValueError(f"sin-cos embedding width must be even, got {dim}")
    half = dim // 2
    frequencies = base ** (-torch.arange(half, dtype=torch.float64, device=positions.device) / half)
    angles = positions.to(torch.float64).unsqueeze(-1) * frequencies
    return torch.cat([angles.sin(), angles.cos()], dim=-1).float()


def sincos_3d(grid: tuple[int, int, int], dim: int) -> Tensor:
    """Sin-cos embedding of a `(t, h, w)` patch grid, flattened in raster order (t, h, w).

    Height and width each get `2 * (dim // 6)` channels and time the rest, so any even
    `dim` works (for `dim = 768`: 256 channels per axis).

    Args:
        grid: Number of patches along time, height and width.
        dim: Embedding width; must be even.

    Returns:
        float32 `(t * h * w, dim)`.
    """
    if dim % 2 != 0:
        raise ValueError(f"sin-cos embedding width must be even, got {dim}")
    spatial_dim = 2 * (dim // 6)
    time_dim = dim - 2 * spatial_dim
    t, h, w = (torch.arange(n) for n in grid)
    tt, hh, ww = torch.meshgrid(t, h, w, indexing="ij")
    return torch.cat(
        [
            sincos_1d(tt.flatten(), time_dim),
            sincos_1d(hh.flatten(), spatial_dim),
            sincos_1d(ww.flatten(), spatial_dim),
        ],
        dim=-1,
    )
