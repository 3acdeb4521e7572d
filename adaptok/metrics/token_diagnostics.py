"""What a tokenizer's codes say, and what trivial reconstructions reach on the same clips.

A collapsed tokenizer can look healthy in batch-level statistics: the share of the codebook
used over a whole batch stays high while the tokens of any one block repeat two or three
codes. The diagnostics here measure each block on its own (`docs/tokenizer_collapse.md`):

* distinct codes per block: how many different codes the M tokens of one block take
  (1 = every token says the same; M = all differ), averaged over blocks;
* per-position perplexity: for each token position j of a block, `exp(entropy)` of the code
  at j over the clips (1 = position j always holds the same code, whatever the video);
* codebook perplexity: `exp(entropy)` of the code histogram over every token (the
  batch-level statistic, kept for comparison).

Baselines (`block_mean_baseline`): each block (its `frames_per_block` frames) replaced by the
spatial mean of each channel over a `grid x grid` partition of the frame and the block's
frames. `grid=1` is the block's mean colour (3 numbers per block); a tokenizer whose M
tokens do not beat it carries no more than the colour.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "CodeDiagnostics",
    "block_mean_baseline",
    "code_diagnostics",
    "distinct_codes_per_block",
]


@dataclass(frozen=True)
class CodeDiagnostics:
    """Summary of `code_diagnostics`.

    Attributes:
        distinct_per_block: Mean over clips and blocks of the number of distinct codes among
            a block's M tokens, in [1, M].
        position_perplexity: `(M,)` perplexity of the code at each in-block position over
            clips and blocks, each in [1, min(codebook_size, clips * blocks)].
        codebook_perplexity: Perplexity of the code histogram over every token.
        codes_used: Number of distinct codes over every token.
    """

    distinct_per_block: float
    position_perplexity: Tensor
    codebook_perplexity: float
    codes_used: int


def distinct_codes_per_block(codes: Tensor, tokens_per_block: int) -> Tensor:
    """Number of distinct codes among each block's tokens.

    Args:
        codes: Long `(B, K * M)` codes (all M tokens of every block).
        tokens_per_block: M.

    Returns:
        Long `(B, K)`, values in [1, M].

    Raises:
        ValueError: When the token count is not a multiple of M.
    """
    if codes.dim() != 2 or codes.shape[1] % tokens_per_block != 0:
        raise ValueError(
            f"expected codes (B, K * {tokens_per_block}), got shape {tuple(codes.shape)}"
        )
    blocks = codes.reshape(-1, tokens_per_block).sort(dim=-1).values
    changes = (blocks[:, 1:] != blocks[:, :-1]).sum(dim=-1) + 1
    return changes.view(codes.shape[0], codes.shape[1] // tokens_per_block)


def _perplexity(counts: Tensor) -> Tensor:
    """`exp(entropy)` of histograms `(..., V)` (natural log); empty rows give 1."""
    probs = counts.float() / counts.sum(dim=-1, keepdim=True).clamp_min(1)
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(dim=-1)
    return entropy.exp()


def code_diagnostics(codes: Tensor, tokens_per_block: int, codebook_size: int) -> CodeDiagnostics:
    """Distinct codes per block, per-position and codebook perplexity of a set of clips.

    Args:
        codes: Long `(B, K * M)` codes in [0, codebook_size).
        tokens_per_block: M.
        codebook_size: V.

    Returns:
        A `CodeDiagnostics`.

    Raises:
        ValueError: On a wrong shape or a code outside [0, V).
    """
    distinct = distinct_codes_per_block(codes, tokens_per_block)
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= codebook_size):
        raise ValueError(
            f"codes must lie in [0, {codebook_size}), got {codes.min()}..{codes.max()}"
        )
    by_position = codes.reshape(-1, tokens_per_block).t()  # (M, B * K)
    one_hot = torch.zeros(tokens_per_block, codebook_size, device=codes.device)
    one_hot.scatter_add_(1, by_position, torch.ones_like(by_position, dtype=one_hot.dtype))
    return CodeDiagnostics(
        distinct_per_block=float(distinct.float().mean()),
        position_perplexity=_perplexity(one_hot).cpu(),
        codebook_perplexity=float(_perplexity(one_hot.sum(0))),
        codes_used=int((one_hot.sum(0) > 0).sum()),
    )


def block_mean_baseline(video: Tensor, frames_per_block: int, grid: int = 1) -> Tensor:
    """Each temporal block replaced by its per-channel mean over `grid x grid` cells.

    Args:
        video: `(B, C, T, H, W)`, any value range; T a multiple of `frames_per_block`,
            H and W multiples of `grid`.
        frames_per_block: Frames per block (the tokenizer's).
        grid: Cells per side; 1 = the block's mean colour (C numbers per block).

    Returns:
        `(B, C, T, H, W)`, constant over each block's frames within each cell.

    Raises:
        ValueError: When the sizes are not multiples of the block or the grid.
    """
    batch, channels, frames, height, width = video.shape
    if frames % frames_per_block or height % grid or width % grid:
        raise ValueError(
            f"video {tuple(video.shape)} is not divisible into blocks of {frames_per_block} "
            f"frames and a {grid}x{grid} grid"
        )
    cells = video.reshape(
        batch,
        channels,
        frames // frames_per_block,
        frames_per_block,
        grid,
        height // grid,
        grid,
        width // grid,
    )
    means = cells.mean(dim=(3, 5, 7), keepdim=True)
    return means.expand_as(cells).reshape(video.shape)
