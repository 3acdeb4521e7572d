"""The paper's integer program solved by python-mip (CBC), as a reference and a check.

One binary ``x[k, j]`` per block and candidate; ``sum_j x[k, j] == 1`` per block and
``sum_{k in group} sum_j lengths[j] x[k, j]`` ``==`` (or ``<=``) the group's budget. All groups
(one for a shared batch budget, one per clip, one per block position) share one model.

python-mip is imported when a model is solved, not with the package: stages that never solve
with CBC (tokenizer training, the fast solver) run where its wheel is not installed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MipOutcome", "solve_mip"]


@dataclass(frozen=True)
class MipOutcome:
    """Result of one CBC run.

    Attributes:
        choice: (G, n) int64 candidate index per block when optimality was proven, else None.
        status: CBC's status name (``OPTIMAL``, ``FEASIBLE`` after a time limit, ...).
    """

    choice: np.ndarray | None
    status: str


def solve_mip(
    costs: np.ndarray,
    lengths: np.ndarray,
    budgets: np.ndarray,
    equality: bool,
    time_limit: float,
) -> MipOutcome:
    """Solve the multiple-choice knapsack of every group with CBC, quietly.

    Args:
        costs: (G, n, J) cost of each candidate length of each block.
        lengths: (J,) candidate lengths in tokens.
        budgets: (G,) total tokens of each group.
        equality: spend exactly each budget (else at most).
        time_limit: seconds CBC may run (model building not included).

    Returns:
        The outcome; ``choice`` is None unless CBC proved an optimum in time.
    """
    import mip

    groups, num_blocks, num_lengths = costs.shape
    model = mip.Model(sense=mip.MINIMIZE, solver_name=mip.CBC)
    model.verbose = 0
    # Prove the optimum (defaults stop at a 1e-4 relative gap).
    model.max_mip_gap = 1e-9
    model.max_mip_gap_abs = 1e-9
    picks = model.add_var_tensor((groups * num_blocks, num_lengths), "x", var_type=mip.BINARY)
    flat = picks.ravel().tolist()
    model.objective = mip.xsum(
        cost * var for cost, var in zip(costs.ravel().tolist(), flat, strict=True)
    )
    for row in range(groups * num_blocks):
        model.add_constr(mip.xsum(flat[row * num_lengths : (row + 1) * num_lengths]) == 1)
    tokens = lengths.tolist()
    per_group = num_blocks * num_lengths
    for group in range(groups):
        spent = mip.xsum(
            tokens[i % num_lengths] * flat[group * per_group + i] for i in range(per_group)
        )
        budget = int(budgets[group])
        model.add_constr(spent == budget if equality else spent <= budget)
    status = model.optimize(max_seconds=time_limit)
    if status != mip.OptimizationStatus.OPTIMAL:
        return MipOutcome(choice=None, status=status.name)
    values = np.array([var.x for var in flat]).reshape(groups, num_blocks, num_lengths)
    return MipOutcome(choice=np.argmax(values, axis=2).astype(np.int64), status=status.name)
