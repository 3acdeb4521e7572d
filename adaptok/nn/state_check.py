"""Compare a network's expected state with stored weights (names and shapes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from torch import Tensor

__all__ = ["MismatchKind", "first_weight_mismatch"]

MismatchKind = Literal["unexpected", "shape", "missing"]


def first_weight_mismatch(
    expected: Mapping[str, Tensor], stored: Mapping[str, Tensor]
) -> tuple[MismatchKind, str] | None:
    """The first tensor on which stored weights disagree with a network's state dict.

    Args:
        expected: The network's `state_dict()` (any device, `meta` included).
        stored: The weights to load, same key convention.

    Returns:
        None when every name and shape agrees; else `(kind, key)`: "unexpected" (stored,
        not in the network), "shape" (both, shapes differ) or "missing" (network only),
        checked in that order, stored keys in their order.
    """
    for key, tensor in stored.items():
        if key not in expected:
            return "unexpected", key
        if tuple(expected[key].shape) != tuple(tensor.shape):
            return "shape", key
    missing = next((key for key in expected if key not in stored), None)
    return None if missing is None else ("missing", missing)
