"""Per-video PSNR (official and per-frame definitions, cap) and SSIM against values by hand."""

from __future__ import annotations

import math

import pytest
import torch

from adaptok.metrics.frame_quality import (
    PSNR_CAP_DB,
    PSNR_DEFINITIONS,
    describe_psnr,
    psnr_per_video,
    ssim_per_video,
)


def _constant_video(values: list[float], size: int = 16) -> torch.Tensor:
    """(1, 3, T, size, size) video whose frame t is the constant values[t]."""
    frames = torch.tensor(values).view(1, 1, -1, 1, 1)
    return frames.expand(1, 3, len(values), size, size).clone()


def test_psnr_default_is_the_official_per_video_mse() -> None:
    # Official evaluator: MSE over all frames of the video, then 10 log10(1 / MSE).
    real = _constant_video([0.0, 0.0])
    fake = _constant_video([0.1, 0.01])  # per-frame MSE 1e-2 and 1e-4 -> 20 dB and 40 dB
    official = 10 * math.log10(1 / ((1e-2 + 1e-4) / 2))  # 22.97 dB
    assert psnr_per_video(real, fake).item() == pytest.approx(official, abs=1e-4)
    # The per-frame mean is the other definition, and never lower (here +7 dB).
    frame_mean = psnr_per_video(real, fake, definition="frame_mean").item()
    assert frame_mean == pytest.approx(30.0, abs=1e-4)


def test_psnr_definitions_on_random_videos_order_and_match_by_hand() -> None:
    generator = torch.Generator().manual_seed(0)
    real = torch.rand(4, 3, 6, 16, 16, generator=generator)
    scale = torch.linspace(0.01, 0.3, 6).view(1, 1, 6, 1, 1)  # error varies along time
    fake = (real + scale * torch.randn(real.shape, generator=generator)).clamp(0, 1)
    by_hand = -10 * torch.log10((fake - real).square().mean(dim=(1, 2, 3, 4)))
    video = psnr_per_video(real, fake)
    frames = psnr_per_video(real, fake, definition="frame_mean")
    assert torch.allclose(video, by_hand, atol=1e-4)
    assert torch.all(frames > video + 1.0)


def test_psnr_of_identical_videos_is_capped_and_finite() -> None:
    real = torch.cat([_constant_video([0.5, 0.5]), _constant_video([0.2, 0.2])])
    fake = torch.cat([_constant_video([0.6, 0.6]), _constant_video([0.2, 0.2])])
    for definition in PSNR_DEFINITIONS:
        values = psnr_per_video(real, fake, definition=definition)
        assert values[0].item() == pytest.approx(20.0, abs=1e-4)
        assert values[1].item() == PSNR_CAP_DB == 100.0  # identical video: the stated cap
        assert math.isfinite(values.mean().item())
    uncapped = psnr_per_video(real, fake, max_db=None)
    assert uncapped[1].item() == math.inf
    assert psnr_per_video(real, fake, max_db=60.0)[1].item() == pytest.approx(60.0)


def test_psnr_per_video_and_data_range() -> None:
    real = torch.cat([_constant_video([0.5, 0.5]), _constant_video([0.2, 0.2])])
    fake = torch.cat([_constant_video([0.6, 0.6]), _constant_video([0.2, 0.5])])
    values = psnr_per_video(real, fake)
    assert values.shape == (2,)
    assert values[1].item() == pytest.approx(10 * math.log10(1 / (0.09 / 2)), abs=1e-4)
    scaled = psnr_per_video(real * 255, fake * 255, data_range=255.0)
    assert torch.allclose(scaled, values, atol=1e-3)
    with pytest.raises(ValueError, match="definition must be one of"):
        psnr_per_video(real, fake, definition="pooled")  # type: ignore[arg-type]


def test_describe_psnr_names_the_definition_and_cap() -> None:
    assert "each video's MSE over all its frames" in describe_psnr()
    assert "100 dB" in describe_psnr()
    assert "NOT the paper's definition" in describe_psnr("frame_mean")
    assert "uncapped" in describe_psnr(max_db=None)


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
