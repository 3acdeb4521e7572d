"""Per-video PSNR and SSIM against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from adaptok.metrics.frame_quality import psnr_per_video, ssim_per_video


def _constant_video(values: list[float], size: int = 16) -> torch.Tensor:
    """(1, 3, T, size, size) video whose frame t is the constant values[t]."""
    frames = torch.tensor(values).view(1, 1, -1, 1, 1)
    return frames.expand(1, 3, len(values), size, size).clone()


def test_psnr_is_averaged_over_frames_not_pooled() -> None:
    real = _constant_video([0.0, 0.0])
    fake = _constant_video([0.1, 0.01])  # per-frame MSE 1e-2 and 1e-4 -> 20 dB and 40 dB
    assert psnr_per_video(real, fake).item() == pytest.approx(30.0, abs=1e-4)
    pooled = 10 * math.log10(1 / ((1e-2 + 1e-4) / 2))  # what a batch-pooled PSNR would give
    assert abs(psnr_per_video(real, fake).item() - pooled) > 5


def test_psnr_per_video_and_data_range() -> None:
    real = torch.cat([_constant_video([0.5, 0.5]), _constant_video([0.2, 0.2])])
    fake = torch.cat([_constant_video([0.6, 0.6]), _constant_video([0.2, 0.2])])
    values = psnr_per_video(real, fake)
    assert values.shape == (2,)
    assert values[0].item() == pytest.approx(20.0, abs=1e-4)
    assert values[1].item() == math.inf  # identical video
    assert psnr_per_video(real * 255, fake * 255, data_range=255.0)[0].item() == pytest.approx(
        20.0, abs=1e-3
    )


def test_ssim_of_constant_frames_matches_the_formula() -> None:
    # Constant frames have zero variance: SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01 L)^2.
    c1 = 0.01**2
    real = _constant_video([0.2, 0.5])
    fake = _constant_video([0.4, 0.5])
    expected = ((2 * 0.2 * 0.4 + c1) / (0.2**2 + 0.4**2 + c1) + 1.0) / 2
    assert ssim_per_video(real, fake).item() == pytest.approx(expected, abs=1e-5)


def test_ssim_is_one_for_identical_and_lower_for_noisy_videos() -> None:
    real = torch.rand(2, 3, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    noisy = (
        real + 0.1 * torch.randn(real.shape, generator=torch.Generator().manual_seed(1))
    ).clamp(0, 1)
    assert torch.allclose(ssim_per_video(real, real), torch.ones(2), atol=1e-5)
    values = ssim_per_video(real, noisy)
    assert values.shape == (2,) and torch.all(values < 0.95)


@pytest.mark.parametrize(
    ("real", "fake", "message"),
    [
        (torch.zeros(3, 4, 16, 16), torch.zeros(3, 4, 16, 16), r"\(B, C, T, H, W\)"),
        (torch.zeros(1, 3, 2, 16, 16), torch.zeros(1, 3, 2, 16, 8), "same shape"),
        (torch.zeros(1, 2, 2, 16, 16), torch.zeros(1, 2, 2, 16, 16), "1 or 3 channels"),
        (
            torch.zeros(1, 3, 2, 16, 16),
            torch.full((1, 3, 2, 16, 16), 255.0),
            r"fake video values in \[0, 1.0\]",
        ),
        (-torch.ones(1, 3, 2, 16, 16), torch.zeros(1, 3, 2, 16, 16), r"\(x \+ 1\) / 2"),
    ],
)
def test_bad_inputs_are_named(real: torch.Tensor, fake: torch.Tensor, message: str) -> None:
    for metric in (psnr_per_video, ssim_per_video):
        with pytest.raises(ValueError, match=message):
            metric(real, fake)


def test_ssim_rejects_tiny_frames() -> None:
    with pytest.raises(ValueError, match="11x11"):
        ssim_per_video(torch.zeros(1, 3, 2, 8, 8), torch.zeros(1, 3, 2, 8, 8))
