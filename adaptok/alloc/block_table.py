"""Per-block token targets of the official IPAL procedure and its rounding of block totals.

The official code allocates block by block: block ``b`` of every clip in the batch shares a
total of ``B * target[b]`` tokens, the targets coming from a fixed table indexed by the mean
budget (``datasets/adap_priors.py`` in github.com/VisionXLab/AdapTok, ``ilp_t1024_b4`` for 4
blocks of 256 tokens, doubled for 512). Block 0, which has no past, gets the most. How the
table was derived is not stated (docs/METHOD.md section 4); it is reproduced here as
fractions of the tokens per block so that it applies to any block size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from adaptok.alloc.feasibility import TokenGrid, is_reachable

__all__ = ["REFERENCE_BLOCK_TABLE", "block_targets", "floor_block_total"]

_REFERENCE_TOKENS = 256  # the table's tokens per block (ilp_t1024_b4)
_REFERENCE_ROWS = {  # mean tokens per block -> target of each of the 4 blocks, out of 256
    32: (32, 32, 32, 32),
    64: (142, 40, 36, 36),
    96: (204, 70, 57, 51),
    128: (228, 121, 86, 75),
    160: (239, 171, 123, 105),
    192: (245, 209, 171, 141),
    224: (249, 234, 220, 192),
    256: (256, 256, 256, 256),
}

REFERENCE_BLOCK_TABLE: dict[float, tuple[float, ...]] = {
    mean / _REFERENCE_TOKENS: tuple(t / _REFERENCE_TOKENS for t in row)
    for mean, row in _REFERENCE_ROWS.items()
}
"""Budget fraction -> per-block target fractions (of the tokens per block), 4 blocks.

E.g. ``0.5 -> (0.890625, 0.47265625, 0.3359375, 0.29296875)``: at 512 tokens per block,
``[456, 242, 172, 150]`` (1020 tokens per clip for the 1024-token setting).
"""


def block_targets(
    budget: float,
    tokens_per_block: int,
    num_blocks: int,
    table: Mapping[float, Sequence[float]] | None = None,
) -> np.ndarray:
    """Mean tokens of each block position for a budget, read from a per-block table.

    Args:
        budget: Mean tokens per block as a fraction of ``tokens_per_block`` (a key of the table,
            matched to 1e-9).
        tokens_per_block: M.
        num_blocks: K; the table's rows must have K entries.
        table: Budget fraction -> K target fractions; None = :data:`REFERENCE_BLOCK_TABLE`.

    Returns:
        ``(K,)`` float64 target tokens per block position (fraction x M).

    Raises:
        ValueError: The budget is not in the table, a row has not K entries, or a target lies
            outside ``[0, 1]``.
    """
    rows = REFERENCE_BLOCK_TABLE if table is None else table
    for key, row in rows.items():
        if math.isclose(float(key), budget, rel_tol=0, abs_tol=1e-9):
            fractions = np.asarray([float(x) for x in row], dtype=np.float64)
            break
    else:
        known = ", ".join(f"{float(k):g}" for k in sorted(rows))
        raise ValueError(
            f"budget {budget:g} has no row in the per-block table (rows: {known}); add one "
            "(block_table: {fraction: [one fraction per block]})"
        )
    if fractions.shape != (num_blocks,):
        raise ValueError(
            f"the per-block table's row for {budget:g} has {fractions.size} entries, the "
            f"tokenizer {num_blocks} blocks"
        )
    if (fractions < 0).any() or (fractions > 1).any():
        raise ValueError(f"per-block targets must be fractions in [0, 1], got {fractions}")
    return fractions * tokens_per_block


def floor_block_total(mean_tokens: float, num_clips: int, grid: TokenGrid) -> int:
    """Token total of one block position over a batch, rounded down as the official code does.

    The official ILP asks the batch's block ``b`` for ``step * floor(B * target / step)``
    tokens (``solve_ilp_min``: index sum ``B * target // step - B``), i.e. the largest total
    on the candidate grid not above ``B * target``. Here: the largest total at or below
    ``floor(B * mean_tokens)`` that ``num_clips`` blocks can reach exactly, kept within the
    feasible range.

    Args:
        mean_tokens: Target mean tokens of the block position.
        num_clips: B, the blocks sharing the total.
        grid: The candidate lengths.

    Returns:
        A total that ``num_clips`` blocks can meet exactly.
    """
    low = num_clips * int(grid.lengths[0])
    high = num_clips * int(grid.lengths[-1])
    wanted = min(max(math.floor(num_clips * mean_tokens + 1e-9), low), high)
    total = grid.to_tokens(grid.to_units(wanted, num_clips), num_clips)
    while total > low and not bool(is_reachable(np.array([total]), num_clips, grid)[0]):
        total -= grid.step
    return total
