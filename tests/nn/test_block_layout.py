"""Block-sparse layouts: their patterns equal the dense masks, and attention by groups equals
dense masked attention (fp32, within 1e-5)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from adaptok.nn.block_layout import (
    AttentionGroup,
    BlockLayout,
    decoder_layout,
    encoder_layout,
    merge_spans,
    scorer_layout,
    scorer_token_spans,
    take_spans,
)
from adaptok.nn.masks import decoder_key_keep, decoder_mask, encoder_mask, with_key_padding
from adaptok.nn.tail_drop import keep_mask
from adaptok.nn.transformer import block_sparse_attention

CPU = torch.device("cpu")
K, P, M = 3, 2, 4


def test_merge_and_take_spans() -> None:
    assert merge_spans([(0, 2), (2, 5), (5, 5), (7, 9)]) == ((0, 5), (7, 9))
    x = torch.arange(10)
    assert take_spans(x, ((0, 10),), 0) is x
    assert take_spans(x, ((2, 4), (7, 9)), 0).tolist() == [2, 3, 7, 8]


def test_encoder_layout_equals_encoder_mask() -> None:
    mask = encoder_mask(K, P, M, CPU)
    layout = encoder_layout(K, P, M)
    assert layout.is_full and torch.equal(layout.dense_mask(), mask)
    latent_rows = encoder_layout(K, P, M, latents_only=True)
    rows = torch.cat([torch.arange(b * (P + M) + P, (b + 1) * (P + M)) for b in range(K)])
    assert torch.equal(latent_rows.dense_mask(), mask[rows])
    # 6 of 9 block pairs at K = 3.
    assert layout.pairs() * 9 == mask.numel() * 6


def test_streaming_layout_is_the_full_layout_row_block() -> None:
    """Block b pushed after b cached blocks attends exactly what row-block b of the full
    layout attends (same keys, no mask)."""
    full = encoder_layout(K, P, M).dense_mask()
    for block in range(K):
        step = encoder_layout(1, P, M, first_block=block)
        rows = slice(block * (P + M), (block + 1) * (P + M))
        assert torch.equal(step.dense_mask(), full[rows, : (block + 1) * (P + M)])


def _packed_to_dense(lengths: list[list[int]]) -> list[torch.Tensor]:
    """Per sample: the dense decoder position of each packed decoder token."""
    out = []
    for row in lengths:
        latents = [b * M + j for b, n in enumerate(row) for j in range(n)]
        out.append(torch.tensor(latents + list(range(K * M, K * M + K * P))))
    return out


@pytest.mark.parametrize("lengths", [[[1, 4, 2]], [[4, 4, 4]], [[1, 4, 2], [3, 1, 4], [4, 4, 4]]])
def test_decoder_layout_equals_masked_decoder(lengths: list[list[int]]) -> None:
    """On the kept tokens, the packed layout admits exactly the pairs of the dense decoder
    mask with dropped latents removed from the keys; samples never see each other."""
    rows = tuple(tuple(row) for row in lengths)
    layout = decoder_layout(rows, P)
    assert layout.is_full
    packed = layout.dense_mask()
    keep = keep_mask(torch.tensor(lengths), M)
    dense = with_key_padding(decoder_mask(K, P, M, CPU), decoder_key_keep(keep, K * P))
    offset = 0
    for sample, positions in enumerate(_packed_to_dense(lengths)):
        block = slice(offset, offset + len(positions))
        expected = dense[sample, 0][positions][:, positions]
        assert torch.equal(packed[block, block], expected)
        assert not packed[block].sum() - packed[block, block].sum()  # no cross-sample keys
        offset += len(positions)
    patch_rows = decoder_layout(rows, P, patches_only=True)
    starts = torch.tensor([0] + [sum(row) + K * P for row in lengths]).cumsum(0)
    keep_rows = torch.cat(
        [torch.arange(K * P) + start + sum(row) for start, row in zip(starts, lengths)]
    )
    assert torch.equal(patch_rows.dense_mask(), packed[keep_rows])


def test_scorer_layout_hides_dropped_context() -> None:
    """Context (1, 2, 0), K=3, M=4: the sequence is 12 full tokens, a 1-token copy of block 0
    (row 12) and a 2-token copy of block 1 (rows 13-14); the copies see only kept tokens."""
    assert scorer_token_spans((1, 2, 0), K, M) == ((0, 12), (0, 1), (4, 6))
    assert scorer_token_spans((4, 0, 3), K, M) == ((0, 12),)  # whole, empty, last: no copy
    layout = scorer_layout(((1, 2, 0),), K, M)
    keys = {  # row -> keys it attends
        **{r: [0, 1, 2, 3] for r in range(0, 4)},
        **{r: [12, 4, 5, 6, 7] for r in range(4, 8)},
        **{r: [12, 13, 14, 8, 9, 10, 11] for r in range(8, 12)},
        12: [12],
        13: [12, 13, 14],
        14: [12, 13, 14],
    }
    expected = torch.zeros(15, 15, dtype=torch.bool)
    for row, columns in keys.items():
        expected[row, columns] = True
    assert layout.is_full and torch.equal(layout.dense_mask(), expected)
    readout = scorer_layout(((1, 2, 0),), K, M, (1, 3))
    rows = torch.tensor([b * M + s for b in range(K) for s in (1, 3)])
    assert torch.equal(readout.dense_mask(), expected[rows])
    whole = scorer_layout(None, K, M)
    assert whole == scorer_layout(((4, 4, 4),), K, M)
    assert torch.equal(whole.dense_mask(), encoder_mask(K, 0, M, CPU))


def test_invalid_layouts_are_refused() -> None:
    with pytest.raises(ValueError, match="two groups"):
        BlockLayout(
            4, 4, (AttentionGroup(((0, 3),), ((0, 4),)), AttentionGroup(((2, 4),), ((0, 4),)))
        )
    with pytest.raises(ValueError, match="outside"):
        BlockLayout(4, 4, (AttentionGroup(((0, 4),), ((0, 5),)),))
    with pytest.raises(ValueError, match="without queries"):
        BlockLayout(4, 4, (AttentionGroup((), ((0, 4),)),))


@pytest.mark.parametrize(
    "layout",
    [
        encoder_layout(K, P, M),
        encoder_layout(K, P, M, latents_only=True),
        decoder_layout(((1, 4, 2), (4, 4, 4)), P),
        decoder_layout(((1, 4, 2), (4, 4, 4)), P, patches_only=True),
        scorer_layout(((1, 0, 4),), K, M, (0, 3)),
    ],
)
def test_block_sparse_attention_equals_dense_masked(layout: BlockLayout) -> None:
    generator = torch.Generator().manual_seed(0)
    shape = (2, 3, layout.num_queries, 8)
    query, key, value = (torch.randn(shape, generator=generator) for _ in range(3))
    rows = take_spans(query, layout.query_spans, 2)
    fast = block_sparse_attention(rows, key, value, layout)
    dense = F.scaled_dot_product_attention(rows, key, value, attn_mask=layout.dense_mask())
    assert fast.shape == dense.shape == (2, 3, layout.num_outputs, 8)
    torch.testing.assert_close(fast, dense, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="layout expects"):
        block_sparse_attention(rows[:, :, 1:], key, value, layout)
