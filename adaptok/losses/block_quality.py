"""Per-block reconstruction cost: the scorer's training label and the oracle's criterion.

Every metric is turned into a *cost* (lower is better) so the allocator always minimises:
LPIPS and MSE as they are, PSNR and SSIM negated.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from adaptok.metrics.frame_quality import psnr_per_video, ssim_per_video

__all__ = [
    "BlockQuality",
    "QualityMetric",
    "measure_block_costs",
    "measure_cost_table",
    "select_block_frames",
]

QualityMetric = Literal["lpips", "psnr", "mse", "ssim"]


def select_block_frames(video: Tensor, blocks: Tensor, frames_per_block: int) -> Tensor:
    """Cut one temporal block per sample.

    Args:
        video: ``(B, C, T, H, W)``.
        blocks: ``(B,)`` block index per sample.
        frames_per_block: Frames per block.

    Returns:
        ``(B, C, frames_per_block, H, W)``.
    """
    offsets = torch.arange(frames_per_block, device=video.device)
    frame_index = blocks[:, None] * frames_per_block + offsets[None]  # (B, F)
    index = frame_index[:, None, :, None, None].expand(-1, video.shape[1], -1, *video.shape[-2:])
    return torch.gather(video, 2, index)


class BlockQuality(nn.Module):
    """Cost of a reconstructed block against the real one.

    Args:
        metric: ``lpips`` (default, as the paper), ``psnr``, ``mse`` or ``ssim``.
        perceptual: The LPIPS network (``adaptok.metrics.lpips.LPIPS``); needed for ``lpips``.
    """

    def __init__(
        self, metric: QualityMetric = "lpips", perceptual: nn.Module | None = None
    ) -> None:
        super().__init__()
        if metric == "lpips" and perceptual is None:
            raise ValueError("metric='lpips' needs the LPIPS network (perceptual=...)")
        self.metric = metric
        self.perceptual = perceptual

    @torch.no_grad()
    def forward(self, real: Tensor, recon: Tensor) -> Tensor:
        """Cost per clip.

        Args:
            real: ``(B, C, F, H, W)`` in [0, 1].
            recon: ``(B, C, F, H, W)`` reconstruction (clamped to [0, 1] here).

        Returns:
            ``(B,)`` cost, lower is better (frame-averaged).
        """
        if real.shape != recon.shape or real.dim() != 5:
            raise ValueError(
                f"expected two (B, C, F, H, W) tensors, got {tuple(real.shape)} and {tuple(recon.shape)}"
            )
        recon = recon.clamp(0, 1)
        if self.metric == "mse":
            return (real - recon).pow(2).flatten(1).mean(1)
        if self.metric == "psnr":
            return -psnr_per_video(real, recon)
        if self.metric == "ssim":
            return -ssim_per_video(real, recon)
        batch, channels, frames = real.shape[:3]
        as_frames = lambda v: v.transpose(1, 2).reshape(batch * frames, channels, *v.shape[-2:])  # noqa: E731
        assert self.perceptual is not None
        distance = self.perceptual(as_frames(real) * 2 - 1, as_frames(recon) * 2 - 1)
        return distance.view(batch, frames).mean(1)


@torch.no_grad()
def measure_block_costs(
    tokenizer: nn.Module,
    quality: BlockQuality,
    video: Tensor,
    codes: Tensor,
    context_lengths: Tensor,
    blocks: Tensor,
    candidates: list[int],
) -> Tensor:
    """Measured cost of block ``blocks[i]`` of clip ``i`` kept at every candidate length.

    The other blocks keep ``context_lengths``; thanks to the block-causal decoder only the
    blocks before the target matter, so only the blocks up to the batch's latest target are
    decoded (for the table of :func:`measure_cost_table`, 10 of 16 block decodes at K = 4).
    All candidates are decoded in one batch of ``J * B``.

    Args:
        tokenizer: An ``AdapTokTokenizer`` (``decode(codes, lengths)`` of the first K' blocks,
            ``frames_per_block``, ``tokens_per_block``).
        quality: The cost function.
        video: ``(B, C, T, H, W)`` real clips in [0, 1].
        codes: ``(B, N)`` their codes.
        context_lengths: ``(B, K)`` lengths of the other blocks.
        blocks: ``(B,)`` target block per clip.
        candidates: The ``J`` candidate lengths.

    Returns:
        ``(B, J)`` raw costs (lower is better).
    """
    batch = video.shape[0]
    num_candidates = len(candidates)
    decoded = int(blocks.max()) + 1  # the later blocks cannot change these (block-causal)
    codes = codes[:, : decoded * tokenizer.tokens_per_block]
    context_lengths = context_lengths[:, :decoded]
    candidate_tensor = torch.tensor(candidates, device=video.device)
    lengths = context_lengths.repeat(num_candidates, 1)  # (J*B, K), candidate-major
    rows = torch.arange(num_candidates * batch, device=video.device)
    lengths[rows, blocks.repeat(num_candidates)] = candidate_tensor.repeat_interleave(batch)
    recon = tokenizer.decode(codes.repeat(num_candidates, 1), lengths)
    frames = tokenizer.frames_per_block
    real_block = select_block_frames(video, blocks, frames).repeat(num_candidates, 1, 1, 1, 1)
    recon_block = select_block_frames(recon, blocks.repeat(num_candidates), frames)
    return quality(real_block, recon_block).view(num_candidates, batch).T


@torch.no_grad()
def measure_cost_table(
    tokenizer: nn.Module,
    quality: BlockQuality,
    video: Tensor,
    codes: Tensor,
    context_lengths: Tensor,
    candidates: list[int],
) -> Tensor:
    """Measured cost of every block of every clip at every candidate length.

    Block ``b``'s costs are measured with the blocks before it kept at
    ``context_lengths[:, :b]`` (the later blocks do not matter to the block-causal decoder):
    ``K`` rounds of :func:`measure_block_costs`, ``K x J`` decodes per clip.

    Args:
        tokenizer: An ``AdapTokTokenizer`` (``decode``, ``num_blocks``, ``frames_per_block``).
        quality: The cost function.
        video: ``(B, C, T, H, W)`` real clips in [0, 1].
        codes: ``(B, N)`` their codes.
        context_lengths: ``(B, K)`` lengths the blocks before each target keep (all ``M``:
            the oracle's table).
        candidates: The ``J`` candidate lengths.

    Returns:
        ``(B, K, J)`` raw costs (lower is better).
    """
    per_block = []
    for block in range(tokenizer.num_blocks):
        blocks = torch.full((video.shape[0],), block, dtype=torch.long, device=video.device)
        per_block.append(
            measure_block_costs(
                tokenizer, quality, video, codes, context_lengths, blocks, candidates
            )
        )
    return torch.stack(per_block, dim=1)
