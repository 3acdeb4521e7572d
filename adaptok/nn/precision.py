"""Compute precision of the tokenizer and scorer: float32, or bfloat16 autocast.

bfloat16 autocast runs the matrix products (linear layers, convolutions, attention) in
bfloat16 with float32 accumulation and keeps the residual stream, normalisations and the
quantizer in float32. On CPUs with AVX-512 BF16 or AMX the GEMMs run about 2x faster than
in float32; the measured quality cost is in `benchmarks/tokenizer.py --psnr`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Literal

import torch

__all__ = ["Precision", "autocast_for", "check_precision"]

Precision = Literal["fp32", "bf16"]


def check_precision(precision: str) -> None:
    """Raises ValueError unless `precision` is "fp32" or "bf16"."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")


def autocast_for(device: torch.device, precision: Precision) -> AbstractContextManager:
    """bfloat16 autocast on `device` for "bf16", a context that changes nothing for "fp32".

    Args:
        device: Device of the inputs (its type selects the autocast backend).
        precision: "fp32" or "bf16".

    Returns:
        A context manager.

    Raises:
        ValueError: On another precision.
    """
    check_precision(precision)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
