"""Token grids, budget totals and exact feasibility of a budget.

Every candidate length is ``lengths[0] + g * e_j`` with ``g`` the gcd of the differences
``lengths[j] - lengths[0]`` and ``e_j`` small non-negative integers ("units"). The solvers
work in units: a total of ``T`` tokens over ``n`` blocks is ``n * lengths[0] + g * U``.

A total is reachable EXACTLY (equality budgets) iff ``U`` is a sum of at most ``n`` parts
taken from ``{e_1, ..., e_{J-1}}`` (blocks at ``e_0 = 0`` fill the rest), i.e. iff the fewest
parts summing to ``U``, :func:`min_parts`, is at most ``n``. That is checked in closed form
for any ``n`` (see :func:`min_parts`), so an infeasible budget is refused before any solver
runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "InfeasibleBudgetError",
    "TokenGrid",
    "check_budget_values",
    "check_total",
    "is_reachable",
    "min_parts",
    "total_from_mean",
]

_UNREACHABLE = np.iinfo(np.int64).max // 4


class InfeasibleBudgetError(ValueError):
    """A token budget that no allocation can meet (the message states the feasible range)."""


@dataclass(frozen=True)
class TokenGrid:
    """Candidate lengths expressed on their integer grid.

    Attributes:
        lengths: (J,) strictly increasing positive token counts.
        base: ``lengths[0]``.
        step: gcd of ``lengths - lengths[0]`` (1 when J == 1).
        units: (J,) ``(lengths - base) // step``; ``units[0] == 0``.
    """

    lengths: np.ndarray
    base: int
    step: int
    units: np.ndarray

    @classmethod
    def from_lengths(cls, lengths: np.ndarray) -> TokenGrid:
        """Build the grid of validated (J,) int64 lengths."""
        offsets = lengths - lengths[0]
        step = int(np.gcd.reduce(offsets)) if len(lengths) > 1 else 1
        step = max(step, 1)
        return cls(lengths=lengths, base=int(lengths[0]), step=step, units=offsets // step)

    @property
    def max_units(self) -> int:
        """Units of the longest candidate length."""
        return int(self.units[-1])

    def to_units(self, total: int, num_blocks: int) -> int:
        """Units above the all-shortest allocation for a total of ``total`` tokens (floored)."""
        return (total - num_blocks * self.base) // self.step

    def to_tokens(self, units: int, num_blocks: int) -> int:
        """Tokens of an allocation ``units`` above the all-shortest one."""
        return num_blocks * self.base + self.step * units


def min_parts(targets: np.ndarray, parts: np.ndarray) -> np.ndarray:
    """Fewest positive parts (repetition allowed) summing to each target.

    Exact for any target size: with ``p`` the largest part, an optimal multiset never holds
    ``p`` or more parts smaller than ``p`` (among any ``p`` of them a non-empty sub-multiset
    has a sum divisible by ``p`` and could be swapped for fewer parts equal to ``p``), so its
    smaller parts sum to at most ``(p - 1) ** 2``. Hence for ``t > (p - 1) ** 2`` every
    optimum holds a ``p`` and ``f(t) = 1 + f(t - p)``; smaller targets come from a table
    (``O(p^3)`` to build: seconds at ``p = 511``). When the parts are exactly ``1..p`` (evenly
    spaced candidates, or every length free) ``f(t) = ceil(t / p)`` directly.

    Args:
        targets: (M,) non-negative integers.
        parts: (P,) distinct positive integers.

    Returns:
        (M,) int64 part counts; a huge value (> any block count) where unreachable.
    """
    targets = np.asarray(targets, dtype=np.int64)
    largest = int(parts.max())
    if parts.size == largest and np.array_equal(np.sort(parts), np.arange(1, largest + 1)):
        # parts 1..p (evenly spaced candidates, free lengths): ceil(t / p), no table needed
        return -(-targets // largest)
    table_size = (largest - 1) ** 2 + 1
    table = np.full(table_size, _UNREACHABLE, dtype=np.int64)
    table[0] = 0
    for value in range(1, table_size):
        usable = parts[parts <= value]
        if usable.size:
            table[value] = min(_UNREACHABLE, int(table[value - usable].min()) + 1)
    excess = np.maximum(targets - (table_size - 1), 0)
    hops = -(-excess // largest)
    return np.minimum(table[targets - hops * largest] + hops, _UNREACHABLE)


def is_reachable(totals: np.ndarray, num_blocks: np.ndarray | int, grid: TokenGrid) -> np.ndarray:
    """Whether each total can be met exactly by ``num_blocks`` blocks.

    Args:
        totals: (M,) token totals.
        num_blocks: scalar or (M,) block counts.
        grid: the candidate lengths.

    Returns:
        (M,) bool.
    """
    totals = np.asarray(totals, dtype=np.int64)
    count = np.broadcast_to(np.asarray(num_blocks, dtype=np.int64), totals.shape)
    offset = totals - count * grid.base
    in_range = (offset >= 0) & (offset <= count * grid.step * grid.max_units)
    on_grid = offset % grid.step == 0
    result = in_range & on_grid
    if grid.max_units == 0 or not result.any():
        return result
    parts = grid.units[1:]
    units = np.where(result, offset // grid.step, 0)
    return result & (min_parts(units, parts) <= count)


def check_budget_values(budget: object, lengths: np.ndarray | None = None) -> None:
    """Refuse a NaN or infinite budget (scalar or per-clip / per-block vector) in one line.

    Args:
        budget: Mean tokens per block (a number, or an array-like of them).
        lengths: Candidate lengths, to state the valid range in the message.

    Raises:
        InfeasibleBudgetError: Some value is NaN or infinite (or not a number).
    """
    try:
        values = np.asarray(budget, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InfeasibleBudgetError(f"budget {budget!r} is not a number") from error
    if np.all(np.isfinite(values)):
        return
    bad = values[~np.isfinite(values)].ravel()[0] if values.ndim else float(values)
    valid = "a finite number of tokens per block"
    if lengths is not None and len(lengths):
        valid = f"a mean in [{int(np.min(lengths))}, {int(np.max(lengths))}] tokens per block"
    raise InfeasibleBudgetError(f"budget {bad} is not a valid budget: give {valid}")


def total_from_mean(mean_tokens: float, num_blocks: int, equality: bool) -> int:
    """Total token budget of ``num_blocks`` blocks at ``mean_tokens`` per block.

    Raises:
        InfeasibleBudgetError: a NaN or infinite mean, or an equality budget whose total is
            not a whole number of tokens.
    """
    check_budget_values(mean_tokens)
    exact = mean_tokens * num_blocks
    nearest = round(exact)
    if abs(exact - nearest) <= 1e-9 * max(1.0, abs(exact)):
        return int(nearest)
    if equality:
        raise InfeasibleBudgetError(
            f"an equality budget of {mean_tokens} tokens per block over {num_blocks} blocks "
            f"is {exact} tokens, not a whole number"
        )
    return math.floor(exact)


def check_total(total: int, num_blocks: int, grid: TokenGrid, equality: bool) -> None:
    """Refuse a total budget that no allocation of ``num_blocks`` blocks can meet.

    Raises:
        InfeasibleBudgetError: with the feasible range of totals and of the mean per block
            (and, for an equality budget inside the range but off the reachable set, the
            nearest reachable totals).
    """
    low, high = num_blocks * int(grid.lengths[0]), num_blocks * int(grid.lengths[-1])
    relation = "==" if equality else "<="
    range_text = (
        f"feasible totals for {num_blocks} blocks with lengths {grid.lengths.tolist()} lie in "
        f"[{low}, {high}] tokens (mean {grid.lengths[0]}..{grid.lengths[-1]} per block)"
    )
    if total < low or (equality and total > high):
        raise InfeasibleBudgetError(
            f"budget sum {relation} {total} tokens "
            f"(mean {total / num_blocks:.4g} per block) is infeasible: {range_text}"
        )
    if not equality or bool(is_reachable(np.array([total]), num_blocks, grid)[0]):
        return
    below, above = _nearest_reachable(total, num_blocks, grid)
    raise InfeasibleBudgetError(
        f"budget sum == {total} tokens cannot be met exactly: {range_text}, but exact "
        f"totals must be reachable sums of the lengths; nearest reachable: {below} and {above}"
    )


def _nearest_reachable(total: int, num_blocks: int, grid: TokenGrid) -> tuple[int, int]:
    """Closest reachable totals at or below and at or above ``total`` (inside the range)."""
    # Unreachable totals sit within (max_units - 1) ** 2 units of either end of the range,
    # so a window of that many grid steps each side always holds a reachable total.
    reach = (grid.max_units**2 + 1) * grid.step
    below = np.arange(total, total - reach - 1, -1)
    above = np.arange(total, total + reach + 1)
    low, high = num_blocks * int(grid.lengths[0]), num_blocks * int(grid.lengths[-1])
    below, above = below[below >= low], above[above <= high]
    below_hits = below[is_reachable(below, num_blocks, grid)]
    above_hits = above[is_reachable(above, num_blocks, grid)]
    # The ends of the range are always reachable (all shortest, all longest).
    return (
        int(below_hits[0]) if below_hits.size else low,
        int(above_hits[0]) if above_hits.size else high,
    )
