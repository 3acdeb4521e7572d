"""Per-video PSNR and SSIM: computed per frame, then averaged over the frames of each video.

Videos are reshaped to frames before calling ``torchmetrics.functional`` on purpose: its SSIM
switches to a volumetric (3-D) SSIM on 5-D input, and its PSNR pools the whole batch unless
``dim`` is given. PSNR of a frame identical to its reference is ``+inf`` (so is the video's).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

__all__ = ["psnr_per_video", "ssim_per_video", "validate_values", "validate_video_pair"]

# Slack on the value range check, relative to data_range (float round-off of decoders).
_RANGE_TOLERANCE = 1e-3


def validate_values(
    tensor: Tensor,
    name: str,
    low: float = 0.0,
    high: float = 1.0,
    hint: str = "convert [-1, 1] videos with (x + 1) / 2 and clamp decoder outputs",
) -> None:
    """Check a metric input's dtype, finiteness and value range.

    Args:
        tensor: Any shape.
        name: What the tensor is (used in the message, e.g. ``"FVD real video"``).
        low: Smallest allowed value (minus a slack of 1e-3 of the range).
        high: Largest allowed value (plus the same slack).
        hint: How to fix an out-of-range input (appended to the message).

    Raises:
        TypeError: Not a floating tensor (e.g. uint8 frames 0..255).
        ValueError: NaN or infinite values (with their count), or values outside
            ``[low, high]`` (with the range found).
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(
            f"{name}: expected a floating tensor with values in [{low:g}, {high:g}], got "
            f"{tensor.dtype}"
            + ("; convert uint8 frames with x.float() / 255" if tensor.dtype == torch.uint8 else "")
        )
    if tensor.numel() == 0:
        return
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        nans = int(torch.isnan(tensor).sum())
        raise ValueError(
            f"{name}: {bad} non-finite value(s) ({nans} NaN, {bad - nans} inf) in a tensor of "
            f"shape {tuple(tensor.shape)}"
        )
    slack = _RANGE_TOLERANCE * (high - low)
    found_low, found_high = (v.item() for v in torch.aminmax(tensor.detach()))
    if found_low < low - slack or found_high > high + slack:
        raise ValueError(
            f"expected {name} values in [{low:g}, {high}], got [{found_low:.4g}, "
            f"{found_high:.4g}]; {hint}"
        )


def validate_video_pair(real: Tensor, fake: Tensor, data_range: float = 1.0) -> None:
    """Check two videos for the metrics.

    Both need a floating dtype, equal ``(B, C, T, H, W)`` shapes and finite values in
    ``[0, data_range]``.

    Raises:
        TypeError: A video is not a floating tensor.
        ValueError: Naming the expected and the received shape, range or non-finite count.
    """
    for name, video in (("real", real), ("fake", fake)):
        if not isinstance(video, Tensor) or not video.is_floating_point():
            validate_values(video, f"{name} video", 0.0, data_range)
    if real.ndim != 5 or real.shape != fake.shape:
        raise ValueError(
            "expected real and fake videos of the same shape (B, C, T, H, W), got "
            f"{tuple(real.shape)} and {tuple(fake.shape)}"
        )
    if real.shape[1] not in (1, 3):
        raise ValueError(
            f"expected 1 or 3 channels in dim 1 of (B, C, T, H, W), got {tuple(real.shape)}"
        )
    for name, video in (("real", real), ("fake", fake)):
        validate_values(video, f"{name} video", 0.0, data_range)


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
