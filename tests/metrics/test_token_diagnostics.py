"""Per-block code diagnostics and block-mean baselines on hand-made inputs with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from adaptok.metrics.frame_quality import psnr_per_video
from adaptok.metrics.token_diagnostics import (
    block_mean_baseline,
    code_diagnostics,
    distinct_codes_per_block,
)


def test_distinct_codes_count_each_block_on_its_own() -> None:
    # Two clips, two blocks of 4 tokens. Over the batch all 8 codes are used, yet the first
    # clip's blocks each repeat one code: batch usage would call this healthy.
    codes = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1], [2, 3, 4, 5, 6, 7, 6, 7]])
    assert distinct_codes_per_block(codes, 4).tolist() == [[1, 1], [4, 2]]
    stats = code_diagnostics(codes, 4, codebook_size=8)
    assert stats.distinct_per_block == pytest.approx((1 + 1 + 4 + 2) / 4)
    assert stats.codes_used == 8


def test_position_perplexity_is_one_when_a_position_never_changes() -> None:
    # Position 0 always holds code 3; position 1 cycles through 4 codes evenly.
    codes = torch.tensor([[3, 0], [3, 1], [3, 2], [3, 3]])
    stats = code_diagnostics(codes, 2, codebook_size=4)
    assert stats.position_perplexity.tolist() == pytest.approx([1.0, 4.0])
    # Codes over every token: 3 five times, 0, 1, 2 once each.
    probs = torch.tensor([1, 1, 1, 5]) / 8
    assert stats.codebook_perplexity == pytest.approx(math.exp(-(probs * probs.log()).sum()))


def test_diagnostics_refuse_bad_shapes_and_codes() -> None:
    with pytest.raises(ValueError, match="expected codes"):
        distinct_codes_per_block(torch.zeros(2, 5, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="codes must lie"):
        code_diagnostics(torch.full((1, 4), 9), 4, codebook_size=8)


def test_mean_colour_baseline_reproduces_blockwise_constant_video_exactly() -> None:
    colours = torch.rand(2, 3, 4)  # (B, C, K): one colour per block
    video = colours[..., None, None, None].expand(2, 3, 4, 4, 8, 8).reshape(2, 3, 16, 8, 8)
    assert torch.allclose(block_mean_baseline(video, 4), video)
    # A baseline with one block per clip cannot follow the colour changes.
    assert psnr_per_video(video, block_mean_baseline(video, 16)).max() < 100


def test_grid_baseline_keeps_quadrants_and_averages_inside_them() -> None:
    video = torch.zeros(1, 1, 4, 4, 4)
    video[..., :2, 2:] = 1.0  # top-right quadrant white in every frame
    video[..., 3, 3] = 0.5  # one pixel inside the bottom-right quadrant
    grid2 = block_mean_baseline(video, 4, grid=2)
    assert torch.all(grid2[..., :2, 2:] == 1.0)
    assert torch.allclose(grid2[..., 2:, 2:], torch.full((1, 1, 4, 2, 2), 0.125))
    assert torch.all(block_mean_baseline(video, 4, grid=1) == video.mean())
    with pytest.raises(ValueError, match="not divisible"):
        block_mean_baseline(video, 3)
