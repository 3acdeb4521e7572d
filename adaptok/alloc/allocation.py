"""The allocation result and the one entry point, :func:`allocate`, for every mode."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from adaptok.alloc.feasibility import TokenGrid, check_budget_values, total_from_mean
from adaptok.alloc.inputs import as_costs, as_lengths, to_numpy
from adaptok.alloc.knapsack import solve_knapsacks
from adaptok.alloc.streaming import StreamingAllocator
from adaptok.alloc.target import allocate_to_target

__all__ = ["MODES", "Allocation", "allocate"]

MODES = ("batch", "per_clip", "streaming", "target")


@dataclass(frozen=True)
class Allocation:
    """Token lengths chosen for every block of a mini-batch.

    Attributes:
        choice: (B, K) int64 index into the candidate lengths.
        lengths: (B, K) int64 tokens per block.
        objective: sum of the chosen costs (lower = better predicted quality).
        total_tokens: sum of ``lengths``.
        solver: the solver that produced the answer (``fast``, ``mip``, ``price`` for
            data-driven streaming, ``threshold`` for target mode).
        mode: the allocation mode.
        solve_seconds: wall time of the whole call.
        notes: what happened on the way (MIP time-out and fallback, unreached targets, ...).
    """

    choice: np.ndarray
    lengths: np.ndarray
    objective: float
    total_tokens: int
    solver: str
    mode: str
    solve_seconds: float
    notes: tuple[str, ...] = ()

    @property
    def mean_tokens(self) -> float:
        """Mean tokens per block."""
        return self.total_tokens / self.lengths.size


def allocate(
    costs: Any,
    lengths: Any,
    budget: float | Any | None = None,
    *,
    mode: str = "batch",
    solver: str = "fast",
    equality: bool = True,
    time_limit: float = 60.0,
    threshold: float | None = None,
    scope: str = "block",
    price: float | None = None,
) -> Allocation:
    """Choose one candidate length per block, minimising the summed predicted cost.

    Budgets are MEAN TOKENS PER BLOCK; ``equality=True`` spends them exactly (the paper's
    IPAL), ``False`` at most. Per mode:

    * ``batch``: scalar ``budget`` -> all B*K blocks share ``sum == B*K*budget`` (the
      paper's ILP; a clip's lengths depend on its batch-mates). (K,) ``budget`` -> block
      position k of all clips shares ``B*budget[k]`` (the reference code's per-block table).
    * ``per_clip``: scalar or (B,) ``budget`` -> clip b alone gets ``K*budget[b]``; a clip's
      lengths do not depend on the other clips in the batch.
    * ``streaming``: causal, block by block (:class:`StreamingAllocator`); block b is decided
      from blocks <= b only. (K,) ``budget`` -> explicit per-block budgets (same answer as
      ``batch`` with that array). Scalar ``budget`` -> a price per token, starting at
      ``price`` (or estimated from block 0), adapted to keep the mean on ``budget``, with each
      clip's total ``K*budget`` enforced (``==`` or ``<=``).
    * ``target``: no budget; the fewest tokens reaching ``threshold`` (predicted cost) per
      block (``scope="block"``) or as each clip's mean block cost (``scope="clip"``).

    Args:
        costs: (B, K, J) predicted cost (e.g. LPIPS) of each candidate length for each block
            of each clip; numpy or torch.
        lengths: (J,) candidate token lengths, strictly increasing positive integers.
        budget: mean tokens per block, as described per mode.
        mode: ``batch``, ``per_clip``, ``streaming`` or ``target``.
        solver: ``fast`` (exact numpy solver) or ``mip`` (python-mip CBC; falls back to
            ``fast`` when no optimum is proven within ``time_limit``, noted in ``notes``).
        equality: spend budgets exactly (else at most).
        time_limit: seconds CBC may run per solve.
        threshold: target mode's predicted-cost threshold.
        scope: target mode's scope, ``block`` or ``clip``.
        price: streaming mode's initial price per token (scalar budget only).

    Returns:
        The allocation.

    Raises:
        InfeasibleBudgetError: no allocation meets the budget (the message gives the range).
        ValueError: invalid inputs or arguments.
    """
    start = time.perf_counter()
    grid = TokenGrid.from_lengths(as_lengths(lengths))
    cost_array = as_costs(costs, 3, len(grid.lengths))
    num_clips, num_blocks, _ = cost_array.shape
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if (mode == "target") != (threshold is not None) or (mode == "target") == (budget is not None):
        raise ValueError("target mode takes a threshold and no budget; other modes a budget")
    if budget is not None:
        check_budget_values(to_numpy(budget), grid.lengths)
    notes: list[str] = []
    if mode == "target":
        choice, notes = allocate_to_target(cost_array, grid, float(threshold), scope)
        used = "threshold"
    elif mode == "streaming":
        choice, used, notes = _streaming(
            cost_array, grid, budget, equality, solver, time_limit, price
        )
    else:
        groups, totals, restore = _knapsack_groups(cost_array, budget, mode, equality)
        solution = solve_knapsacks(groups, grid, totals, equality, solver, time_limit)
        choice, used, notes = restore(solution.choice), solution.solver, solution.notes
    chosen_lengths = grid.lengths[choice]
    objective = float(np.take_along_axis(cost_array, choice[..., None], axis=2).sum())
    return Allocation(
        choice=choice,
        lengths=chosen_lengths,
        objective=objective,
        total_tokens=int(chosen_lengths.sum()),
        solver=used,
        mode=mode,
        solve_seconds=time.perf_counter() - start,
        notes=tuple(notes),
    )


def _budget_vector(budget: Any, size: int, name: str) -> np.ndarray | None:
    """(size,) float budgets from a scalar or a matching vector; None if not a vector."""
    array = np.asarray(to_numpy(budget), dtype=np.float64)
    if array.ndim == 0:
        return None
    if array.shape != (size,):
        raise ValueError(
            f"budget must be a scalar or have shape ({size},) ({name}), got {array.shape}"
        )
    return array


def _knapsack_groups(
    costs: np.ndarray, budget: Any, mode: str, equality: bool
) -> tuple[np.ndarray, np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Reshape (B, K, J) costs into (G, n, J) budget groups, their totals and the inverse.

    Returns:
        groups: (G, n, J) costs of each budget group.
        totals: (G,) token budget of each group.
        restore: maps the (G, n) choices back to (B, K).
    """
    num_clips, num_blocks, num_lengths = costs.shape
    if mode == "batch":
        per_block = _budget_vector(budget, num_blocks, "one mean per block position")
        if per_block is None:
            total = total_from_mean(float(budget), num_clips * num_blocks, equality)
            return (
                costs.reshape(1, -1, num_lengths),
                np.array([total]),
                lambda c: c.reshape(num_clips, num_blocks),
            )
        totals = np.array([total_from_mean(b, num_clips, equality) for b in per_block])
        return costs.transpose(1, 0, 2), totals, lambda c: c.T.copy()
    per_clip = _budget_vector(budget, num_clips, "one mean per clip")
    means = np.full(num_clips, float(budget)) if per_clip is None else per_clip
    totals = np.array([total_from_mean(b, num_blocks, equality) for b in means])
    return costs, totals, lambda c: c


def _streaming(
    costs: np.ndarray,
    grid: TokenGrid,
    budget: Any,
    equality: bool,
    solver: str,
    time_limit: float,
    price: float | None,
) -> tuple[np.ndarray, str, list[str]]:
    """Run a fresh :class:`StreamingAllocator` over the K blocks of every clip."""
    num_clips, num_blocks, _ = costs.shape
    per_block = _budget_vector(budget, num_blocks, "one mean per block position")
    if per_block is None:
        allocator = StreamingAllocator(
            grid.lengths, float(budget), num_blocks=num_blocks, equality=equality, price=price
        )
        used = "price"
    else:
        allocator = StreamingAllocator(
            grid.lengths,
            block_budgets=per_block.tolist(),
            equality=equality,
            solver=solver,
            time_limit=time_limit,
        )
        used = solver
    tokens = np.stack([allocator.step(costs[:, block]) for block in range(num_blocks)], axis=1)
    choice = np.searchsorted(grid.lengths, tokens).astype(np.int64)
    if allocator.notes:
        used = f"{solver}+fast"  # some steps fell back from the MIP
    return choice, used, list(allocator.notes)
