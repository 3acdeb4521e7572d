"""Exact fast solver of the multiple-choice knapsack: Lagrangian price + reduced-cost core DP.

Problem (one group of ``n`` blocks, candidate units ``e_j``, see ``feasibility.TokenGrid``)::

    minimise sum_k c[k, x_k]   s.t.   sum_k e[x_k] == U   (or <= U)

Why the answer is exact:

1. Price (:mod:`adaptok.alloc.lagrangian`). The LP relaxation's price ``lam*`` per unit
   (``>= 0`` for ``<=``) and the base allocation ``b``: each block's argmin of
   ``c + lam* e`` (a vertex of its lower convex hull), hull edges tied at ``lam*`` taken
   while they fit; ``b`` uses ``U - r`` units (slack ``r >= 0``, small).
2. Bound. With reduced costs ``d[k, j] = c[k, j] + lam* e_j - (c[k, b_k] + lam* e[b_k]) >= 0``
   every allocation x satisfies ``cost(x) = LB + sum_k d[k, x_k] + lam* (U - units(x))``
   where ``LB = cost(b) - lam* r`` is the Lagrangian lower bound. Feasible x has
   ``lam* (U - units(x)) >= 0``, so ``cost(x) - LB >= d[k, x_k]`` for every block.
3. Core. Given any feasible incumbent with gap ``G = cost - LB``, no better allocation uses
   a candidate with ``d > G`` (reduced-cost fixing). An exact DP over the blocks that still
   have a candidate with ``d <= t`` (all others stay at ``b``), with the state being the unit
   deviation from ``b``, is therefore optimal as soon as ``G <= t``. The solver starts with a
   threshold ``t`` that admits a few hundred candidates, solves the core DP, and, if the gap
   found exceeds ``t``, solves once more with ``t = G`` - then optimal by the argument above.

Cost: a few vectorised passes over the (n, J) costs plus the core DP. With realistic
(noisy, decreasing) costs the core holds a handful of blocks, so 1e6 blocks x 8 lengths take
well under a second. The core is NOT bounded in the worst case (e.g. thousands of blocks
with near-identical reduced costs and a positive gap): the DP then runs over all those
blocks, still exact but slower; with ``G == 0`` (ties that fill the budget exactly) it
stops at once. Small instances (and many small groups at once) go to the full DP of
:mod:`adaptok.alloc.dp` instead.
"""

from __future__ import annotations

import numpy as np

from adaptok.alloc.dp import choice_dtype, solve_knapsack_dp
from adaptok.alloc.lagrangian import lp_solution

__all__ = ["solve_fast", "solve_one_group"]

# Candidates admitted to the first core (before the gap is known).
_FIRST_CORE_SIZE = 64


def solve_fast(
    costs: np.ndarray, units: np.ndarray, budget_units: np.ndarray, equality: bool
) -> np.ndarray:
    """Exact multiple-choice knapsack for ``G`` independent groups.

    Args:
        costs: (G, n, J) float64 cost of each candidate length of each block.
        units: (J,) int64 candidate units (``units[0] == 0``, strictly increasing).
        budget_units: (G,) budget of each group in units above the all-shortest allocation,
            already checked feasible (0 <= U <= n * units[-1], reachable for equality).
        equality: spend exactly the budget (else at most).

    Returns:
        (G, n) int64 optimal candidate index per block.
    """
    groups, num_blocks, num_lengths = costs.shape
    budget_units = np.asarray(budget_units, dtype=np.int64)
    if num_lengths == 1:
        return np.zeros((groups, num_blocks), dtype=np.int64)
    states = min(num_blocks * int(units[-1]), int(budget_units.max())) + 1
    # Rough cost model: the DP makes n * J numpy calls over (G, S) arrays; the price solver
    # costs about a millisecond per group plus a few passes over its (n, J) costs.
    dp_seconds = num_blocks * num_lengths * (1e-5 + groups * states * 2e-9)
    price_seconds = groups * (1e-3 + num_blocks * num_lengths * 5e-8)
    if dp_seconds <= price_seconds:
        return solve_knapsack_dp(costs, units, budget_units, equality)
    return np.stack(
        [solve_one_group(costs[g], units, int(budget_units[g]), equality) for g in range(groups)]
    )


def solve_one_group(
    costs: np.ndarray, units: np.ndarray, budget_units: int, equality: bool
) -> np.ndarray:
    """Exact allocation of one group by price, bound and core DP (see the module docstring).

    Args:
        costs: (n, J) costs.
        units: (J,) candidate units.
        budget_units: U, feasible.
        equality: spend exactly U (else at most U).

    Returns:
        (n,) int64 optimal candidate index per block.
    """
    # One contiguous row per candidate: every pass below streams through memory.
    columns = np.ascontiguousarray(costs.T)
    num_blocks = columns.shape[1]
    relaxed = lp_solution(columns, units, budget_units, equality)
    price, base, slack = relaxed.price, relaxed.base, relaxed.slack
    if slack == 0 or (not equality and price == 0.0):
        return base
    reduced = _ReducedCosts(columns, units, price, base)
    # Rounding may leave tiny negative reduced costs; widen the fixing threshold by them.
    scale = max(abs(float(columns.max())), abs(float(columns.min()))) + abs(price) * float(
        units[-1]
    )
    tolerance = 1e-9 * scale + num_blocks * max(0.0, -reduced.minimum)
    incumbent: tuple[np.ndarray, np.ndarray, float] | None = None
    core_size = _FIRST_CORE_SIZE
    threshold = reduced.quantile(core_size)
    while True:
        rows = reduced.rows_with_moves(threshold)
        core = reduced.rows(rows)
        found = _core_dp(
            np.where(core <= threshold, core, np.inf),
            units[None, :] - units[base[rows], None],
            slack,
            price,
            equality,
        )
        if found is not None and (incumbent is None or found[1] < incumbent[2]):
            incumbent = (rows, found[0], found[1])
        if incumbent is not None:
            gap = incumbent[2]
            if gap + tolerance <= threshold:
                break
            threshold = gap + tolerance
        elif np.isinf(threshold):
            raise RuntimeError("no allocation found for a budget checked as feasible")
        else:
            core_size *= 8
            threshold = reduced.quantile(core_size)
    choice = base.copy()
    choice[incumbent[0]] = incumbent[1]
    return choice


