"""Quality-target allocation: the fewest tokens whose predicted cost meets a threshold."""

from __future__ import annotations

import numpy as np

from adaptok.alloc.dp import backtrack, cost_tables
from adaptok.alloc.feasibility import TokenGrid

__all__ = ["SCOPES", "allocate_to_target"]

SCOPES = ("block", "clip")


def allocate_to_target(
    costs: np.ndarray, grid: TokenGrid, threshold: float, scope: str
) -> tuple[np.ndarray, list[str]]:
    """Fewest tokens that reach a predicted-cost threshold (lower cost = better).

    ``scope="block"``: each block independently takes its shortest length with
    ``cost <= threshold``. ``scope="clip"``: each clip takes the allocation with the fewest
    total tokens whose MEAN block cost is ``<= threshold`` (exact DP over the clip's token
    totals, ``O(B * K^2 * J * units[-1])``), so a block may stay above the threshold when
    another block of the clip is cheaply better. A block (or clip) that cannot reach the
    threshold gets its lowest-cost allocation (fewest tokens among equal costs) and a note.

    Args:
        costs: (B, K, J) predicted cost per clip, block and candidate length.
        grid: the candidate lengths.
        threshold: the predicted cost to reach (per block, or as the clip's mean).
        scope: ``block`` or ``clip``.

    Returns:
        choice: (B, K) int64 candidate index per block.
        notes: how many blocks/clips missed the threshold, if any.

    Raises:
        ValueError: an unknown scope.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    num_clips, num_blocks, _ = costs.shape
    if scope == "block":
        reached = costs <= threshold
        missed = ~reached.any(axis=2)
        choice = np.where(missed, np.argmin(costs, axis=2), np.argmax(reached, axis=2))
        units_missed, units_total = int(missed.sum()), num_clips * num_blocks
        unit_name = "blocks"
    else:
        best, choices = cost_tables(costs, grid.units, num_blocks * grid.max_units + 1)
        goal = num_blocks * threshold
        reached = best <= goal + 1e-12 * max(1.0, abs(goal))
        missed = ~reached.any(axis=1)
        final = np.where(missed, np.argmin(best, axis=1), np.argmax(reached, axis=1))
        choice = backtrack(choices, grid.units, final)
        units_missed, units_total = int(missed.sum()), num_clips
        unit_name = "clips"
    notes = []
    if units_missed:
        notes.append(
            f"{units_missed} of {units_total} {unit_name} cannot reach cost {threshold}: "
            "given their lowest-cost allocation"
        )
    return choice.astype(np.int64), notes
