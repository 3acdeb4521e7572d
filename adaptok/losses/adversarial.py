"""GAN losses: non-saturating generator loss, noisy-label discriminator loss, LeCam term."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LeCamRegularizer", "discriminator_adversarial_loss", "generator_adversarial_loss"]


def generator_adversarial_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss `-log sigmoid(D(fake))`.

    Args:
        fake_logits: `(B,)` discriminator logits of reconstructions.

    Returns:
        Scalar mean loss.
    """
    return F.softplus(-fake_logits).mean()


def discriminator_adversarial_loss(
    real_logits: Tensor, fake_logits: Tensor, label_noise: float = 0.0
) -> Tensor:
    """Binary cross-entropy with one-sided noisy labels.

    Real targets are drawn uniformly from `[1 - label_noise, 1]`; fake targets are 0.

    Args:
        real_logits: `(B,)` logits of real clips.
        fake_logits: `(B,)` logits of reconstructions.
        label_noise: Width of the real-label noise, in [0, 1).

    Returns:
        Scalar `(BCE(real) + BCE(fake)) / 2`.
    """
    real_targets = 1.0 - label_noise * torch.rand_like(real_logits)
    real_loss = F.binary_cross_entropy_with_logits(real_logits, real_targets)
    fake_loss = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return 0.5 * (real_loss + fake_loss)


class LeCamRegularizer(nn.Module):
    """LeCam regulariser (Tseng et al. 2021) with exponential moving averages of the logits.

    `R = mean(relu(D(real) - ema_fake)^2) + mean(relu(ema_real - D(fake))^2)`. The averages
    are buffers (saved in checkpoints) and are updated, in training mode, before `R` is
    computed.

    Args:
        decay: EMA decay of the mean real and fake logits.
    """

    def __init__(self, decay: float = 0.999) -> None:
        super().__init__()
        self.decay = decay
        self.register_buffer("ema_real", torch.zeros(()))
        self.register_buffer("ema_fake", torch.zeros(()))

    def forward(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        """Computes R.

        Args:
            real_logits: `(B,)` logits of real clips.
            fake_logits: `(B,)` logits of reconstructions.

        Returns:
            Scalar regulariser.
        """
        if self.training:
            with torch.no_grad():
                self.ema_real.lerp_(real_logits.float().mean(), 1 - self.decay)
                self.ema_fake.lerp_(fake_logits.float().mean(), 1 - self.decay)
        return (
            F.relu(real_logits - self.ema_fake).pow(2).mean()
            + F.relu(self.ema_real - fake_logits).pow(2).mean()
        )
