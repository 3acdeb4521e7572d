"""The official code's per-block table and its rounding of block totals."""

from __future__ import annotations

import numpy as np
import pytest

from adaptok.alloc import REFERENCE_BLOCK_TABLE, StreamingAllocator, block_targets
from adaptok.alloc.block_table import floor_block_total
from adaptok.alloc.feasibility import TokenGrid, is_reachable

LENGTHS = np.arange(64, 513, 64)
GRID = TokenGrid.from_lengths(LENGTHS)


def test_reference_table_at_paper_scale() -> None:
    """docs/METHOD.md section 4: 1024 tokens per clip -> [456, 242, 172, 150]; 512 -> [284, 80, 72, 72]."""
    assert block_targets(0.5, 512, 4).tolist() == [456, 242, 172, 150]
    assert block_targets(0.25, 512, 4).tolist() == [284, 80, 72, 72]
    assert block_targets(1.0, 512, 4).tolist() == [512] * 4
    assert len(REFERENCE_BLOCK_TABLE) == 8
    with pytest.raises(ValueError, match="no row"):
        block_targets(0.3, 512, 4)
    with pytest.raises(ValueError, match="has 4 entries"):
        block_targets(0.5, 512, 3)
    with pytest.raises(ValueError, match="fractions in"):
        block_targets(0.5, 512, 2, {0.5: [1.5, 0.5]})
    assert block_targets(0.5, 16, 2, {0.5: [0.75, 0.25]}).tolist() == [12, 4]


@pytest.mark.parametrize("clips", [1, 3, 64])
@pytest.mark.parametrize("target", [456, 242, 172, 150, 100, 64, 512])
def test_block_totals_round_down_like_the_official_ilp(clips: int, target: int) -> None:
    """Official solve_ilp_min: index sum B * target // step - B, lengths (index + 1) * step."""
    official = ((clips * target // 64 - clips) + clips) * 64
    assert floor_block_total(target, clips, GRID) == max(official, clips * 64)


def test_block_totals_stay_reachable_on_an_irregular_grid() -> None:
    grid = TokenGrid.from_lengths(np.array([2, 5, 9]))  # units 0, 3, 7
    for clips in (1, 2, 3):
        for mean in np.linspace(2, 9, 29):
            total = floor_block_total(float(mean), clips, grid)
            assert total <= max(np.floor(clips * mean + 1e-9), 2 * clips)
            assert is_reachable(np.array([total]), clips, grid)[0]


def test_rounded_streaming_spends_each_block_total() -> None:
    rng = np.random.default_rng(0)
    costs = np.sort(rng.random((64, 4, 8)), axis=-1)[..., ::-1].copy()
    allocator = StreamingAllocator(LENGTHS, block_budgets=[456, 242, 172, 150], round_budgets=True)
    lengths = np.stack([allocator.step(costs[:, b]) for b in range(4)], axis=1)
    assert lengths.sum(0).tolist() == [64 * 456, 64 * 242, 64 * 172, 64 * 150]
    odd = StreamingAllocator(LENGTHS, block_budgets=[456, 242, 172, 150], round_budgets=True)
    lengths = np.stack([odd.step(costs[:3, b]) for b in range(4)], axis=1)
    assert lengths.sum(0).tolist() == [1344, 704, 512, 448]  # floor(3 x t / 64) x 64
    strict = StreamingAllocator(LENGTHS, block_budgets=[456.5, 242, 172, 150])
    with pytest.raises(ValueError, match="not a whole number|cannot be met"):
        strict.step(costs[:3, 0])
