"""Per-video PSNR and SSIM.

PSNR follows the official AdapTok evaluator by default (``definition="video_mse"``): one MSE
per video over all its frames, channels and pixels, then ``10 log10(range^2 / MSE)``
(``eval/rfvd_evaluator.py`` of VisionXLab/AdapTok: ``mse_loss(...).mean(dim=(1, 2, 3, 4))``
then ``-10 log10(mse)``). ``definition="frame_mean"`` averages per-frame PSNR instead, which
is never lower (Jensen: ``-log`` is convex) and is what many image-codec papers report; a
report that uses it must say so. PSNR is capped at ``max_db`` (default 100 dB, i.e. the MSE
is floored at ``range^2 * 1e-10``), so an exact reconstruction gives a finite value and a
mean over videos stays finite; pass ``max_db=None`` for the uncapped ``+inf``.

SSIM is computed per frame and averaged per video. Videos are reshaped to frames before
calling ``torchmetrics.functional`` on purpose: its SSIM switches to a volumetric (3-D) SSIM
on 5-D input.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure

__all__ = [
    "PSNR_CAP_DB",
    "PSNR_DEFINITIONS",
    "PsnrDefinition",
    "describe_psnr",
    "psnr_from_mse",
    "psnr_per_video",
    "ssim_per_video",
    "validate_values",
    "validate_video_pair",
]

PsnrDefinition = Literal["video_mse", "frame_mean"]
PSNR_DEFINITIONS: tuple[str, ...] = ("video_mse", "frame_mean")
# Default cap: an MSE floor of range^2 * 1e-10 (far below 8-bit quantisation, ~48 dB).
PSNR_CAP_DB = 100.0

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


def psnr_from_mse(
    mse: Tensor, data_range: float = 1.0, max_db: float | None = PSNR_CAP_DB
) -> Tensor:
    """``10 log10(data_range^2 / mse)``, capped at ``max_db``.

    Args:
        mse: Mean squared errors, any shape, non-negative.
        data_range: Maximum value of the signal.
        max_db: Largest PSNR returned (the MSE is floored at ``data_range^2 10^(-max_db/10)``);
            None: no cap, ``+inf`` for a zero MSE.

    Returns:
        PSNR in dB, float32 or float64 as ``mse``, same shape.
    """
    mse = mse if mse.is_floating_point() else mse.float()
    if max_db is not None:
        mse = mse.clamp_min(data_range**2 * 10.0 ** (-max_db / 10.0))
    return 10.0 * torch.log10(data_range**2 / mse)


def psnr_per_video(
    real: Tensor,
    fake: Tensor,
    data_range: float = 1.0,
    definition: PsnrDefinition = "video_mse",
    max_db: float | None = PSNR_CAP_DB,
) -> Tensor:
    """Peak signal-to-noise ratio of each video.

    Args:
        real: (B, C, T, H, W) reference videos in [0, data_range].
        fake: (B, C, T, H, W) reconstructions / samples in [0, data_range].
        data_range: Maximum value of the signal.
        definition: ``"video_mse"`` (default, the official AdapTok evaluator): PSNR of the
            MSE over all frames of the video; ``"frame_mean"``: mean over frames of each
            frame's PSNR (each frame capped at ``max_db``), never lower than ``video_mse``.
        max_db: Cap in dB, so identical videos give ``max_db`` (default 100); None: ``inf``.

    Returns:
        (B,) PSNR in dB, float32.

    Raises:
        ValueError: Bad shapes or values (see ``validate_video_pair``), or an unknown
            ``definition``.
    """
    if definition not in PSNR_DEFINITIONS:
        raise ValueError(f"definition must be one of {PSNR_DEFINITIONS}, got {definition!r}")
    validate_video_pair(real, fake, data_range)
    error = (fake.float() - real.float()).square()
    if definition == "video_mse":
        return psnr_from_mse(error.mean(dim=(1, 2, 3, 4)), data_range, max_db)
    per_frame = psnr_from_mse(error.mean(dim=(1, 3, 4)), data_range, max_db)  # (B, T)
    return per_frame.mean(dim=1)


def describe_psnr(
    definition: PsnrDefinition = "video_mse", max_db: float | None = PSNR_CAP_DB
) -> str:
    """One sentence naming a PSNR definition, for report notes.

    Args:
        definition: ``"video_mse"`` or ``"frame_mean"`` (see ``psnr_per_video``).
        max_db: The cap used (None: uncapped).

    Returns:
        E.g. ``"PSNR: from each video's MSE over all its frames (the official AdapTok
        evaluator), capped at 100 dB; mean and median over videos."``
    """
    how = {
        "video_mse": "from each video's MSE over all its frames (the official AdapTok evaluator)",
        "frame_mean": (
            "per-frame PSNR averaged per video (NOT the paper's definition, which uses each "
            "video's MSE over all frames and is never higher)"
        ),
    }[definition]
    cap = f"capped at {max_db:g} dB (exact reconstructions)" if max_db is not None else "uncapped"
    return f"PSNR: {how}, {cap}; mean and median over videos (data range 1)."


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
