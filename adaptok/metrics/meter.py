"""One object that accumulates every video quality metric of an evaluation run.

``VideoQualityMeter`` takes pairs of (real, reconstructed or generated) video batches and
reports FVD, per-video PSNR (by default the official AdapTok definition: from each video's MSE
over all its frames, capped at 100 dB) and SSIM, and per-frame LPIPS averaged per video, each
as a mean and a median over videos. FVD statistics are sums; the per-video values are kept
(one float per clip and metric) so the median is exact; both sync under DDP.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn
from torchmetrics import CatMetric, SumMetric

from adaptok.metrics.frame_quality import (
    PSNR_CAP_DB,
    PSNR_DEFINITIONS,
    PsnrDefinition,
    psnr_from_mse,
    psnr_per_video,
    ssim_per_video,
    validate_video_pair,
)
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

    PSNR per video follows ``psnr_definition`` (default ``"video_mse"``: the official
    evaluator's MSE over all frames of a video; ``"frame_mean"``: per-frame PSNR averaged),
    capped at ``psnr_max_db`` so exact reconstructions stay finite. SSIM and LPIPS (frames
    scaled to [-1, 1]) are per-frame values averaged per video. Each is reported as the mean
    (``psnr``) and the median (``psnr_median``) over videos. ``psnr_pooled`` is the PSNR of
    the mean squared error over every value of every clip: what an allocation that minimises
    the summed MSE of a batch of clips maximises (a mean of per-clip PSNRs is not;
    docs/METHOD.md section 4). When the weights of I3D or LPIPS are missing and cannot be
    fetched, that metric is skipped with one warning saying how to get them, and the others
    are still computed.

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
        psnr_definition: ``"video_mse"`` (paper) or ``"frame_mean"``; see
            ``adaptok.metrics.frame_quality.psnr_per_video``.
        psnr_max_db: PSNR cap in dB (None: uncapped, identical videos give ``inf``).

    Raises:
        ValueError: Unknown ``psnr_definition``.
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
        psnr_definition: PsnrDefinition = "video_mse",
        psnr_max_db: float | None = PSNR_CAP_DB,
    ) -> None:
        super().__init__()
        if psnr_definition not in PSNR_DEFINITIONS:
            raise ValueError(
                f"psnr_definition must be one of {PSNR_DEFINITIONS}, got {psnr_definition!r}"
            )
        self.psnr_definition = psnr_definition
        self.psnr_max_db = psnr_max_db
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
        # per-video values (concatenated across processes): exact means and medians
        self.psnr = CatMetric()
        self.ssim = CatMetric()
        self.lpips = CatMetric()
        self.num_samples = SumMetric()
        # over every value of every clip (float64: ~1e8 values): psnr_pooled
        self.squared_error = SumMetric().set_dtype(torch.float64)
        self.num_values = SumMetric().set_dtype(torch.float64)
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
        self.psnr.update(
            psnr_per_video(real, fake, definition=self.psnr_definition, max_db=self.psnr_max_db)
        )
        self.ssim.update(ssim_per_video(real, fake))
        self.squared_error.update((fake - real).double().square().sum())
        self.num_values.update(real.numel())
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
            ``num_samples`` always; ``psnr``, ``ssim`` and, when enabled, ``lpips`` (means
            over videos) with ``psnr_median``, ``ssim_median``, ``lpips_median`` and
            ``psnr_pooled`` once a clip was seen; ``fvd`` and ``fvd_unstable`` (1.0 when
            either set holds fewer clips than feature dimensions) once two clips were seen.
        """
        with warnings.catch_warnings():  # processes with no clips are fine, they add zeros
            warnings.filterwarnings("ignore", message=r".*called before the ``update`` method.*")
            count = int(self.num_samples.compute())
            results: dict[str, float] = {"num_samples": float(count)}
            if count == 0:
                return results
            names = ["psnr", "ssim"] + (["lpips"] if self.lpips_model is not None else [])
            for name in names:
                values = getattr(self, name).compute().double()
                results[name] = float(values.mean())
                results[f"{name}_median"] = float(values.quantile(0.5))  # middle pair averaged
            pooled_mse = self.squared_error.compute().double() / self.num_values.compute()
            results["psnr_pooled"] = float(psnr_from_mse(pooled_mse, max_db=self.psnr_max_db))
            if self.fvd_metric is not None and count >= 2:
                results["fvd"] = float(self.fvd_metric.compute())
                results["fvd_unstable"] = float(self.fvd_metric.unstable)
        return results

    def per_video(self) -> dict[str, Tensor]:
        """Per-video values over every clip seen by every process.

        Processes' clips are concatenated in rank order, each process's in the order it saw
        them: meters updated with the same batches list the same clips in the same order, so
        their values can be paired (e.g. for a paired bootstrap).

        Returns:
            ``psnr`` (dB), ``ssim`` and, when enabled, ``lpips``: float64 tensors of shape
            (num_samples,) on the CPU; empty before any clip was seen.
        """
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*called before the ``update`` method.*")
            if int(self.num_samples.compute()) == 0:
                return {}
            names = ["psnr", "ssim"] + (["lpips"] if self.lpips_model is not None else [])
            return {
                name: getattr(self, name).compute().double().cpu().reshape(-1) for name in names
            }

    def reset(self) -> None:
        """Forget every clip (start a new evaluation)."""
        metrics = (self.psnr, self.ssim, self.lpips, self.num_samples, self.fvd_metric)
        for metric in (*metrics, self.squared_error, self.num_values):
            if metric is not None:
                metric.reset()
        self._seen = 0
