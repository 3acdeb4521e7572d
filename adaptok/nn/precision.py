"""Compute precision of the tokenizer and scorer: follow the caller, float32, or bf16 autocast.

- ``"auto"`` (default): the networks run in whatever autocast state surrounds the call, so
  they follow the trainer (Lightning's ``16-mixed`` / ``bf16-mixed`` enter autocast around
  every step; ``32-true`` does not). This is what the official code does: its trainer wraps
  the whole forward in ``torch.cuda.amp.autocast``.
- ``"fp32"``: autocast is switched OFF inside the encoder and decoder, whatever the trainer
  says (e.g. a float32 evaluation inside a mixed-precision run).
- ``"bf16"``: bfloat16 autocast inside the encoder and decoder, whatever the trainer says
  (CPU inference: on CPUs with AVX-512 BF16 or AMX the GEMMs run about 2x faster than in
  float32; the measured quality cost is in `benchmarks/tokenizer.py --psnr`).

Under autocast the matrix products (linear layers, convolutions, attention) run in the
autocast dtype with float32 accumulation; the quantizer stays in float32 in every mode.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from typing import Literal

import torch

__all__ = ["PRECISIONS", "Precision", "autocast_for", "check_precision"]

Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")


def check_precision(precision: str) -> None:
    """Raises ValueError unless `precision` is "auto", "fp32" or "bf16"."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def autocast_for(device: torch.device, precision: Precision) -> AbstractContextManager:
    """The autocast context a network enters for `precision`.

    Args:
        device: Device of the inputs (its type selects the autocast backend).
        precision: "auto" (a context that changes nothing: the surrounding autocast state,
            e.g. the trainer's, applies), "fp32" (autocast disabled) or "bf16" (bfloat16
            autocast).

    Returns:
        A context manager.

    Raises:
        ValueError: On another precision.
    """
    check_precision(precision)
    if precision == "auto":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