class _ReducedCosts:
    """Reduced costs ``d[k, j] = c[k, j] + lam e_j - (c[k, b_k] + lam e[b_k])`` on demand.

    Never materialised for all blocks: each query is one streaming pass per candidate.

    Args:
        columns: (J, n) costs.
        units: (J,) candidate units.
        price: the LP price per unit.
        base: (n,) base allocation.
    """

    def __init__(
        self, columns: np.ndarray, units: np.ndarray, price: float, base: np.ndarray
    ) -> None:
        num_blocks = columns.shape[1]
        self.columns, self.units, self.price, self.base = columns, units, price, base
        self.base_value = (
            columns.ravel()[base * num_blocks + np.arange(num_blocks)] + price * units[base]
        )
        self.minimum = min(float(self._column(j).min()) for j in range(len(units)))

    def _column(self, j: int) -> np.ndarray:
        """(n,) reduced costs of candidate j."""
        return self.columns[j] + self.price * float(self.units[j]) - self.base_value

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """(m, J) reduced costs of the given blocks (exactly 0 at their base candidate)."""
        values = self.columns[:, rows].T + self.price * self.units - self.base_value[rows, None]
        values[np.arange(rows.size), self.base[rows]] = 0.0
        return values

    def rows_with_moves(self, threshold: float) -> np.ndarray:
        """Blocks with a non-base candidate of reduced cost ``<= threshold``."""
        moves = np.zeros(self.columns.shape[1], dtype=bool)
        for j in range(len(self.units)):
            moves |= (self._column(j) <= threshold) & (self.base != j)
        return np.flatnonzero(moves)

    def quantile(self, count: int) -> float:
        """Threshold admitting about ``count`` non-base candidates (inf: all of them)."""
        num_lengths, num_blocks = self.columns.shape
        total = num_blocks * (num_lengths - 1)
        if count >= total:
            return np.inf
        sample_size = min(num_blocks, 16_384)
        sample = (
            np.arange(num_blocks)
            if sample_size == num_blocks
            else np.random.default_rng(0).integers(0, num_blocks, sample_size)
        )
        values = self.rows(sample)
        values[np.arange(sample.size), self.base[sample]] = np.inf
        rank = max(int(np.ceil(count / total * values.size)), 1) - 1
        return float(np.partition(values.ravel(), rank)[rank])


def _core_dp(
    reduced: np.ndarray,
    deviation: np.ndarray,
    slack: int,
    price: float,
    equality: bool,
) -> tuple[np.ndarray, float] | None:
    """Exact DP over the core blocks on the unit deviation from the base allocation.

    Args:
        reduced: (F, J) reduced costs, inf for candidates outside the core (base has 0).
        deviation: (F, J) units of each candidate minus the base's.
        slack: r, units left by the base allocation.
        price: the LP price.
        equality: whether the deviation must equal ``slack`` (else at most ``slack``).

    Returns:
        (choice (F,), gap) with ``gap = cost - LB`` minimal, or None if no core allocation
        meets the budget.
    """
    allowed = np.isfinite(reduced)
    low_each = np.where(allowed, deviation, 0).min(axis=1)
    high_each = np.where(allowed, deviation, 0).max(axis=1)
    low, high = int(low_each.sum()), int(high_each.sum())
    if equality and not low <= slack <= high:
        return None
    # Prefix states outside this window cannot end on a feasible total.
    window_low = max(low, slack - high) if equality else low
    window_high = min(high, slack - low)
    size = window_high - window_low + 1
    value = np.full(size, np.inf)
    value[-window_low] = 0.0
    choices = np.zeros((reduced.shape[0], size), dtype=choice_dtype(reduced.shape[1]))
    for row in range(reduced.shape[0]):
        new = np.full(size, np.inf)
        for j in np.flatnonzero(allowed[row]):
            shift = int(deviation[row, j])
            if abs(shift) >= size:
                continue
            source = value[max(0, -shift) : size - max(0, shift)]
            candidate = source + reduced[row, j]
            target = new[max(0, shift) : size - max(0, -shift)]
            better = candidate < target
            np.copyto(target, candidate, where=better)
            choices[row, max(0, shift) : size - max(0, -shift)][better] = j
        value = new
    states = np.arange(window_low, window_high + 1)
    if equality:
        score = np.where(states == slack, value, np.inf)
    else:
        score = np.where(states <= slack, value + price * (slack - states), np.inf)
    final = int(np.argmin(score))
    gap = float(score[final])
    if not np.isfinite(gap):
        return None
    picked = np.zeros(reduced.shape[0], dtype=np.int64)
    for row in range(reduced.shape[0] - 1, -1, -1):
        picked[row] = choices[row, final]
        final -= int(deviation[row, picked[row]])
    return picked, gap
