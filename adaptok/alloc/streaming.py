"""Causal, block-by-block allocation for a caller that scores block b after fixing blocks < b.

Two ways to set the per-block budget:

* explicit ``block_budgets`` (mean tokens per block position, like the reference code's
  table ``[456, 242, 172, 150]``): step b solves the batch knapsack over the B clips' block b
  with ``B * block_budgets[b]`` tokens - identical to ``allocate(mode="batch")`` with the
  same (K,) budget array. With ``round_budgets`` a total that is not a whole reachable number
  of tokens is rounded down onto the candidate grid, as the official code does (the
  ``causal_table`` mode of ``adaptok.budget_planner``).
* data-driven (``mean_tokens``): a price per token ``lam`` (the Lagrange multiplier of the
  token budget) is carried over time. Each clip independently takes
  ``argmin_j cost[j] + lam * lengths[j]`` - so a clip's lengths do not depend on the other
  clips in its batch - and after every step ``lam`` moves up when the lengths the price asked
  for exceed the target mean and down when they fall short (integral control), which keeps
  the running mean on target. When ``num_blocks`` is known each clip also has a hard budget
  ``num_blocks * mean_tokens`` (``==`` or ``<=``): a length is only taken if the clip's
  remaining blocks can still meet it, and the last block takes what is left.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from adaptok.alloc.block_table import floor_block_total
from adaptok.alloc.feasibility import (
    TokenGrid,
    check_budget_values,
    check_total,
    is_reachable,
    total_from_mean,
)
from adaptok.alloc.inputs import as_costs, as_lengths
from adaptok.alloc.knapsack import solve_knapsacks
from adaptok.alloc.lagrangian import lp_price

__all__ = ["StreamingAllocator"]


class StreamingAllocator:
    """Allocate tokens block by block, using only the blocks seen so far.

    Args:
        lengths: (J,) candidate lengths, strictly increasing positive integers.
        mean_tokens: target mean tokens per block (data-driven price mode).
        block_budgets: (K,) mean tokens per block at each block position (explicit mode);
            exactly one of ``mean_tokens`` and ``block_budgets`` is given.
        num_blocks: blocks per clip (the length of ``block_budgets`` in explicit mode). In
            price mode it enables the hard per-clip budget; None = an open-ended stream.
        equality: budgets are met exactly (else at most).
        price: initial price per token; None estimates it from the first block scored (the
            LP price that spends ``mean_tokens`` on it).
        adapt_rate: price step per block, relative to a typical cost slope per token.
        solver: knapsack solver in explicit mode (``fast`` or ``mip``).
        time_limit: seconds for the MIP solver.
        round_budgets: explicit mode: round each block's total ``B * block_budgets[b]`` down
            to the largest total the B blocks can meet exactly (the official code's rounding)
            instead of refusing an equality total that is not a whole number.

    Example:
        >>> allocator = StreamingAllocator([64, 128, 192, 256], mean_tokens=128, num_blocks=4)
        >>> for b in range(4):  # doctest: +SKIP
        ...     block_lengths = allocator.step(score_block(b, fixed_lengths))
    """

    def __init__(
        self,
        lengths: Any,
        mean_tokens: float | None = None,
        *,
        block_budgets: Sequence[float] | None = None,
        num_blocks: int | None = None,
        equality: bool = True,
        price: float | None = None,
        adapt_rate: float = 0.1,
        solver: str = "fast",
        time_limit: float = 60.0,
        round_budgets: bool = False,
    ) -> None:
        if (mean_tokens is None) == (block_budgets is None):
            raise ValueError("give exactly one of mean_tokens and block_budgets")
        self.grid = TokenGrid.from_lengths(as_lengths(lengths))
        check_budget_values(
            mean_tokens if block_budgets is None else block_budgets, self.grid.lengths
        )
        self.mean_tokens = mean_tokens
        self.block_budgets = None if block_budgets is None else [float(b) for b in block_budgets]
        if self.block_budgets is not None:
            if num_blocks is not None and num_blocks != len(self.block_budgets):
                raise ValueError(f"num_blocks={num_blocks} != len(block_budgets)")
            num_blocks = len(self.block_budgets)
        self.num_blocks = num_blocks
        self.equality = equality
        self.price = price
        self.adapt_rate = adapt_rate
        self.solver = solver
        self.time_limit = time_limit
        self.round_budgets = round_budgets
        self.notes: list[str] = []
        self.tokens_allocated = 0
        self.blocks_allocated = 0
        self._price_scale: float | None = None
        self._block = 0
        self._spent: np.ndarray | None = None

    @property
    def running_mean(self) -> float:
        """Mean tokens per block over every block allocated so far (nan before any)."""
        return (
            self.tokens_allocated / self.blocks_allocated if self.blocks_allocated else float("nan")
        )

    def reset(self) -> None:
        """Start new clips (the learned price is kept)."""
        self._block = 0
        self._spent = None

    def step(self, block_costs: Any) -> np.ndarray:
        """Allocate the next block of every clip.

        When all ``num_blocks`` blocks of the current clips are allocated, new clips start.

        Args:
            block_costs: (B, J) predicted cost of each candidate length for block
                ``block_index`` of each clip (numpy or torch).

        Returns:
            (B,) int64 tokens for this block of each clip.
        """
        costs = as_costs(block_costs, 2, len(self.grid.lengths))
        if self.num_blocks is not None and self._block == self.num_blocks:
            self.reset()
        if self._spent is None:
            self._spent = np.zeros(costs.shape[0], dtype=np.int64)
            if self.mean_tokens is not None and self.num_blocks is not None:
                clip_total = total_from_mean(self.mean_tokens, self.num_blocks, self.equality)
                check_total(clip_total, self.num_blocks, self.grid, self.equality)
        elif costs.shape[0] != self._spent.shape[0]:
            raise ValueError(
                f"block {self._block} has {costs.shape[0]} clips, earlier blocks had {self._spent.shape[0]}"
            )
        if self.block_budgets is not None:
            choice = self._step_budgeted(costs)
        else:
            choice = self._step_priced(costs)
        chosen = self.grid.lengths[choice]
        self._spent += chosen
        self._block += 1
        self.tokens_allocated += int(chosen.sum())
        self.blocks_allocated += chosen.size
        return chosen

    def _step_budgeted(self, costs: np.ndarray) -> np.ndarray:
        """Batch knapsack over this block of every clip with the block position's budget."""
        mean = self.block_budgets[self._block]
        if self.round_budgets:
            total = floor_block_total(mean, costs.shape[0], self.grid)
        else:
            total = total_from_mean(mean, costs.shape[0], self.equality)
        solution = solve_knapsacks(
            costs[None], self.grid, np.array([total]), self.equality, self.solver, self.time_limit
        )
        self.notes.extend(solution.notes)
        return solution.choice[0]

    def _step_priced(self, costs: np.ndarray) -> np.ndarray:
        """Per-clip choice at the current price, kept within each clip's remaining budget."""
        lengths = self.grid.lengths
        span = float(lengths[-1] - lengths[0]) or 1.0
        if self.price is None or self._price_scale is None:
            self._price_scale = float(np.mean(np.ptp(costs, axis=1))) / span
        if self.price is None:
            self.price = self._first_price(costs)
        scores = costs + self.price * lengths
        wanted = np.argmin(scores, axis=1)
        if self.num_blocks is not None:
            feasible = self._keeps_budget_feasible(costs.shape[0])
            choice = np.argmin(np.where(feasible, scores, np.inf), axis=1)
        else:
            choice = wanted
        excess = (float(lengths[wanted].mean()) - self.mean_tokens) / span
        self.price = max(0.0, self.price + self.adapt_rate * self._price_scale * excess)
        return choice

    def _first_price(self, costs: np.ndarray) -> float:
        """LP price per token that spends ``mean_tokens`` per block on these blocks."""
        total = total_from_mean(self.mean_tokens, costs.shape[0], equality=False)
        units = min(
            max(self.grid.to_units(total, costs.shape[0]), 0), costs.shape[0] * self.grid.max_units
        )
        columns = np.ascontiguousarray(costs.T)
        return lp_price(columns, self.grid.units, units, equality=False) / self.grid.step

    def _keeps_budget_feasible(self, num_clips: int) -> np.ndarray:
        """(B, J) whether taking each length leaves each clip's budget reachable."""
        clip_total = total_from_mean(self.mean_tokens, self.num_blocks, self.equality)
        remaining = clip_total - self._spent[:, None] - self.grid.lengths[None, :]
        blocks_left = self.num_blocks - self._block - 1
        if self.equality:
            flat = is_reachable(remaining.ravel(), blocks_left, self.grid)
            return flat.reshape(num_clips, -1)
        return remaining >= blocks_left * int(self.grid.lengths[0])
