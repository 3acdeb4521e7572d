"""Learning-rate schedules shared by every stage (pure PyTorch)."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["WarmupCosineLR", "warmup_cosine_factor"]


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Multiplier of the base learning rate at ``step``.

    Linear warm-up from ``1 / warmup_steps`` to 1 over ``warmup_steps``, then a cosine decay
    to ``min_ratio`` at ``total_steps`` (held there afterwards).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosineLR(LambdaLR):
    """Linear warm-up then cosine decay, stepped once per optimizer step.

    Args:
        optimizer: The wrapped optimizer.
        warmup_steps: Steps of linear warm-up.
        total_steps: Step at which the cosine reaches ``min_lr_ratio`` of the base rate.
        min_lr_ratio: Final learning rate as a fraction of the base rate
            (the paper: 1e-6 / 1e-4 = 0.01).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int = 0,
        total_steps: int = 100_000,
        min_lr_ratio: float = 0.01,
    ) -> None:
        if total_steps <= 0 or warmup_steps < 0:
            raise ValueError(
                f"need total_steps > 0 and warmup_steps >= 0, got {total_steps}, {warmup_steps}"
            )
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr_ratio = min_lr_ratio
        super().__init__(optimizer, self._factor)

    def _factor(self, step: int) -> float:
        return warmup_cosine_factor(step, self.warmup_steps, self.total_steps, self.min_lr_ratio)
