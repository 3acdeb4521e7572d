"""Frechet distance maths (vs scipy) and the FVD metric with an injected feature network."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from adaptok.metrics.fvd import FrechetVideoDistance, frechet_distance, preprocess_for_i3d


def _scipy_frechet(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    root = scipy.linalg.sqrtm(cov1 @ cov2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1 + cov2) - 2 * np.trace(root).real)


def _statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return features.mean(axis=0), np.cov(features, rowvar=False, bias=True)


@pytest.mark.parametrize("num_samples", [200, 12])  # full rank, and rank deficient (n < D)
def test_frechet_distance_matches_scipy_sqrtm(num_samples: int) -> None:
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(16, 16))
    a = rng.normal(size=(num_samples, 16)) @ mixing
    b = rng.normal(size=(num_samples, 16)) @ mixing * 1.3 + 0.5
    expected = _scipy_frechet(*_statistics(a), *_statistics(b))
    assert frechet_distance(*_statistics(a), *_statistics(b)) == pytest.approx(expected, rel=1e-6)
    # Zero eigenvalues come back as +-1e-14 * |cov|; their square roots (as in scipy) leave
    # round-off of order sqrt(1e-14) relative to the traces.
    scale = np.trace(_statistics(a)[1])
    assert frechet_distance(*_statistics(a), *_statistics(a)) == pytest.approx(0, abs=1e-7 * scale)


class PooledColour(nn.Module):
    """Tiny stand-in for I3D: spatially pooled colour of 4 time slices -> (B, 12) features."""

    num_features = 12

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (3, 16, 224, 224)
        return nn.functional.adaptive_avg_pool3d(x, (4, 1, 1)).flatten(1)


def _videos(seed: int, n: int, frames: int = 16, shift: float = 0.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, frames, 8, 8, generator=generator) * 0.5 + shift).clamp(0, 1)


def test_preprocessing_cuts_resizes_and_rescales() -> None:
    clip = _videos(0, 2, frames=20)
    x = preprocess_for_i3d(clip)
    assert x.shape == (2, 3, 16, 224, 224)
    assert x.min() >= -1 and x.max() <= 1
    torch.testing.assert_close(x, preprocess_for_i3d(clip[:, :, :16]))
    with pytest.raises(ValueError, match="at least 16 frames"):
        preprocess_for_i3d(clip[:, :, :8])


def test_metric_equals_the_closed_form_on_its_features() -> None:
    extractor = PooledColour()
    metric = FrechetVideoDistance(extractor, num_features=12)
    real, fake = _videos(1, 16), _videos(2, 16, shift=0.2)
    for part in real.split(6):  # several batches: the sums must add up
        metric.update(part, real=True)
    metric.update(fake, real=False)
    with torch.no_grad():
        features_real = extractor(preprocess_for_i3d(real)).double().numpy()
        features_fake = extractor(preprocess_for_i3d(fake)).double().numpy()
    expected = _scipy_frechet(*_statistics(features_real), *_statistics(features_fake))
    assert metric.compute().item() == pytest.approx(expected, rel=1e-6)
    assert not metric.unstable  # 16 clips per set >= 12 feature dimensions


def test_identical_sets_give_zero_and_shifts_grow() -> None:
    real = _videos(3, 16)
    scores = []
    for shift in (0.0, 0.1, 0.3):
        metric = FrechetVideoDistance(PooledColour(), num_features=12)
        metric.update(real, real=True)
        metric.update((real + shift).clamp(0, 1), real=False)
        scores.append(metric.compute().item())
    assert scores[0] == pytest.approx(0, abs=1e-8)
    assert 0 < scores[1] < scores[2]


def test_states_are_sums_so_processes_can_be_merged() -> None:
    whole = FrechetVideoDistance(PooledColour(), num_features=12)
    halves = [FrechetVideoDistance(PooledColour(), num_features=12) for _ in range(2)]
    real, fake = _videos(4, 8), _videos(5, 8, shift=0.1)
    whole.update(real, real=True)
    whole.update(fake, real=False)
    for half, r, f in zip(halves, real.chunk(2), fake.chunk(2)):
        half.update(r, real=True)
        half.update(f, real=False)
    for name, reduce in whole._reductions.items():
        assert reduce is not None, name  # every state has a dist_reduce_fx
        merged = getattr(halves[0], name) + getattr(halves[1], name)
        torch.testing.assert_close(merged, getattr(whole, name))
        assert getattr(whole, name).dtype == torch.float64


def test_few_clips_warn_and_raise_the_unstable_flag() -> None:
    metric = FrechetVideoDistance(PooledColour(), num_features=12)
    metric.update(_videos(6, 5), real=True)
    metric.update(_videos(7, 5), real=False)
    with pytest.warns(UserWarning, match="unstable"):
        metric.compute()
    assert metric.unstable
    metric.reset()
    assert not metric.unstable and metric.real_count == 0


def test_wrong_feature_size_is_reported() -> None:
    metric = FrechetVideoDistance(PooledColour(), num_features=400)
    with pytest.raises(ValueError, match=r"expected \(B, 400\)"):
        metric.update(_videos(8, 2), real=True)
