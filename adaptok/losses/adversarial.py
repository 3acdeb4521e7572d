"""GAN losses: non-saturating generator loss, noisy-label discriminator loss, LeCam term.

Two variants of the discriminator's labels and of LeCam exist; the official AdapTok code
(VisionXLab/AdapTok ``models/loss.py``: ``ns_d_loss_single_side_smooth`` (despite its name,
both sides are smoothed), ``lecam_reg``, ``update_lecam_ema``) uses ``labels="two_sided"``
and ``LeCamRegularizer(on="batch_mean")``; the suite's earlier choices (one-sided uniform
labels, LeCam per sample) are the defaults, kept for the demo.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LabelSmoothing",
    "LeCamOn",
    "LeCamRegularizer",
    "discriminator_adversarial_loss",
    "generator_adversarial_loss",
]

LabelSmoothing = Literal["one_sided", "two_sided"]
LeCamOn = Literal["per_sample", "batch_mean"]


def generator_adversarial_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss `-log sigmoid(D(fake))`.

    Args:
        fake_logits: `(B,)` discriminator logits of reconstructions.

    Returns:
        Scalar mean loss.
    """
    return F.softplus(-fake_logits).mean()


def discriminator_adversarial_loss(
    real_logits: Tensor,
    fake_logits: Tensor,
    label_noise: float = 0.0,
    labels: LabelSmoothing = "one_sided",
) -> Tensor:
    """Binary cross-entropy with noisy labels.

    - ``"one_sided"``: real targets uniform in `[1 - label_noise, 1]`, fake targets 0;
      returns `(BCE(real) + BCE(fake)) / 2`.
    - ``"two_sided"`` (official): real targets `1 - |n| * label_noise`, at least
      `1 - 2 * label_noise`; fake targets `|n| * label_noise`, at most `2 * label_noise`
      (`n ~ N(0, 1)` per clip; official `label_noise` 0.15, clamps 0.7 / 0.3); returns
      `BCE(real) + BCE(fake)` (the official sum).

    Args:
        real_logits: `(B,)` logits of real clips.
        fake_logits: `(B,)` logits of reconstructions.
        label_noise: Width (one-sided) or standard deviation (two-sided) of the label noise.
        labels: ``"one_sided"`` or ``"two_sided"``.

    Returns:
        Scalar loss.

    Raises:
        ValueError: Unknown ``labels``.
    """
    if labels == "one_sided":
        real_targets = 1.0 - label_noise * torch.rand_like(real_logits)
        real_loss = F.binary_cross_entropy_with_logits(real_logits, real_targets)
        fake_loss = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        return 0.5 * (real_loss + fake_loss)
    if labels == "two_sided":
        limit = 2.0 * label_noise
        real_targets = 1.0 - (torch.randn_like(real_logits).abs() * label_noise).clamp_max(limit)
        fake_targets = (torch.randn_like(fake_logits).abs() * label_noise).clamp_max(limit)
        real_loss = F.binary_cross_entropy_with_logits(real_logits, real_targets)
        fake_loss = F.binary_cross_entropy_with_logits(fake_logits, fake_targets)
        return real_loss + fake_loss
    raise ValueError(f"labels must be 'one_sided' or 'two_sided', got {labels!r}")


class LeCamRegularizer(nn.Module):
    """LeCam regulariser (Tseng et al. 2021, arXiv 2104.03310) with EMAs of the mean logits.

    - ``on="per_sample"``: `R = mean_i(relu(D(real_i) - ema_fake)^2) + mean_i(relu(ema_real -
      D(fake_i))^2)`; the averages are updated before `R` is computed.
    - ``on="batch_mean"`` (official): `R = relu(mean(D(real)) - ema_fake)^2 + relu(ema_real -
      mean(D(fake)))^2`, computed with the averages of the previous steps, which are then
      updated. (The official code also averages the batch means over GPUs first; here each
      process uses its own batch.)

    The averages are buffers (saved in checkpoints), updated in training mode only.

    Args:
        decay: EMA decay of the mean real and fake logits.
        on: ``"per_sample"`` or ``"batch_mean"``.

    Raises:
        ValueError: Unknown ``on``.
    """

    def __init__(self, decay: float = 0.999, on: LeCamOn = "per_sample") -> None:
        super().__init__()
        if on not in ("per_sample", "batch_mean"):
            raise ValueError(f"on must be 'per_sample' or 'batch_mean', got {on!r}")
        self.decay = decay
        self.on = on
        self.register_buffer("ema_real", torch.zeros(()))
        self.register_buffer("ema_fake", torch.zeros(()))

    def _update(self, real_logits: Tensor, fake_logits: Tensor) -> None:
        if self.training:
            with torch.no_grad():
                self.ema_real.lerp_(real_logits.detach().float().mean(), 1 - self.decay)
                self.ema_fake.lerp_(fake_logits.detach().float().mean(), 1 - self.decay)

    def forward(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        """Computes R.

        Args:
            real_logits: `(B,)` logits of real clips.
            fake_logits: `(B,)` logits of reconstructions.

        Returns:
            Scalar regulariser.
        """
        if self.on == "batch_mean":
            real, fake = real_logits.float().mean(), fake_logits.float().mean()
            value = F.relu(real - self.ema_fake).pow(2) + F.relu(self.ema_real - fake).pow(2)
            self._update(real_logits, fake_logits)
            return value
        self._update(real_logits, fake_logits)
        return (
            F.relu(real_logits - self.ema_fake).pow(2).mean()
            + F.relu(self.ema_real - fake_logits).pow(2).mean()
        )
