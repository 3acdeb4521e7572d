"""Frechet Video Distance as a ``torchmetrics.Metric`` that keeps sums, never clips or features.

Protocol (as in Unterthiner et al. 2018 and the AdapTok paper): each clip's first 16 frames
are resized to 224x224 (bilinear, ``align_corners=False``, no antialias), scaled from [0, 1]
to [-1, 1] and fed to I3D (Kinetics-400); the features are the 400 pre-softmax logits
averaged over time. Real and generated features are summarised by their mean and population
covariance (float64) and compared with the Frechet distance of the two Gaussians.

Clips longer than 16 frames are cut to their first 16; shorter ones are an error. The
reference TF implementation resizes with TF1's bilinear kernel (no half-pixel centres), which
differs slightly from PyTorch's; scores are therefore close to, not identical with, numbers
computed by other code bases.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

from adaptok.metrics.frame_quality import validate_values
from adaptok.metrics.i3d import load_i3d

__all__ = [
    "FVD_FRAMES",
    "FVD_RESOLUTION",
    "FrechetVideoDistance",
    "frechet_distance",
    "preprocess_for_i3d",
]

FVD_FRAMES = 16
FVD_RESOLUTION = 224

Extractor = nn.Module | Callable[[Tensor], Tensor]


def preprocess_for_i3d(videos: Tensor, num_frames: int = FVD_FRAMES) -> Tensor:
    """FVD preprocessing: first ``num_frames`` frames, resize to 224x224, [0, 1] -> [-1, 1].

    Args:
        videos: (B, 3, T, H, W) in [0, 1], T >= num_frames.
        num_frames: Frames kept from the start of each clip.

    Returns:
        (B, 3, num_frames, 224, 224) float32 in [-1, 1].

    Raises:
        TypeError: ``videos`` is not floating (e.g. uint8 0..255).
        ValueError: Wrong shape, too few frames, non-finite values or values outside [0, 1].
    """
    validate_values(videos, "FVD video")
    if videos.ndim != 5 or videos.shape[1] != 3:
        raise ValueError(f"FVD expects RGB videos (B, 3, T, H, W), got {tuple(videos.shape)}")
    b, c, t, h, w = videos.shape
    if t < num_frames:
        raise ValueError(
            f"FVD needs at least {num_frames} frames per clip, got T={t} in {tuple(videos.shape)}"
        )
    frames = videos[:, :, :num_frames].float().transpose(1, 2).reshape(b * num_frames, c, h, w)
    if (h, w) != (FVD_RESOLUTION, FVD_RESOLUTION):
        size = (FVD_RESOLUTION, FVD_RESOLUTION)
        frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False)
    frames = frames.view(b, num_frames, c, FVD_RESOLUTION, FVD_RESOLUTION).transpose(1, 2)
    return frames * 2.0 - 1.0


def _as_float64(array: Tensor | np.ndarray) -> Tensor:
    return torch.as_tensor(array).detach().to(device="cpu", dtype=torch.float64)


def _psd_sqrt(matrix: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(
    mu1: Tensor | np.ndarray,
    cov1: Tensor | np.ndarray,
    mu2: Tensor | np.ndarray,
    cov2: Tensor | np.ndarray,
) -> float:
    """Frechet distance between N(mu1, cov1) and N(mu2, cov2).

    ``|mu1 - mu2|^2 + tr(cov1) + tr(cov2) - 2 tr((cov1 cov2)^(1/2))``, computed in float64.
    The trace of the matrix square root uses ``(cov1 cov2)^(1/2) ~ S (S cov2 S)^(1/2) S^-1``
    with ``S = cov1^(1/2)``: its eigenvalues are those of the symmetric PSD matrix
    ``S cov2 S``, so the trace is the sum of their square roots. This equals the real part of
    ``trace(scipy.linalg.sqrtm(cov1 @ cov2))`` and stays stable for singular covariances.

    Args:
        mu1: (D,) mean of the first set.
        cov1: (D, D) covariance of the first set.
        mu2: (D,) mean of the second set.
        cov2: (D, D) covariance of the second set.

    Returns:
        The distance (>= 0 up to round-off).

    Raises:
        ValueError: A statistic holds NaN or infinite values (named).
    """
    mu1, cov1, mu2, cov2 = map(_as_float64, (mu1, cov1, mu2, cov2))
    for name, value in (("mu1", mu1), ("cov1", cov1), ("mu2", mu2), ("cov2", cov2)):
        if not bool(torch.isfinite(value).all()):
            raise ValueError(
                f"Frechet distance: {name} holds {int((~torch.isfinite(value)).sum())} "
                "non-finite value(s); the features (or the videos they came from) were not finite"
            )
    root1 = _psd_sqrt(cov1)
    cross = torch.linalg.eigvalsh(root1 @ cov2 @ root1).clamp_min(0).sqrt().sum()
    mean_term = (mu1 - mu2).square().sum()
    return float(mean_term + torch.trace(cov1) + torch.trace(cov2) - 2 * cross)


class FrechetVideoDistance(Metric):
    """FVD between the real and the generated clips seen by ``update``.

    States are running sums of the features and of their outer products for each set (float64,
    reduced by summation), so the metric syncs under DDP and memory does not grow with the
    number of clips. With fewer clips per set than feature dimensions (400) the covariance is
    rank deficient and FVD is biased and noisy: ``compute`` then warns and sets ``unstable``.

    Args:
        feature_extractor: Maps (B, 3, 16, 224, 224) in [-1, 1] to (B, num_features). Default:
            I3D from ``weights`` (see ``adaptok.metrics.i3d.load_i3d``). Inject a small module
            for tests or a TorchScript detector for users' own weights.
        weights: I3D weight file (state dict or TorchScript) when no extractor is given.
        num_features: Feature dimension (400 for I3D logits).
        **kwargs: Passed to ``torchmetrics.Metric``.

    Raises:
        WeightsUnavailableError: No extractor given and the I3D weights cannot be found.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(
        self,
        feature_extractor: Extractor | None = None,
        weights: str | Path | None = None,
        num_features: int = 400,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.extractor = feature_extractor if feature_extractor is not None else load_i3d(weights)
        self.num_features = num_features
        self.unstable = False
        for split in ("real", "fake"):
            zeros = torch.zeros((), dtype=torch.float64)
            self.add_state(f"{split}_count", zeros, dist_reduce_fx="sum")
            self.add_state(
                f"{split}_sum", torch.zeros(num_features, dtype=torch.float64), dist_reduce_fx="sum"
            )
            self.add_state(
                f"{split}_outer",
                torch.zeros(num_features, num_features, dtype=torch.float64),
                dist_reduce_fx="sum",
            )

    def features(self, videos: Tensor) -> Tensor:
        """(B, 3, T, H, W) in [0, 1] -> (B, num_features) float64 features (no gradients)."""
        with torch.no_grad():
            features = self.extractor(preprocess_for_i3d(videos))
        if features.ndim != 2 or features.shape[1] != self.num_features:
            raise ValueError(
                f"feature extractor returned {tuple(features.shape)}, expected (B, {self.num_features})"
            )
        return features.double()

    def update(self, videos: Tensor, real: bool) -> None:
        """Add a batch of clips to the real or the generated set.

        Args:
            videos: (B, 3, T, H, W) RGB in [0, 1] with T >= 16 (first 16 frames used).
            real: True for reference clips, False for reconstructions / samples.

        Raises:
            TypeError: ``videos`` is not floating (uint8 0..255 must be divided by 255).
            ValueError: Wrong shape, non-finite values, values outside [0, 1] (e.g. [-1, 1]
                video), or non-finite features from the extractor.
        """
        validate_values(videos, f"FVD {'real' if real else 'generated'} video")
        features = self.features(videos)
        if not bool(torch.isfinite(features).all()):
            raise ValueError("FVD: the feature extractor returned non-finite features")
        split = "real" if real else "fake"
        setattr(self, f"{split}_count", getattr(self, f"{split}_count") + features.shape[0])
        setattr(self, f"{split}_sum", getattr(self, f"{split}_sum") + features.sum(dim=0))
        setattr(self, f"{split}_outer", getattr(self, f"{split}_outer") + features.T @ features)

    def statistics(self, real: bool) -> tuple[Tensor, Tensor]:
        """Mean (D,) and population covariance (D, D) of one set, float64."""
        split = "real" if real else "fake"
        count = getattr(self, f"{split}_count")
        if count < 2:
            raise ValueError(f"FVD needs at least 2 {split} clips, got {int(count)}")
        mean = getattr(self, f"{split}_sum") / count
        cov = getattr(self, f"{split}_outer") / count - torch.outer(mean, mean)
        return mean, cov

    def compute(self) -> Tensor:
        """FVD of the clips seen so far (all processes), a float64 scalar tensor.

        Also sets ``unstable``: True when either set (summed over processes) holds fewer clips
        than feature dimensions.
        """
        self.unstable = bool(min(self.real_count, self.fake_count) < self.num_features)
        if self.unstable:
            warnings.warn(
                f"FVD from {int(self.real_count)} real and {int(self.fake_count)} generated clips, "
                f"fewer than the {self.num_features} feature dimensions: the covariance is rank "
                "deficient, the score is unstable and not comparable to published numbers",
                stacklevel=2,
            )
        (mu_real, cov_real), (mu_fake, cov_fake) = self.statistics(True), self.statistics(False)
        return torch.tensor(
            frechet_distance(mu_real, cov_real, mu_fake, cov_fake), dtype=torch.float64
        )

    def reset(self) -> None:
        """Clear both sets (and the ``unstable`` flag)."""
        super().reset()
        self.unstable = False
