"""Transformer video discriminator: 3D patches + a CLS token -> one real/fake logit."""

from __future__ import annotations

from collections.abc import Callable

import torch
from timm.layers import trunc_normal_
from torch import Tensor, nn

from adaptok.nn.pos_embed import sincos_3d
from adaptok.nn.transformer import TransformerStack, init_weights

__all__ = ["DISCRIMINATOR_GEOMETRY", "Discriminator", "DiscriminatorFactory"]

DISCRIMINATOR_GEOMETRY = ("num_frames", "image_size", "in_channels", "patch_size")
"""The discriminator's init arguments that are the tokenizer's (the clips it judges are the
tokenizer's input and reconstructions), in :class:`Discriminator`'s positional order."""


class Discriminator(nn.Module):
    """ViT over 3D patches with full attention; the CLS output gives the logit.

    In a training stage the first four arguments (:data:`DISCRIMINATOR_GEOMETRY`) are the
    tokenizer's: ``TokenizerModule`` builds the discriminator through a
    :data:`DiscriminatorFactory` that holds only the other settings.

    Args:
        num_frames: Frames per clip T.
        image_size: Frame height = width, in pixels.
        in_channels: Video channels C.
        patch_size: `(pt, ph, pw)` of the patch embedding (kernel = stride), in frames and
            pixels.
        width: Transformer width (paper: 512).
        depth: Transformer depth (paper: 12).
        heads: Attention heads.
        mlp_ratio: MLP hidden width as a multiple of `width`.

    Raises:
        ValueError: The clip `T x H x W` is not divisible by the patch size.
    """

    def __init__(
        self,
        num_frames: int = 16,
        image_size: int = 128,
        in_channels: int = 3,
        patch_size: tuple[int, int, int] = (4, 8, 8),
        width: int = 512,
        depth: int = 12,
        heads: int = 8,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        pt, ph, pw = patch_size = tuple(patch_size)
        if num_frames % pt or image_size % ph or image_size % pw:
            raise ValueError(
                f"clip {num_frames}x{image_size}x{image_size} is not divisible by patch "
                f"{patch_size}"
            )
        self.input_shape = (in_channels, num_frames, image_size, image_size)
        self.patch_size = patch_size
        grid = (num_frames // pt, image_size // ph, image_size // pw)
        self.patch_embed = nn.Conv3d(in_channels, width, kernel_size=patch_size, stride=patch_size)
        self.register_buffer("patch_pos", sincos_3d(grid, width), persistent=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.transformer = TransformerStack(width, depth, heads, mlp_ratio)
        self.head = nn.Linear(width, 1)
        self.apply(init_weights)
        weight = self.patch_embed.weight
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        trunc_normal_(self.cls_token, std=0.02)

    def forward(self, video: Tensor) -> Tensor:
        """Scores clips.

        Args:
            video: `(B, C, T, H, W)` in [0, 1].

        Returns:
            Logits `(B,)`, high for real.
        """
        if tuple(video.shape[1:]) != self.input_shape:
            raise ValueError(
                f"expected video (B, {', '.join(map(str, self.input_shape))}), "
                f"got {tuple(video.shape)}"
            )
        tokens = self.patch_embed(video * 2 - 1).flatten(2).transpose(1, 2) + self.patch_pos
        tokens = torch.cat([self.cls_token.expand(video.shape[0], -1, -1), tokens], dim=1)
        return self.head(self.transformer(tokens)[:, 0]).squeeze(-1)


DiscriminatorFactory = Callable[[int, int, int, tuple[int, int, int]], Discriminator]
"""Builds the discriminator from the tokenizer's ``(num_frames, image_size, in_channels,
patch_size)``: in a YAML, ``class_path: adaptok.nn.Discriminator`` with only its own
``init_args`` (``width``, ``depth``, ``heads``, ``mlp_ratio``); in Python, e.g.
``functools.partial(Discriminator, width=64, depth=2, heads=4)``."""
