"""Budgeted allocation of groups of blocks with either solver, and the MIP fallback."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from adaptok.alloc.fast_solver import solve_fast
from adaptok.alloc.feasibility import TokenGrid, check_total, is_reachable
from adaptok.alloc.mip_solver import solve_mip

__all__ = ["SOLVERS", "KnapsackSolution", "solve_knapsacks"]

SOLVERS = ("fast", "mip")

logger = logging.getLogger(__name__)


@dataclass
class KnapsackSolution:
    """Optimal choices of every group.

    Attributes:
        choice: (G, n) int64 candidate index per block.
        solver: the solver that produced ``choice`` (``fast`` or ``mip``).
        notes: what happened on the way (e.g. a MIP time-out and the fallback).
    """

    choice: np.ndarray
    solver: str
    notes: list[str] = field(default_factory=list)


def solve_knapsacks(
    costs: np.ndarray,
    grid: TokenGrid,
    totals: np.ndarray,
    equality: bool,
    solver: str,
    time_limit: float,
) -> KnapsackSolution:
    """Minimise the summed cost of each group under its own token budget.

    Args:
        costs: (G, n, J) float64 cost of each candidate length of each block.
        grid: the candidate lengths.
        totals: (G,) token budget of each group (``sum == total`` or ``sum <= total``).
        equality: exact budgets (else upper bounds).
        solver: ``fast`` (exact, numpy) or ``mip`` (python-mip / CBC, falls back to ``fast``
            when it cannot prove an optimum within ``time_limit``).
        time_limit: seconds for CBC.

    Returns:
        The optimal choices.

    Raises:
        InfeasibleBudgetError: a group's budget cannot be met (the message gives the range).
        ValueError: an unknown solver.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    groups, num_blocks, _ = costs.shape
    totals = np.asarray(totals, dtype=np.int64)
    _check_totals(totals, num_blocks, grid, equality)
    capped = np.minimum(totals, num_blocks * int(grid.lengths[-1]))
    if solver == "mip":
        outcome = solve_mip(costs, grid.lengths, capped, equality, time_limit)
        if outcome.choice is not None:
            return KnapsackSolution(choice=outcome.choice, solver="mip")
        note = (
            f"python-mip stopped with status {outcome.status} within the {time_limit} s "
            f"limit ({groups * num_blocks} blocks): fell back to the exact fast solver"
        )
        logger.warning(note)
        return KnapsackSolution(
            choice=_solve_fast(costs, grid, capped, equality), solver="fast", notes=[note]
        )
    return KnapsackSolution(choice=_solve_fast(costs, grid, capped, equality), solver="fast")


def _solve_fast(
    costs: np.ndarray, grid: TokenGrid, totals: np.ndarray, equality: bool
) -> np.ndarray:
    units = (totals - costs.shape[1] * grid.base) // grid.step
    return solve_fast(costs, grid.units, units, equality)


def _check_totals(totals: np.ndarray, num_blocks: int, grid: TokenGrid, equality: bool) -> None:
    """Raise for the first infeasible group budget (vectorised test, detailed message)."""
    if equality:
        bad = ~is_reachable(totals, num_blocks, grid)
    else:
        bad = totals < num_blocks * int(grid.lengths[0])
    if bad.any():
        check_total(int(totals[np.argmax(bad)]), num_blocks, grid, equality)
