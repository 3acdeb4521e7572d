"""VideoQualityMeter: running means, sample cap, skipped metrics, I3D end to end."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from adaptok.metrics import weights
from adaptok.metrics.frame_quality import psnr_per_video, ssim_per_video
from adaptok.metrics.i3d import InceptionI3d
from adaptok.metrics.lpips import LPIPS
from adaptok.metrics.meter import VideoQualityMeter


class PooledColour(nn.Module):
    """Tiny stand-in for I3D: (B, 3, 16, 224, 224) -> (B, 12) pooled colours."""

    num_features = 12

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool3d(x, (4, 1, 1)).flatten(1)


def _pair(seed: int, n: int = 3, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    real = torch.rand(n, 3, 16, size, size, generator=generator)
    fake = (real + 0.1 * torch.randn(real.shape, generator=generator)).clamp(0, 1)
    return real, fake


def test_means_over_videos_and_sample_cap(lpips_alex: LPIPS) -> None:
    meter = VideoQualityMeter(lpips_net="alex", max_samples=5, fvd_extractor=PooledColour())
    batches = [_pair(0), _pair(1)]  # 6 clips, only the first 5 count
    for real, fake in batches:
        meter.update(real, fake)
    real = torch.cat([b[0] for b in batches])[:5]
    fake = torch.cat([b[1] for b in batches])[:5]
    with pytest.warns(UserWarning, match="unstable"):  # 5 clips < 12 feature dimensions
        results = meter.compute()
    assert results["num_samples"] == 5
    assert results["psnr"] == pytest.approx(psnr_per_video(real, fake).mean().item(), rel=1e-5)
    assert results["ssim"] == pytest.approx(ssim_per_video(real, fake).mean().item(), rel=1e-5)
    frames = lambda v: v.transpose(1, 2).reshape(-1, 3, 32, 32) * 2 - 1  # noqa: E731
    with torch.no_grad():
        lpips = lpips_alex(frames(real), frames(fake)).view(5, 16).mean(dim=1).mean()
    assert results["lpips"] == pytest.approx(lpips.item(), rel=1e-5)
    assert results["fvd"] > 0 and results["fvd_unstable"] == 1.0  # 5 clips < 12 dims

    meter.reset()
    assert meter.compute() == {"num_samples": 0.0}


def test_missing_weights_skip_only_that_metric(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ADAPTOK_CACHE", str(tmp_path))
    monkeypatch.delenv("ADAPTOK_LPIPS_VGG_WEIGHTS", raising=False)
    monkeypatch.setattr(weights, "download_package_archive", lambda *a, **k: 1 / 0)
    with pytest.warns(UserWarning, match=r"LPIPS is SKIPPED.*make weights"):
        meter = VideoQualityMeter(fvd_extractor=PooledColour())
    meter.update(*_pair(2))
    with pytest.warns(UserWarning, match="unstable"):
        results = meter.compute()
    assert "lpips" not in results
    assert {"psnr", "ssim", "fvd", "fvd_unstable", "num_samples"} <= results.keys()


def test_default_fvd_network_is_i3d(i3d: nn.Module) -> None:
    meter = VideoQualityMeter(lpips=False)
    assert isinstance(meter.fvd_metric.extractor, InceptionI3d)
    assert VideoQualityMeter(lpips=False).fvd_metric.extractor is meter.fvd_metric.extractor


@pytest.mark.slow
def test_i3d_end_to_end(i3d: nn.Module) -> None:
    meter = VideoQualityMeter(lpips=False)
    real, fake = _pair(3, n=2, size=16)
    meter.update(real, fake)
    with pytest.warns(UserWarning, match="unstable"):
        results = meter.compute()
    assert results["fvd"] > 0 and results["fvd_unstable"] == 1.0


def _ddp_worker(rank: int, world_size: int, init_file: str, out: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    meter = VideoQualityMeter(lpips=False, fvd_extractor=PooledColour())
    real, fake = _pair(4, n=4)
    meter.update(real[rank::world_size], fake[rank::world_size])  # each process sees half
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = meter.compute()
    torch.save(results, f"{out}.{rank}")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_processes_sync_to_the_single_process_result(tmp_path: Path) -> None:
    out = str(tmp_path / "results")
    torch.multiprocessing.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), out), nprocs=2)
    single = VideoQualityMeter(lpips=False, fvd_extractor=PooledColour())
    single.update(*_pair(4, n=4))
    with pytest.warns(UserWarning, match="unstable"):
        expected = single.compute()
    for rank in range(2):
        assert torch.load(f"{out}.{rank}") == pytest.approx(expected, rel=1e-6)


def test_psnr_is_the_official_definition_with_median_and_a_finite_cap() -> None:
    real, fake = _pair(5, n=3)
    exact = real.clone()  # a perfect reconstruction would make the mean +inf without a cap
    meter = VideoQualityMeter(fvd=False, lpips=False)
    meter.update(torch.cat([real, real[:1]]), torch.cat([fake, exact[:1]]))
    results = meter.compute()
    per_video = -10 * torch.log10((fake - real).square().mean(dim=(1, 2, 3, 4)))
    values = torch.cat([per_video, torch.tensor([100.0])])
    assert results["psnr"] == pytest.approx(values.mean().item(), rel=1e-5)
    ordered = sorted(values.tolist())
    assert results["psnr_median"] == pytest.approx((ordered[1] + ordered[2]) / 2, rel=1e-5)
    assert results["ssim_median"] <= 1.0 and "lpips_median" not in results
    # pooled: the squared error of every value of every clip (the exact one adds zeros)
    pooled = (fake - real).square().sum() / (4 * real[0].numel())
    assert results["psnr_pooled"] == pytest.approx(-10 * math.log10(pooled.item()), rel=1e-6)
    # the per-video values behind the means, in the order the clips came in
    clips = meter.per_video()
    assert set(clips) == {"psnr", "ssim"} and clips["psnr"].dtype == torch.float64
    assert clips["psnr"].tolist() == pytest.approx(values.tolist(), rel=1e-5)
    assert clips["ssim"].mean().item() == pytest.approx(results["ssim"], rel=1e-6)
    assert VideoQualityMeter(fvd=False, lpips=False).per_video() == {}  # no clip seen

    other = VideoQualityMeter(fvd=False, lpips=False, psnr_definition="frame_mean")
    other.update(real, fake)
    frame_mean = psnr_per_video(real, fake, definition="frame_mean").mean().item()
    assert other.compute()["psnr"] == pytest.approx(frame_mean, rel=1e-5)
    assert frame_mean > per_video.mean().item()
    with pytest.raises(ValueError, match="psnr_definition"):
        VideoQualityMeter(fvd=False, lpips=False, psnr_definition="pooled")  # type: ignore[arg-type]
