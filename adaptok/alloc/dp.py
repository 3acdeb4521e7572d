"""Exact dynamic programming over token totals, vectorised over independent groups.

For ``G`` groups of ``n`` blocks each, ``best[g, u]`` is the least cost of the group's blocks
using exactly ``u`` units above the all-shortest allocation (see
:class:`adaptok.alloc.feasibility.TokenGrid`). Cost ``O(G * n * J * S)`` time and
``O(G * n * S)`` bytes for ``S`` states: used for many small problems at once (per-clip
budgets, the per-clip quality target) and as the fast solver's choice for small instances.
"""

from __future__ import annotations

import numpy as np

__all__ = ["backtrack", "choice_dtype", "cost_tables", "solve_knapsack_dp"]


def choice_dtype(num_lengths: int) -> type[np.integer]:
    """Smallest integer dtype that indexes ``num_lengths`` candidates."""
    return np.int8 if num_lengths <= 127 else np.int16 if num_lengths <= 32767 else np.int32


def cost_tables(
    costs: np.ndarray, units: np.ndarray, num_states: int
) -> tuple[np.ndarray, np.ndarray]:
    """Least cost per exact unit total, with the choices needed to rebuild it.

    Args:
        costs: (G, n, J) cost of each candidate of each block.
        units: (J,) non-decreasing units of each candidate, ``units[0] == 0``.
        num_states: number S of unit totals tracked (0..S-1); larger totals are dropped.

    Returns:
        best: (G, S) least total cost reaching each unit total (inf where unreachable).
        choices: (n, G, S) candidate chosen for block i on the way to each state.
    """
    groups, num_blocks, num_lengths = costs.shape
    best = np.full((groups, num_states), np.inf)
    best[:, 0] = 0.0
    choices = np.zeros((num_blocks, groups, num_states), dtype=choice_dtype(num_lengths))
    reach = 1
    for block in range(num_blocks):
        reach = min(num_states, reach + int(units[-1]))
        new = np.full((groups, reach), np.inf)
        chosen = choices[block, :, :reach]
        for j in range(num_lengths):
            shift = int(units[j])
            if shift >= reach:
                break
            candidate = best[:, : reach - shift] + costs[:, block, j, None]
            better = candidate < new[:, shift:]
            np.copyto(new[:, shift:], candidate, where=better)
            chosen[:, shift:][better] = j
        best = np.full((groups, num_states), np.inf)
        best[:, :reach] = new
    return best, choices


def backtrack(choices: np.ndarray, units: np.ndarray, final_states: np.ndarray) -> np.ndarray:
    """Rebuild the choices of every block from the final unit totals.

    Args:
        choices: (n, G, S) from :func:`cost_tables`.
        units: (J,) units of each candidate.
        final_states: (G,) unit total reached by each group.

    Returns:
        (G, n) int64 candidate index per block.
    """
    num_blocks, groups, _ = choices.shape
    state = np.asarray(final_states, dtype=np.int64).copy()
    rows = np.arange(groups)
    picked = np.zeros((groups, num_blocks), dtype=np.int64)
    for block in range(num_blocks - 1, -1, -1):
        picked[:, block] = choices[block, rows, state]
        state -= units[picked[:, block]]
    return picked


def solve_knapsack_dp(
    costs: np.ndarray, units: np.ndarray, budget_units: np.ndarray, equality: bool
) -> np.ndarray:
    """Exact multiple-choice knapsack per group by dynamic programming.

    Args:
        costs: (G, n, J) costs.
        units: (J,) candidate units.
        budget_units: (G,) budget of each group in units (feasible: checked by the caller).
        equality: use exactly the budget (else at most).

    Returns:
        (G, n) int64 optimal candidate index per block.
    """
    budget_units = np.asarray(budget_units, dtype=np.int64)
    num_states = int(min(costs.shape[1] * units[-1], budget_units.max())) + 1
    best, choices = cost_tables(costs, units, num_states)
    if equality:
        final = budget_units
    else:
        allowed = np.arange(num_states)[None, :] <= budget_units[:, None]
        final = np.argmin(np.where(allowed, best, np.inf), axis=1)
    if not np.isfinite(best[np.arange(len(final)), final]).all():
        raise RuntimeError("dynamic programming found no allocation for a checked budget")
    return backtrack(choices, units, final)
