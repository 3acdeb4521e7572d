"""The AdapTok tokenizer objective; it owns the discriminator (and the frozen LPIPS network).

Generator: `l1_weight * L1 + l2_weight * MSE + perceptual_weight * LPIPS + gan_weight * GAN + vq_weight * VQ
+ prior_weight * prior`. Discriminator: noisy-label BCE + `lecam_weight * LeCam`, every
`disc_every` steps from `disc_start` on. Paper weights: 1.0, 1.0, 0.3, 0.1, 0.06.

The official GAN settings (VisionXLab/AdapTok ``cfgs/adaptok.yaml``, ``models/loss.py``):
`disc_start` 0, `disc_every` 5, two-sided noisy labels (``label_smoothing="two_sided"``,
``label_noise=0.15``), LeCam on the batch-mean logits (``lecam_on="batch_mean"``) with
``lecam_weight: 0.001`` applied twice (``lecam_reg`` is multiplied by it and the sum again),
i.e. an effective ``lecam_weight=1e-6`` here. `experiments/ucf101/tokenizer.yaml` sets them.

The discriminator is given as a factory (:data:`adaptok.nn.DiscriminatorFactory`) holding its
own settings; its clip geometry is the tokenizer's, filled in by
:meth:`TokenizerLoss.build_discriminator` (``TokenizerModule`` calls it), so a YAML never
restates it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaptok.losses.adversarial import (
    LabelSmoothing,
    LeCamOn,
    LeCamRegularizer,
    discriminator_adversarial_loss,
    generator_adversarial_loss,
)
from adaptok.nn.discriminator import DISCRIMINATOR_GEOMETRY, DiscriminatorFactory
from adaptok.nn.tokenizer import TokenizerOutput

__all__ = ["NonFiniteLossError", "TokenizerLoss"]


class NonFiniteLossError(FloatingPointError):
    """A loss term is NaN or infinite.

    Attributes:
        step: Training step at which it happened.
        term: Name of the first non-finite term.
    """

    def __init__(self, step: int, term: str, value: float) -> None:
        super().__init__(f"non-finite loss at step {step}: term {term!r} = {value}")
        self.step = step
        self.term = term


class TokenizerLoss(nn.Module):
    """Reconstruction + perceptual + GAN + VQ + prior losses, and the discriminator's loss.

    Args:
        perceptual: LPIPS-like module, `forward(x, y)` with `(N, 3, H, W)` in [-1, 1] ->
            `(N,)`; kept frozen and in eval mode. None disables the term.
        discriminator: Builds the video discriminator (`(B, C, T, H, W)` in [0, 1] -> logits
            `(B,)`) from the tokenizer's `(num_frames, image_size, in_channels, patch_size)`
            (:data:`adaptok.nn.DiscriminatorFactory`): in a YAML ``class_path:
            adaptok.nn.Discriminator`` with only its own ``init_args`` (width, depth, heads,
            mlp_ratio; the parser refuses the geometry there); in Python the class or
            ``functools.partial(Discriminator, width=..., ...)``. Built by
            :meth:`build_discriminator`; until then ``self.discriminator`` is None and the GAN
            terms refuse to run. None disables both GAN terms.
        l1_weight: Weight of the L1 pixel loss.
        l2_weight: Weight of a mean-squared-error pixel loss (not in the paper, which uses
            L1 only: 0). The demo uses it: on a few hundred CPU steps the L1 gradient pulls
            a small tokenizer to the blocks' mean colour and barely past it, while MSE (the
            loss PSNR measures) gets well past it (`docs/tokenizer_collapse.md`).
        perceptual_weight: Weight of LPIPS.
        gan_weight: Weight of the non-saturating generator loss.
        vq_weight: Weight of `TokenizerOutput.vq_loss` (0.25 * commit + codebook).
        prior_weight: Weight of `TokenizerOutput.prior_loss` (ignored when it is None).
        disc_start: First step with GAN terms (generator) and discriminator updates.
        disc_every: The discriminator is updated when `(step - disc_start) % disc_every == 0`.
        lecam_weight: Weight of the LeCam regulariser in the discriminator loss.
        lecam_decay: EMA decay of LeCam's logit averages.
        label_noise: Label noise: width of the real labels' range (one-sided) or standard
            deviation of both labels' noise (two-sided, official 0.15).
        label_smoothing: ``"one_sided"`` (real labels uniform in `[1 - label_noise, 1]`,
            fake 0, mean of the two BCEs) or ``"two_sided"`` (official ``ns_smooth``; see
            ``discriminator_adversarial_loss``).
        lecam_on: ``"per_sample"`` logits or ``"batch_mean"`` logits (official); see
            ``LeCamRegularizer``.
        perceptual_frames: LPIPS on this many randomly chosen frames per clip (the same
            frames for the whole batch); None = every frame.

    Attributes:
        discriminator: The built discriminator (state-dict keys ``discriminator.*``), or None
            (no GAN, or not built yet).
        discriminator_factory: The ``discriminator`` argument.

    Raises:
        ValueError: ``disc_every < 1``, ``perceptual_frames < 1``, or an unknown
            ``label_smoothing`` / ``lecam_on``.
        TypeError: ``discriminator`` is a built network, not a factory.
    """

    def __init__(
        self,
        perceptual: nn.Module | None = None,
        discriminator: DiscriminatorFactory | None = None,
        l1_weight: float = 1.0,
        l2_weight: float = 0.0,
        perceptual_weight: float = 1.0,
        gan_weight: float = 0.3,
        vq_weight: float = 0.1,
        prior_weight: float = 0.0,
        disc_start: int = 0,
        disc_every: int = 5,
        lecam_weight: float = 0.001,
        lecam_decay: float = 0.999,
        label_noise: float = 0.1,
        perceptual_frames: int | None = None,
        label_smoothing: LabelSmoothing = "one_sided",
        lecam_on: LeCamOn = "per_sample",
    ) -> None:
        super().__init__()
        if disc_every < 1:
            raise ValueError(f"disc_every must be >= 1, got {disc_every}")
        if perceptual_frames is not None and perceptual_frames < 1:
            raise ValueError(f"perceptual_frames must be >= 1 or None, got {perceptual_frames}")
        self.perceptual = perceptual
        if perceptual is not None:
            perceptual.requires_grad_(False).eval()
        if isinstance(discriminator, nn.Module):
            raise TypeError(
                "TokenizerLoss takes a discriminator factory called with the tokenizer's "
                f"({', '.join(DISCRIMINATOR_GEOMETRY)}), e.g. functools.partial("
                f"{type(discriminator).__name__}, width=..., depth=..., heads=...), not a "
                "built network"
            )
        self.discriminator_factory = discriminator
        self.discriminator: nn.Module | None = None
        if label_smoothing not in ("one_sided", "two_sided"):
            raise ValueError(
                f"label_smoothing must be 'one_sided' or 'two_sided', got {label_smoothing!r}"
            )
        self.lecam = LeCamRegularizer(lecam_decay, on=lecam_on)
        self.label_smoothing = label_smoothing
        self.l1_weight = l1_weight
        self.l2_weight = l2_weight
        self.perceptual_weight = perceptual_weight
        self.gan_weight = gan_weight
        self.vq_weight = vq_weight
        self.prior_weight = prior_weight
        self.disc_start = disc_start
        self.disc_every = disc_every
        self.lecam_weight = lecam_weight
        self.label_noise = label_noise
        self.perceptual_frames = perceptual_frames

    def build_discriminator(
        self, num_frames: int, image_size: int, in_channels: int, patch_size: Sequence[int]
    ) -> nn.Module | None:
        """Build the discriminator for the tokenizer's clips (once; again: checked).

        Args:
            num_frames: The tokenizer's frames per clip T.
            image_size: The tokenizer's frame height = width, in pixels.
            in_channels: The tokenizer's video channels C.
            patch_size: The tokenizer's `(pt, ph, pw)` patch, in frames and pixels.

        Returns:
            The discriminator (also ``self.discriminator``), or None without a factory.

        Raises:
            ValueError: The factory (a ``functools.partial``) states a geometry argument
                itself, or a discriminator built before has another geometry (a loss shared
                by two tokenizers); the message names both values.
        """
        geometry = dict(
            zip(
                DISCRIMINATOR_GEOMETRY,
                (num_frames, image_size, in_channels, tuple(patch_size)),
                strict=True,
            )
        )
        if self.discriminator is not None:
            _check_built_geometry(self.discriminator, geometry)
            return self.discriminator
        factory = self.discriminator_factory
        if factory is None:
            return None
        stated = factory.keywords if isinstance(factory, functools.partial) else {}
        for key, value in geometry.items():
            if key in stated:
                raise ValueError(
                    f"the discriminator factory states {key}={stated[key]!r} and the tokenizer "
                    f"has {key}={value!r}: the discriminator's "
                    f"{', '.join(DISCRIMINATOR_GEOMETRY)} are the tokenizer's, leave them out"
                )
        self.discriminator = factory(*geometry.values())
        return self.discriminator

    def _check_built(self) -> None:
        if self.discriminator is None and self.discriminator_factory is not None:
            raise RuntimeError(
                "TokenizerLoss: the discriminator is not built yet; call build_discriminator("
                f"{', '.join(DISCRIMINATOR_GEOMETRY)}) with the tokenizer's (TokenizerModule "
                "does)"
            )

    def train(self, mode: bool = True) -> TokenizerLoss:
        """Sets the training mode; the perceptual network always stays in eval mode."""
        super().train(mode)
        if self.perceptual is not None:
            self.perceptual.eval()
        return self

    def gan_active(self, step: int) -> bool:
        """Whether the generator's GAN term is on at `step`.

        Raises:
            RuntimeError: A discriminator factory was given but not built.
        """
        self._check_built()
        return self.discriminator is not None and self.gan_weight > 0 and step >= self.disc_start

    def discriminator_due(self, step: int) -> bool:
        """Whether the discriminator is updated at `step`.

        Raises:
            RuntimeError: A discriminator factory was given but not built.
        """
        self._check_built()
        return (
            self.discriminator is not None
            and step >= self.disc_start
            and (step - self.disc_start) % self.disc_every == 0
        )

    def perceptual_loss(self, recon: Tensor, real: Tensor) -> Tensor:
        """Mean LPIPS over (a random subset of) frames.

        Args:
            recon: `(B, C, T, H, W)` in [0, 1].
            real: `(B, C, T, H, W)` in [0, 1].

        Returns:
            Scalar mean LPIPS.
        """
        if self.perceptual is None:
            raise RuntimeError("TokenizerLoss has no perceptual network")
        frames = real.shape[2]
        if self.perceptual_frames is not None and self.perceptual_frames < frames:
            index = torch.randperm(frames, device=real.device)[: self.perceptual_frames]
            recon, real = recon[:, :, index], real[:, :, index]
        return self.perceptual(_to_frames(recon), _to_frames(real)).mean()

    def generator_loss(
        self, real: Tensor, output: TokenizerOutput, step: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The tokenizer's (generator's) objective.

        Args:
            real: `(B, C, T, H, W)` target clips in [0, 1].
            output: `AdapTokTokenizer.forward` output for `real`.
            step: Generator step (decides whether the GAN term is on).

        Returns:
            The weighted total (scalar, with grad) and the named unweighted terms, detached:
            `l1`, `l2`, `perceptual`, `gan`, `vq`, `commit`, `codebook`, `prior` (those that are on)
            and `total`.

        Raises:
            NonFiniteLossError: When a term or the total is NaN/inf.
        """
        terms: dict[str, Tensor] = {"l1": F.l1_loss(output.recon, real)}
        weighted = [self.l1_weight * terms["l1"]]
        if self.l2_weight > 0:
            terms["l2"] = F.mse_loss(output.recon, real)
            weighted.append(self.l2_weight * terms["l2"])
        if self.perceptual is not None and self.perceptual_weight > 0:
            terms["perceptual"] = self.perceptual_loss(output.recon, real)
            weighted.append(self.perceptual_weight * terms["perceptual"])
        if self.gan_active(step):
            with _frozen(self.discriminator):
                terms["gan"] = generator_adversarial_loss(self.discriminator(output.recon))
            weighted.append(self.gan_weight * terms["gan"])
        terms["vq"] = output.vq_loss
        weighted.append(self.vq_weight * output.vq_loss)
        if output.prior_loss is not None and self.prior_weight > 0:
            terms["prior"] = output.prior_loss
            weighted.append(self.prior_weight * output.prior_loss)
        terms["total"] = total = sum(weighted[1:], weighted[0])
        terms["commit"] = output.commit_loss
        terms["codebook"] = output.codebook_loss
        return total, _checked(terms, step)

    def discriminator_loss(
        self, real: Tensor, recon: Tensor, step: int
    ) -> tuple[Tensor | None, dict[str, Tensor]]:
        """The discriminator's objective, or None when it is not due at `step`.

        Args:
            real: `(B, C, T, H, W)` real clips in [0, 1].
            recon: `(B, C, T, H, W)` reconstructions in [0, 1] (detached here).
            step: Training step.

        Returns:
            The total (scalar, with grad to the discriminator only) or None, and the named
            detached terms `adversarial`, `lecam`, `logits_real`, `logits_fake`, `total`
            (empty when not due).

        Raises:
            NonFiniteLossError: When a term or the total is NaN/inf.
        """
        if not self.discriminator_due(step):
            return None, {}
        real_logits = self.discriminator(real)
        fake_logits = self.discriminator(recon.detach())
        terms = {
            "adversarial": discriminator_adversarial_loss(
                real_logits, fake_logits, self.label_noise, self.label_smoothing
            ),
            "lecam": self.lecam(real_logits, fake_logits),
        }
        terms["total"] = total = terms["adversarial"] + self.lecam_weight * terms["lecam"]
        terms["logits_real"] = real_logits.mean()
        terms["logits_fake"] = fake_logits.mean()
        return total, _checked(terms, step)


