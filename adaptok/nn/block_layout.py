"""Block-sparse attention layouts: which query spans attend which key spans, with no mask.

A block-causal mask (docs/METHOD.md section 1: encoder, decoder; section 3: scorer) is a
union of rectangles: "the queries of block b see the keys of blocks 0..b". A `BlockLayout`
lists those rectangles as groups, each a set of query spans and a set of key spans that
attend fully. The attention of a group is then one unmasked `scaled_dot_product_attention`
call on the gathered spans, and the work is the admitted pairs only (10 of 16 block pairs at
K = 4 in the encoder), instead of a dense masked call over all pairs.

Coordinates: query spans index the sequence of queries, key spans the sequence of keys. Without
a KV cache both are the layer's input; with a cache (streaming), keys are the cached tokens
followed by the new ones. Queries of the groups are gathered in group order, so the attention
output holds the rows of `query_spans` in that order. A layout whose query spans tile
`[0, length)` in order ("full") keeps every row; otherwise it selects rows, which is how the
last layer of a stack computes only the rows that are read out (the encoder's latents, the
decoder's patch queries, the scorer's read-out slots).

Packed batches: when samples need different layouts (per-sample token lengths), the batch is
flattened into one sequence and every sample gets its own groups (`offset` argument of the
builders); the caller keeps track of which rows belong to which sample.

`dense_mask()` converts a layout back to the boolean mask (True = may attend), the oracle of
the tests; `adaptok.nn.masks` builds the same masks directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "AttentionGroup",
    "AttentionImpl",
    "BlockLayout",
    "Span",
    "check_attention",
    "decoder_layout",
    "encoder_layout",
    "merge_spans",
    "scorer_layout",
    "scorer_token_spans",
    "take_spans",
]

Span = tuple[int, int]
"""Half-open index range `[start, stop)` along the sequence."""

AttentionImpl = Literal["blockwise", "dense"]
"""How a block-causal network computes attention: by layout groups, or dense and masked."""


def check_attention(attention: str) -> None:
    """Raises ValueError unless `attention` is "blockwise" or "dense"."""
    if attention not in ("blockwise", "dense"):
        raise ValueError(f"attention must be 'blockwise' or 'dense', got {attention!r}")


def merge_spans(spans: Sequence[Span]) -> tuple[Span, ...]:
    """Drops empty spans and joins spans that touch (`a.stop == b.start`), keeping the order."""
    merged: list[Span] = []
    for start, stop in spans:
        if stop <= start:
            continue
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], stop)
        else:
            merged.append((start, stop))
    return tuple(merged)


def take_spans(x: Tensor, spans: tuple[Span, ...], dim: int) -> Tensor:
    """Gathers spans of `x` along `dim`, in order; a view when there is a single span.

    Args:
        x: Any tensor.
        spans: Non-empty spans (as produced by `merge_spans`).
        dim: Dimension the spans index.

    Returns:
        `x` restricted to the spans along `dim` (total length = sum of the span lengths).
    """
    if len(spans) == 1:
        start, stop = spans[0]
        if start == 0 and stop == x.shape[dim]:
            return x
        return x.narrow(dim, start, stop - start)
    return torch.cat([x.narrow(dim, start, stop - start) for start, stop in spans], dim=dim)


@dataclass(frozen=True)
class AttentionGroup:
    """Queries that attend exactly the same keys, fully.

    Attributes:
        queries: Query spans (merged, non-empty).
        keys: Key spans (merged, non-empty), in the order the keys are concatenated.
    """

    queries: tuple[Span, ...]
    keys: tuple[Span, ...]

    @property
    def num_queries(self) -> int:
        """Number of query rows of the group."""
        return sum(stop - start for start, stop in self.queries)


@dataclass(frozen=True)
class BlockLayout:
    """A block-sparse attention pattern as a list of unmasked groups.

    Args:
        num_queries: Length of the query sequence the spans index.
        num_keys: Length of the key sequence the spans index.
        groups: The groups; their query spans must not overlap.

    Raises:
        ValueError: On spans out of range, empty groups or overlapping queries.
    """

    num_queries: int
    num_keys: int
    groups: tuple[AttentionGroup, ...]

    def __post_init__(self) -> None:
        seen = torch.zeros(self.num_queries, dtype=torch.bool)
        for group in self.groups:
            if not group.queries or not group.keys:
                raise ValueError(f"attention group without queries or keys: {group}")
            for start, stop in group.keys:
                if not 0 <= start < stop <= self.num_keys:
                    raise ValueError(f"key span {(start, stop)} outside [0, {self.num_keys})")
            for start, stop in group.queries:
                if not 0 <= start < stop <= self.num_queries:
                    raise ValueError(f"query span {(start, stop)} outside [0, {self.num_queries})")
                if bool(seen[start:stop].any()):
                    raise ValueError(f"query span {(start, stop)} belongs to two groups")
                seen[start:stop] = True

    @cached_property
    def query_spans(self) -> tuple[Span, ...]:
        """Query spans of all groups in group order (the rows of the attention output)."""
        return merge_spans([span for group in self.groups for span in group.queries])

    @cached_property
    def num_outputs(self) -> int:
        """Rows of the attention output (sum of the query span lengths)."""
        return sum(group.num_queries for group in self.groups)

    @cached_property
    def is_full(self) -> bool:
        """True when the output keeps every query row in sequence order."""
        return self.query_spans == ((0, self.num_queries),)

    def pairs(self) -> int:
        """Number of (query, key) pairs computed: the attention work of the layout."""
        return sum(
            group.num_queries * sum(stop - start for start, stop in group.keys)
            for group in self.groups
        )

    def dense_mask(self) -> Tensor:
        """The same pattern as a mask, for dense attention and tests.

        Returns:
            Bool `(num_outputs, num_keys)`: row r (the r-th output row) is True at the keys
            its group attends.
        """
        mask = torch.zeros(self.num_outputs, self.num_keys, dtype=torch.bool)
        row = 0
        for group in self.groups:
            rows = slice(row, row + group.num_queries)
            for start, stop in group.keys:
                mask[rows, start:stop] = True
            row += group.num_queries
        return mask


@lru_cache(maxsize=64)
def encoder_layout(
    num_blocks: int,
    patches_per_block: int,
    tokens_per_block: int,
    latents_only: bool = False,
    first_block: int = 0,
) -> BlockLayout:
    """Block-causal layout of the encoder's interleaved sequence (docs/METHOD.md section 1).

    The sequence is `[patches_0, latents_0, patches_1, latents_1, ...]`; the queries of block
    b attend every token of blocks 0..b. With `first_block > 0` (streaming with a KV cache of
    `first_block` blocks), the queries are the new blocks only and the keys are the cached
    blocks followed by the new ones.

    Args:
        num_blocks: Blocks in the query sequence.
        patches_per_block: P (0 for a latents-only sequence, as in the scorer).
        tokens_per_block: M.
        latents_only: Keep only the latent rows (the encoder's last layer).
        first_block: Blocks already in the KV cache.

    Returns:
        A cached `BlockLayout` (do not modify).
    """
    size = patches_per_block + tokens_per_block
    groups = []
    for block in range(num_blocks):
        first_query = block * size + (patches_per_block if latents_only else 0)
        keys = ((0, (first_block + block + 1) * size),)
        groups.append(AttentionGroup(((first_query, (block + 1) * size),), keys))
    return BlockLayout(num_blocks * size, (first_block + num_blocks) * size, tuple(groups))


@lru_cache(maxsize=64)
def decoder_layout(
    lengths: tuple[tuple[int, ...], ...], patches_per_block: int, patches_only: bool = False
) -> BlockLayout:
    """Block-causal layout of the decoder without the dropped latents (docs/METHOD.md section 1).

    Each sample's sequence is its kept latents, block by block (`lengths[s][b]` of block b),
    followed by its `K * P` patch queries; the samples' sequences are concatenated. Kept
    latents of block b attend the kept latents of blocks 0..b; patch queries of block b attend
    the kept latents of blocks 0..b and the patch queries of block b.

    Args:
        lengths: Kept tokens per block, one row per sample (all rows of equal length K);
            tuples, so that layouts are cached.
        patches_per_block: P.
        patches_only: Keep only the patch-query rows (the decoder's last layer).

    Returns:
        A cached `BlockLayout` (do not modify) over `sum_s (sum_b lengths[s][b] + K * P)` tokens.
    """
    groups = []
    offset = 0
    for row in lengths:
        num_latents = sum(row)
        patches = offset + num_latents
        end = offset
        for length in row:
            start, end = end, end + length
            if not patches_only:
                groups.append(AttentionGroup(((start, end),), ((offset, end),)))
        for block in range(len(row)):
            own = (patches + block * patches_per_block, patches + (block + 1) * patches_per_block)
            latents = offset + sum(row[: block + 1])
            groups.append(AttentionGroup((own,), merge_spans([(offset, latents), own])))
        offset = patches + len(row) * patches_per_block
    return BlockLayout(offset, offset, tuple(groups))


def scorer_token_spans(
    context_lengths: Sequence[int], num_blocks: int, tokens_per_block: int
) -> tuple[Span, ...]:
    """Spans of one sample's `K * M` scorer tokens that make up its `scorer_layout` sequence.

    The sequence is every block at full length (`[0, K * M)`), followed by a kept-prefix copy
    of each earlier block that the context truncates: block `j < K - 1` with
    `0 < context_lengths[j] < M` contributes `[j * M, j * M + context_lengths[j])`. A block kept
    whole needs no copy (its full tokens are its context), an empty one has none, and the
    last block is the context of no block.

    Args:
        context_lengths: K kept lengths of one sample.
        num_blocks: K.
        tokens_per_block: M.

    Returns:
        Spans into the sample's `K * M` tokens, in sequence order (gather with `take_spans`).
    """
    m = tokens_per_block
    copies = [
        (j * m, j * m + length)
        for j, length in enumerate(context_lengths[: num_blocks - 1])
        if 0 < length < m
    ]
    return ((0, num_blocks * m), *copies)


@lru_cache(maxsize=64)
def scorer_layout(
    context_lengths: tuple[tuple[int, ...], ...] | None,
    num_blocks: int,
    tokens_per_block: int,
    readout_slots: tuple[int, ...] | None = None,
) -> BlockLayout:
    """Block-causal layout of the scorer's latent sequence (docs/METHOD.md section 3).

    Block b is scored with all of its own M tokens and with every earlier block j kept at
    `context_lengths[s][j]` tokens, the dropped tail removed from both the rows and the
    columns of the attention (the official code's `decode_scorer` mask): a kept token of an
    earlier block never attends to its own block's dropped tail, so that tail cannot reach
    a later block through any number of layers.

    An earlier block then plays two parts, which one pass cannot share: scored, it attends to
    all of its tokens; as context, only to its kept prefix. Each sample's sequence is
    therefore the K full blocks followed by a kept-prefix copy of every truncated earlier
    block (`scorer_token_spans`). Full block b attends the contexts of blocks < b and itself;
    the copy of block j attends the contexts of blocks < j and itself. The context of block
    j is its copy, or the full block when it is kept whole (the two compute the same rows).
    This equals K masked passes of the official procedure, one per scored block.

    With per-sample context lengths the samples' sequences are concatenated.

    Args:
        context_lengths: One tuple of K kept lengths per sample, or None for all tokens (one
            sample's layout, shared by the whole batch).
        num_blocks: K.
        tokens_per_block: M.
        readout_slots: Keep only these positions of every full block (the scorer's last
            layer); the context copies are then not computed.

    Returns:
        A cached `BlockLayout` (do not modify).
    """
    m = tokens_per_block
    rows = [(m,) * num_blocks] if context_lengths is None else context_lengths
    groups = []
    offset = 0
    for row in rows:
        spans = scorer_token_spans(row, num_blocks, m)
        context: list[Span] = []  # the span of each block's context, by block
        copy_start = offset + num_blocks * m
        for block in range(num_blocks):
            length = row[block]
            if 0 < length < m and block < num_blocks - 1:
                context.append((copy_start, copy_start + length))
                copy_start += length
            else:
                full = offset + block * m
                context.append((full, full + min(length, m)))
        copy_groups = []
        for block in range(num_blocks):
            start = offset + block * m
            if readout_slots is None:
                queries = ((start, start + m),)
            else:
                queries = merge_spans([(start + slot, start + slot + 1) for slot in readout_slots])
            keys = merge_spans([*context[:block], (start, start + m)])
            groups.append(AttentionGroup(queries, keys))
            copy = context[block]
            if readout_slots is None and copy[0] >= offset + num_blocks * m:
                copy_groups.append(AttentionGroup((copy,), merge_spans(context[: block + 1])))
        groups += copy_groups
        offset += sum(stop - start for start, stop in spans)
    return BlockLayout(offset, offset, tuple(groups))
