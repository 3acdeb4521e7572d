"""Learning-rate schedules shared by every stage (pure PyTorch)."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["WarmupCosineLR", "fill_total_steps", "warmup_cosine_factor"]


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
            ``None``: set by the LightningModule that builds the schedule to the trainer's
            estimated optimizer steps (``Trainer.estimated_stepping_batches``), so the YAML
            states the run's length once (``trainer.max_steps`` / ``max_epochs``).
        min_lr_ratio: Final learning rate as a fraction of the base rate
            (the paper: 1e-6 / 1e-4 = 0.01).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int = 0,
        total_steps: int | None = None,
        min_lr_ratio: float = 0.01,
    ) -> None:
        if (total_steps is not None and total_steps <= 0) or warmup_steps < 0:
            raise ValueError(
                f"need total_steps > 0 and warmup_steps >= 0, got {total_steps}, {warmup_steps}"
            )
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr_ratio = min_lr_ratio
        super().__init__(optimizer, self._factor)

    def _factor(self, step: int) -> float:
        if self.total_steps is None:
            if step > 0:
                raise RuntimeError(
                    "WarmupCosineLR.total_steps is unset: give it in the YAML or let the "
                    "LightningModule fill it from the trainer (see fill_total_steps)"
                )
            return warmup_cosine_factor(0, self.warmup_steps, 1, self.min_lr_ratio)
        return warmup_cosine_factor(step, self.warmup_steps, self.total_steps, self.min_lr_ratio)


def fill_total_steps(scheduler: object, total_steps: float) -> None:
    """Give a schedule with ``total_steps=None`` its length (e.g. the trainer's estimate).

    Schedules that already know their length, or have none, are left alone.
    """
    if hasattr(scheduler, "total_steps") and scheduler.total_steps is None:
        if not math.isfinite(total_steps) or total_steps < 1:
            raise ValueError(
                f"cannot size the schedule: the trainer estimates {total_steps} steps; set "
                "trainer.max_steps or the schedule's total_steps"
            )
        scheduler.total_steps = int(total_steps)
