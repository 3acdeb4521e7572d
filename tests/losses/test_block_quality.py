"""measure_cost_table: every block's measured costs, each given the blocks before it."""

from __future__ import annotations

from pathlib import Path

import torch

from adaptok.losses import BlockQuality, measure_block_costs, measure_cost_table
from modules.loading import load_frozen_tokenizer


def test_the_table_is_each_blocks_costs_given_only_the_blocks_before_it(
    tokenizer_ckpt: Path,
) -> None:
    tokenizer = load_frozen_tokenizer(tokenizer_ckpt)
    quality = BlockQuality("mse")
    generator = torch.Generator().manual_seed(0)
    video = torch.rand(3, 3, tokenizer.num_frames, 32, 32, generator=generator)
    codes = tokenizer.encode(video).codes
    k, m = tokenizer.num_blocks, tokenizer.tokens_per_block
    candidates = [m // 4, m // 2, m]
    context = torch.stack(
        [
            torch.full((k,), m),
            torch.arange(k) % m + 1,
            torch.randint(1, m + 1, (k,), generator=generator),
        ]
    )
    table = measure_cost_table(tokenizer, quality, video, codes, context, candidates)
    assert table.shape == (3, k, len(candidates))
    for block in range(k):
        blocks = torch.full((3,), block)
        expected = measure_block_costs(
            tokenizer, quality, video, codes, context, blocks, candidates
        )
        torch.testing.assert_close(table[:, block], expected)
        # block-causal: what the blocks after it keep changes nothing of its row
        later_changed = context.clone()
        later_changed[:, block + 1 :] = 1
        again = measure_cost_table(tokenizer, quality, video, codes, later_changed, candidates)
        torch.testing.assert_close(again[:, block], table[:, block])
    # what the blocks before it keep does change it
    earlier_changed = context.clone()
    earlier_changed[:, : k - 1] = 1
    again = measure_cost_table(tokenizer, quality, video, codes, earlier_changed, candidates)
    assert not torch.allclose(again[0, -1], table[0, -1])


def test_decoding_only_the_blocks_up_to_the_target_changes_no_cost(tokenizer_ckpt: Path) -> None:
    """The measurement decodes a prefix of the clip; the full decode must give the same costs."""
    tokenizer = load_frozen_tokenizer(tokenizer_ckpt)
    quality = BlockQuality("mse")
    generator = torch.Generator().manual_seed(1)
    video = torch.rand(2, 3, tokenizer.num_frames, 32, 32, generator=generator)
    codes = tokenizer.encode(video).codes
    k, m, f = tokenizer.num_blocks, tokenizer.tokens_per_block, tokenizer.frames_per_block
    context = torch.randint(1, m + 1, (2, k), generator=generator)
    table = measure_cost_table(tokenizer, quality, video, codes, context, [1, m])
    for block in range(k):
        for column, length in enumerate([1, m]):
            lengths = context.clone()
            lengths[:, block] = length
            whole = tokenizer.decode(codes, lengths)  # every block decoded
            frames = slice(block * f, (block + 1) * f)
            expected = quality(video[:, :, frames], whole[:, :, frames])
            torch.testing.assert_close(table[:, block, column], expected, rtol=1e-4, atol=1e-6)
