"""One object that accumulates every video quality metric of an evaluation run.

``VideoQualityMeter`` takes pairs of (real, reconstructed or generated) video batches and
reports FVD, per-video PSNR and SSIM, and per-frame LPIPS averaged per video. Every quantity
is a torchmetrics state reduced by summation, so the meter syncs under DDP and its memory
does not grow with the number of clips.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric, SumMetric

from adaptok.metrics.frame_quality import psnr_per_video, ssim_per_video, validate_video_pair
from adaptok.metrics.fvd import Extractor, FrechetVideoDistance
from adaptok.metrics.i3d import load_i3d
from adaptok.metrics.lpips import LPIPS, Net
from adaptok.metrics.weights import WeightsUnavailableError, resolve_weights

__all__ = ["VideoQualityMeter"]


@functools.cache
def _shared_i3d(path: Path) -> nn.Module:
    """One I3D per weight file, shared by every meter of the process (they run one at a time)."""
    return load_i3d(path)


@functools.cache
def _shared_lpips(net: Net, path: Path) -> LPIPS:
    """One LPIPS network per weight file, shared by every meter of the process."""
    return LPIPS(net, weights=path)


class VideoQualityMeter(nn.Module):
    """Running FVD, PSNR, SSIM and LPIPS over (real, fake) video pairs.

    PSNR and SSIM are computed per frame and averaged per video; LPIPS likewise (frames
    scaled to [-1, 1]); the reported values are means over videos. When the weights of I3D or
    LPIPS are missing and cannot be fetched, that metric is skipped with one warning saying
    how to get them, and the others are still computed.

    Several meters (e.g. one per token budget) share the same I3D and LPIPS networks.

    Args:
        fvd: Compute FVD (needs clips of at least 16 frames).
        lpips: Compute LPIPS.
        lpips_net: LPIPS backbone, ``"vgg"`` or ``"alex"``.
        max_samples: Stop accumulating after this many clips in this process (None: no limit).
        fvd_extractor: Feature network for FVD instead of I3D (tests, custom detectors); its
            ``num_features`` attribute gives the feature size (default 400).
        i3d_weights: I3D weight file (state dict or TorchScript) instead of the cached one.
        lpips_chunk: Frames per LPIPS forward pass (bounds memory).
    """

    def __init__(
        self,
        fvd: bool = True,
        lpips: bool = True,
        lpips_net: Net = "vgg",
        max_samples: int | None = None,
        fvd_extractor: Extractor | None = None,
        i3d_weights: str | Path | None = None,
        lpips_chunk: int = 64,
    ) -> None:
        super().__init__()
        self.max_samples = max_samples
        self.lpips_chunk = lpips_chunk
        self.fvd_metric: FrechetVideoDistance | None = None
        self.lpips_model: LPIPS | None = None
        if fvd:
            extractor = fvd_extractor
            if extractor is None:
                extractor = self._load_or_warn(
                    "FVD", lambda: _shared_i3d(resolve_weights("i3d", i3d_weights))
                )
            if extractor is not None:
                num_features = getattr(extractor, "num_features", 400)
                self.fvd_metric = FrechetVideoDistance(extractor, num_features=num_features)
        if lpips:
            self.lpips_model = self._load_or_warn(
                "LPIPS", lambda: _shared_lpips(lpips_net, resolve_weights(f"lpips_{lpips_net}"))
            )
        self.psnr = MeanMetric()
        self.ssim = MeanMetric()
        self.lpips = MeanMetric()
        self.num_samples = SumMetric()
        self._seen = 0

    @staticmethod
    def _load_or_warn(metric: str, load: Callable[[], nn.Module]) -> nn.Module | None:
        try:
            return load()
        except WeightsUnavailableError as error:
            warnings.warn(
                f"{metric} is SKIPPED (other metrics are still computed): {error}", stacklevel=3
            )
            return None

    @torch.no_grad()
    def update(self, real: Tensor, fake: Tensor) -> None:
        """Add a batch of video pairs.

        Args:
            real: (B, C, T, H, W) reference videos in [0, 1], floating.
            fake: (B, C, T, H, W) reconstructions / samples in [0, 1], floating.

        Raises:
            TypeError: A video is not floating (uint8 0..255 must be divided by 255).
            ValueError: Shapes differ, NaN/inf values, or values outside [0, 1]; checked on
                the whole batch before anything is accumulated.
        """
        validate_video_pair(real, fake)
        if self.max_samples is not None:
            keep = max(self.max_samples - self._seen, 0)
            real, fake = real[:keep], fake[:keep]
        if real.shape[0] == 0:
            return
        device = self.psnr.device  # networks run in float32 whatever the model's precision
        real = real.detach().to(device, torch.float32)
        fake = fake.detach().to(device, torch.float32)
        self.psnr.update(psnr_per_video(real, fake))
        self.ssim.update(ssim_per_video(real, fake))
        if self.lpips_model is not None:
            self.lpips.update(self._lpips_per_video(real, fake))
        if self.fvd_metric is not None:
            self.fvd_metric.update(real, real=True)
            self.fvd_metric.update(fake, real=False)
        self.num_samples.update(real.shape[0])
        self._seen += real.shape[0]

    def _lpips_per_video(self, real: Tensor, fake: Tensor) -> Tensor:
        """(B, C, T, H, W) pairs in [0, 1] -> (B,) LPIPS averaged over frames."""
        b, c, t, h, w = real.shape
        if c != 3:
            raise ValueError(f"LPIPS needs RGB videos (B, 3, T, H, W), got {tuple(real.shape)}")
        real_frames = real.transpose(1, 2).reshape(b * t, c, h, w) * 2 - 1
        fake_frames = fake.transpose(1, 2).reshape(b * t, c, h, w) * 2 - 1
        distances = [
            self.lpips_model(x, y)
            for x, y in zip(
                real_frames.split(self.lpips_chunk), fake_frames.split(self.lpips_chunk)
            )
        ]
        return torch.cat(distances).view(b, t).mean(dim=1)

    def compute(self) -> dict[str, float]:
        """Metrics over every clip seen by every process.

        Returns:
            ``num_samples`` always; ``psnr``, ``ssim`` and, when enabled, ``lpips`` once a
            clip was seen; ``fvd`` and ``fvd_unstable`` (1.0 when either set holds fewer clips
            than feature dimensions) once two clips were seen.
        """
        with warnings.catch_warnings():  # processes with no clips are fine, they add zeros
            warnings.filterwarnings("ignore", message=r".*called before the ``update`` method.*")
            count = int(self.num_samples.compute())
            results: dict[str, float] = {"num_samples": float(count)}
            if count == 0:
                return results
            results["psnr"] = float(self.psnr.compute())
            results["ssim"] = float(self.ssim.compute())
            if self.lpips_model is not None:
                results["lpips"] = float(self.lpips.compute())
            if self.fvd_metric is not None and count >= 2:
                results["fvd"] = float(self.fvd_metric.compute())
                results["fvd_unstable"] = float(self.fvd_metric.unstable)
        return results

    def reset(self) -> None:
        """Forget every clip (start a new evaluation)."""
        for metric in (self.psnr, self.ssim, self.lpips, self.num_samples, self.fvd_metric):
            if metric is not None:
                metric.reset()
        self._seen = 0
