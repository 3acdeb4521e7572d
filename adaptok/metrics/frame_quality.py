"""Per-video PSNR and SSIM: computed per frame, then averaged over the frames of each video.

Videos are reshaped to frames before calling ``torchmetrics.functional`` on purpose: its SSIM
switches to a volumetric (3-D) SSIM on 5-D input, and its PSNR pools the whole batch unless
``dim`` is given. PSNR of a frame identical to its reference is ``+inf`` (so is the video's).
"""

from __future__ import annotations

from torch import Tensor
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

__all__ = ["psnr_per_video", "ssim_per_video", "validate_video_pair"]

# Slack on the value range check, relative to data_range (float round-off of decoders).
_RANGE_TOLERANCE = 1e-3


def validate_video_pair(real: Tensor, fake: Tensor, data_range: float = 1.0) -> None:
    """Check two videos for the metrics: equal (B, C, T, H, W) shapes, values in [0, data_range].

    Raises:
        ValueError: Naming the expected and the received shape or range.
    """
    if real.ndim != 5 or real.shape != fake.shape:
        raise ValueError(
            "expected real and fake videos of the same shape (B, C, T, H, W), got "
            f"{tuple(real.shape)} and {tuple(fake.shape)}"
        )
    if real.shape[1] not in (1, 3):
        raise ValueError(
            f"expected 1 or 3 channels in dim 1 of (B, C, T, H, W), got {tuple(real.shape)}"
        )
    slack = _RANGE_TOLERANCE * data_range
    for name, video in (("real", real), ("fake", fake)):
        low, high = video.min().item(), video.max().item()
        if low < -slack or high > data_range + slack:
            raise ValueError(
                f"expected {name} video values in [0, {data_range}], got [{low:.4g}, {high:.4g}]; "
                f"convert [-1, 1] videos with (x + 1) / 2 and clamp decoder outputs"
            )


def _frames(video: Tensor) -> Tensor:
    """(B, C, T, H, W) -> (B * T, C, H, W), frame-major per video."""
    b, c, t, h, w = video.shape
    return video.transpose(1, 2).reshape(b * t, c, h, w)


def psnr_per_video(real: Tensor, fake: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio per frame, averaged per video.

    Args:
        real: (B, C, T, H, W) reference videos in [0, data_range].
        fake: (B, C, T, H, W) reconstructions / samples in [0, data_range].
        data_range: Maximum value of the signal.

    Returns:
        (B,) PSNR in dB (``inf`` where every frame is identical).
    """
    validate_video_pair(real, fake, data_range)
    per_frame = peak_signal_noise_ratio(
        _frames(fake).float(),
        _frames(real).float(),
        data_range=data_range,
        reduction="none",
        dim=(1, 2, 3),
    )
    return per_frame.view(real.shape[0], real.shape[2]).mean(dim=1)


def ssim_per_video(real: Tensor, fake: Tensor, data_range: float = 1.0) -> Tensor:
    """Structural similarity per frame (Gaussian window 11, sigma 1.5), averaged per video.

    Args:
        real: (B, C, T, H, W) reference videos in [0, data_range], H and W at least 11.
        fake: (B, C, T, H, W) reconstructions / samples in [0, data_range].
        data_range: Maximum value of the signal.

    Returns:
        (B,) SSIM (1 for identical videos).
    """
    validate_video_pair(real, fake, data_range)
    if min(real.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs frames of at least 11x11 pixels, got {tuple(real.shape)}")
    per_frame = structural_similarity_index_measure(
        _frames(fake).float(), _frames(real).float(), data_range=data_range, reduction="none"
    )
    return per_frame.view(real.shape[0], real.shape[2]).mean(dim=1)
