"""Every public metric entry refuses uint8, out-of-range and non-finite input at the call."""

from __future__ import annotations

import pytest
import torch

from adaptok.metrics import FrechetVideoDistance, VideoQualityMeter
from adaptok.metrics.frame_quality import psnr_per_video, ssim_per_video
from adaptok.metrics.fvd import frechet_distance, preprocess_for_i3d
from adaptok.metrics.lpips import LPIPS


class _Features(torch.nn.Module):
    """Small fixed feature extractor standing in for I3D (the metric accepts any)."""

    num_features = 8

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.weight = torch.randn(3 * 4 * 2 * 2, 8, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool3d(x, (4, 2, 2))
        return pooled.flatten(1) @ self.weight


def _videos() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    real = torch.rand(3, 3, 16, 16, 16, generator=generator)
    fake = (real + 0.05 * torch.randn(real.shape, generator=generator)).clamp(0, 1)
    return real, fake


def _with_nan(video: torch.Tensor) -> torch.Tensor:
    video = video.clone()
    video[0, 0, 0, 0, 0] = float("nan")
    return video


BAD_VIDEOS = [
    ("uint8", lambda v: (v * 255).to(torch.uint8), TypeError, r"uint8.*x\.float\(\) / 255"),
    ("minus_one_to_one", lambda v: v * 2 - 1, ValueError, r"values in \[0, 1.0\], got \[-"),
    ("nan", _with_nan, ValueError, r"1 non-finite value\(s\) \(1 NaN, 0 inf\)"),
    ("inf", lambda v: v.index_fill(0, torch.tensor([1]), float("inf")), ValueError, "inf"),
]


@pytest.mark.parametrize(("case", "spoil", "error", "message"), BAD_VIDEOS)
def test_fvd_update_names_the_fault(case: str, spoil, error: type, message: str) -> None:
    real, fake = _videos()
    metric = FrechetVideoDistance(feature_extractor=_Features(), num_features=8)
    metric.update(real, real=True)
    with pytest.raises(error, match=message):
        metric.update(spoil(fake), real=False)
    assert int(metric.fake_count) == 0  # nothing of the bad batch was accumulated
    with pytest.raises(error, match=message):
        preprocess_for_i3d(spoil(fake))


@pytest.mark.parametrize(("case", "spoil", "error", "message"), BAD_VIDEOS)
def test_frame_metrics_and_meter_name_the_fault(case: str, spoil, error: type, message) -> None:
    real, fake = _videos()
    for metric in (psnr_per_video, ssim_per_video):
        with pytest.raises(error, match=message):
            metric(real, spoil(fake))
    meter = VideoQualityMeter(lpips=False, fvd_extractor=_Features())
    with pytest.raises(error, match=message):
        meter.update(real, spoil(fake))
    meter.update(real, fake)  # a good batch after the refused one counts alone
    results = meter.compute()
    assert results["num_samples"] == 3.0 and torch.isfinite(torch.tensor(results["fvd"]))


def test_frechet_distance_refuses_non_finite_statistics() -> None:
    mean, cov = torch.zeros(4), torch.eye(4)
    assert frechet_distance(mean, cov, mean, cov) == pytest.approx(0.0, abs=1e-9)
    bad = cov.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="cov2 holds 1 non-finite"):
        frechet_distance(mean, cov, mean, bad)


def test_lpips_checks_values_as_a_metric_but_not_as_a_loss(lpips_alex: LPIPS) -> None:
    lpips = lpips_alex
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with pytest.raises(TypeError, match="LPIPS input y.*uint8"):
        lpips.layer_distances(x, ((x + 1) * 127).to(torch.uint8))
    with torch.no_grad():
        with pytest.raises(ValueError, match=r"LPIPS input x values in \[-1, 1.0\].*2 \* x - 1"):
            lpips.layer_distances(x * 3, x)
        with pytest.raises(ValueError, match="LPIPS input y: 1 non-finite"):
            y = x.clone()
            y[0, 0, 0, 0] = float("nan")
            lpips.layer_distances(x, y)
    # With gradients on (the tokenizer's perceptual loss) overshooting reconstructions pass.
    assert torch.isfinite(lpips(x * 1.5, x)).all()