def _check_built_geometry(discriminator: nn.Module, geometry: dict[str, object]) -> None:
    """Refuse a built :class:`~adaptok.nn.Discriminator` of another clip geometry.

    Raises:
        ValueError: Naming the argument and both values.
    """
    shape = getattr(discriminator, "input_shape", None)
    patch = getattr(discriminator, "patch_size", None)
    if shape is None or patch is None:
        return  # another network: nothing recorded to compare
    channels, frames, size, _ = shape
    built = {
        "num_frames": frames,
        "image_size": size,
        "in_channels": channels,
        "patch_size": tuple(patch),
    }
    for key, value in geometry.items():
        if built[key] != value:
            raise ValueError(
                f"the loss's discriminator was built with {key}={built[key]!r} but the "
                f"tokenizer has {key}={value!r}; give each tokenizer its own TokenizerLoss"
            )


def _to_frames(video: Tensor) -> Tensor:
    """`(B, C, T, H, W)` in [0, 1] -> `(B * T, C, H, W)` in [-1, 1]."""
    return (video.transpose(1, 2).flatten(0, 1)) * 2 - 1


@contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """Builds no graph into `module`'s parameters (gradients still flow through it)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in zip(module.parameters(), flags):
            parameter.requires_grad_(flag)


def _checked(terms: dict[str, Tensor], step: int) -> dict[str, Tensor]:
    """Detaches the terms; raises `NonFiniteLossError` on the first non-finite one."""
    detached = {name: value.detach() for name, value in terms.items()}
    values = torch.stack([value.float() for value in detached.values()])
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        name = list(detached)[int((~finite).nonzero()[0])]
        raise NonFiniteLossError(step, name, float(detached[name]))
    return detached
