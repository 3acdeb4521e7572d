"""Conversion and validation of the allocator's array inputs (numpy or torch)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_costs", "as_lengths", "to_numpy"]


def to_numpy(array: Any) -> np.ndarray:
    """A numpy copy-free view of a numpy array, torch tensor or nested sequence."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def as_costs(costs: Any, num_dims: int, num_lengths: int | None = None) -> np.ndarray:
    """Validated float64 costs whose last axis indexes the candidate lengths.

    Args:
        costs: array-like with ``num_dims`` axes, e.g. (B, K, J) or (B, J).
        num_dims: expected number of axes.
        num_lengths: expected size J of the last axis, if known.

    Raises:
        ValueError: wrong shape, empty, or non-finite values.
    """
    array = np.asarray(to_numpy(costs), dtype=np.float64)
    if array.ndim != num_dims:
        raise ValueError(f"costs must have {num_dims} axes, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"costs must not be empty, got shape {array.shape}")
    if num_lengths is not None and array.shape[-1] != num_lengths:
        raise ValueError(
            f"costs' last axis has {array.shape[-1]} entries, lengths has {num_lengths}"
        )
    if not np.isfinite(array).all():
        raise ValueError("costs must be finite (no NaN or inf)")
    return array


def as_lengths(lengths: Any) -> np.ndarray:
    """Validated (J,) int64 candidate lengths: strictly increasing positive integers.

    Raises:
        ValueError: otherwise.
    """
    array = to_numpy(lengths)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"lengths must be a non-empty 1-D array, got shape {array.shape}")
    as_int = np.asarray(np.rint(array), dtype=np.int64)
    if not np.array_equal(as_int, array):
        raise ValueError(f"lengths must be integers, got {array.tolist()}")
    if as_int[0] < 1 or np.any(np.diff(as_int) <= 0):
        raise ValueError(
            f"lengths must be strictly increasing positive integers, got {as_int.tolist()}"
        )
    return as_int
