"""The LP relaxation of the multiple-choice knapsack: the price per unit and its allocation.

At a price ``lam`` per unit every block takes ``argmin_j c[k, j] + lam * e_j``: a vertex of
the lower convex hull of its (units, cost) points. Its units fall when ``lam`` crosses a
hull edge's breakpoint ``mu = -slope``, so the total ``T(lam)`` is a non-increasing step
function and the LP-optimal price ``lam*`` is where it crosses the budget ``U``.

Finding ``lam*`` without building every block's hull (J - 1 gift-wrapping passes):

1. Narrowing rounds (while more than ``_DIRECT_ROWS`` blocks are undecided): the hull edges
   of a row sample give a price bracket ``[lo, hi]`` whose sampled totals miss the budget by
   a 5-sigma margin; two argmin passes over the undecided blocks check
   ``T(hi) <= U <= T(lo)`` (a failed check keeps the last verified bracket: slower, still
   exact) and fix every block whose choice is the same at both ends.
2. The few blocks left are walked from their choice at ``hi`` to their choice at ``lo``; a
   weighted selection over those hull edges gives ``lam*`` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adaptok.alloc.dp import choice_dtype

__all__ = ["LpSolution", "choices_at", "lp_price", "lp_solution"]

# Undecided blocks walked directly; above this, narrowing rounds on row samples first.
_DIRECT_ROWS = 2_048
_MAX_SAMPLE_ROWS = 16_384
# Bracket margin, in standard deviations of the sampled total.
_MARGIN_SIGMAS = 5.0
# A narrowing round that keeps more of the undecided blocks than this is the last one.
_MAX_KEPT_FRACTION = 0.5


@dataclass(frozen=True)
class LpSolution:
    """Price and integral base allocation of the LP relaxation.

    Attributes:
        price: ``lam*`` per unit (>= 0 for a ``<=`` budget).
        base: (n,) int64 hull vertex of each block at ``lam*`` (an argmin of
            ``c + lam* e``); edges tied at ``lam*`` are taken while they fit.
        slack: ``U - units(base) >= 0``; 0 means ``base`` is optimal.
    """

    price: float
    base: np.ndarray
    slack: int


def lp_price(columns: np.ndarray, units: np.ndarray, budget_units: int, equality: bool) -> float:
    """LP-optimal price per unit of ``budget_units`` for (J, n) costs (see :func:`lp_solution`)."""
    return lp_solution(columns, units, budget_units, equality).price


def lp_solution(
    columns: np.ndarray, units: np.ndarray, budget_units: int, equality: bool
) -> LpSolution:
    """Solve the LP relaxation and round it down to an integral base allocation.

    Args:
        columns: (J, n) costs, one contiguous row per candidate length (the transpose of the
            usual (n, J) layout: per-candidate passes then stream through memory).
        units: (J,) strictly increasing candidate units, ``units[0] == 0``.
        budget_units: U with ``0 <= U <= n * units[-1]``.
        equality: equality budget (the price may be negative) or ``<=`` (price >= 0).

    Returns:
        The price, the base allocation and its slack.
    """
    span = float(columns.max() - columns.min()) + 1.0
    if equality:
        # At price -span every block takes its longest candidate.
        floor, at_floor = -span, np.full(columns.shape[1], columns.shape[0] - 1)
    else:
        floor, at_floor = 0.0, choices_at(columns, units, 0.0)
        spent = int(units[at_floor].sum())
        if spent <= budget_units:
            return LpSolution(price=0.0, base=at_floor, slack=budget_units - spent)
    low, high, base, rows, at_low = _bracket(columns, units, budget_units, floor, at_floor, span)
    need = budget_units - int(units[base].sum())
    if need == 0:
        return LpSolution(price=high, base=base, slack=0)
    sub = columns[:, rows].T
    vertices, breakpoints, widths = _walk_hulls(sub, units, base[rows], at_low)
    price = _weighted_selection(breakpoints.ravel(), widths.ravel(), need)
    strict = breakpoints > price
    taken = strict.sum(axis=1)
    slack = need - int(widths.sum(where=strict, dtype=np.int64))
    tie_rows, tie_edges = np.nonzero(breakpoints == price)
    if tie_rows.size and slack > 0:
        fits = np.cumsum(widths[tie_rows, tie_edges], dtype=np.int64) <= slack
        taken = taken + np.bincount(tie_rows[fits], minlength=rows.size)
        slack -= int(widths[tie_rows[fits], tie_edges[fits]].sum())
    base[rows] = vertices[np.arange(rows.size), taken]
    return LpSolution(price=price, base=base, slack=slack)


def choices_at(columns: np.ndarray, units: np.ndarray, price: float) -> np.ndarray:
    """(n,) argmin over candidates of ``c + price * e``, the fewest units among ties.

    Args:
        columns: (J, n) costs.
        units: (J,) candidate units.
        price: price per unit.
    """
    best = columns[0].copy()
    choice = np.zeros(columns.shape[1], dtype=np.int64)
    value = np.empty_like(best)
    better = np.empty(best.shape, dtype=bool)
    for j in range(1, columns.shape[0]):
        np.add(columns[j], price * float(units[j]), out=value)
        np.less(value, best, out=better)
        np.copyto(best, value, where=better)
        np.copyto(choice, j, where=better)
    return choice


def _bracket(
    columns: np.ndarray,
    units: np.ndarray,
    budget_units: int,
    floor: float,
    at_floor: np.ndarray,
    span: float,
) -> tuple[float, float, np.ndarray, np.ndarray, np.ndarray]:
    """Narrow ``[low, high]`` around ``lam*`` until few blocks change choice inside it.

    Each round takes a row sample of the still-undecided blocks, reads from the sample's
    hull edges a bracket whose sampled totals miss the budget by a safety margin, checks it
    on all undecided blocks (``T(high) <= U <= T(low)``), and fixes every block whose choice
    is the same at both ends (it is the same anywhere in between). A failed check stops the
    narrowing with the last verified bracket, so the result is exact either way. Starts from
    ``[floor, span]``: ``T(floor) >= U`` (choices ``at_floor``) and, as ``span`` exceeds any
    cost difference, every block takes its first candidate at ``span``.

    Returns:
        low, high: the bracket.
        base: (n,) choice of every block at ``high``.
        rows: (m,) blocks whose choice may differ between ``low`` and ``high``.
        at_low: (m,) their choice at ``low``.
    """
    num_blocks = columns.shape[1]
    low, high = floor, span
    rows, sub, at_low = np.arange(num_blocks), columns, at_floor
    base = np.zeros(num_blocks, dtype=np.int64)
    at_high = base
    rest = budget_units  # units still to place among `rows`
    rng = np.random.default_rng(0)
    while rows.size > _DIRECT_ROWS:
        sample_size = min(_MAX_SAMPLE_ROWS, rows.size // 4)
        picks = rng.integers(0, rows.size, sample_size)
        _, breakpoints, widths = _walk_hulls(sub[:, picks].T, units, at_high[picks], at_low[picks])
        order = np.argsort(-breakpoints.ravel())
        mass = np.cumsum(widths.ravel()[order], dtype=np.int64)
        sorted_mu = breakpoints.ravel()[order]
        start_units = units[at_high[picks]]
        goal = rest * sample_size / rows.size - float(start_units.sum())
        # Spread of one block's units near the price, for the sampled total's margin.
        guess = sorted_mu[min(int(np.searchsorted(mass, goal)), mass.size - 1)]
        spread = float(np.std(start_units + widths.sum(axis=1, where=breakpoints > guess)))
        margin = _MARGIN_SIGMAS * spread * np.sqrt(sample_size) + float(units[-1])
        upper = int(np.searchsorted(mass, goal - margin))
        lower = int(np.searchsorted(mass, goal + margin))
        new_high = float(sorted_mu[upper]) if goal - margin > 0 and upper < mass.size else high
        new_low = float(np.nextafter(sorted_mu[lower], -np.inf)) if lower < mass.size else low
        sub_high = choices_at(sub, units, new_high)
        sub_low = choices_at(sub, units, new_low)
        if units[sub_high].sum() > rest or units[sub_low].sum() < rest:
            break
        differ = sub_low != sub_high
        if differ.mean() > _MAX_KEPT_FRACTION:
            break  # ties at one price: sampling cannot narrow further; walk them all
        base[rows] = sub_high
        rest -= int(units[sub_high[~differ]].sum())
        rows, low, high = rows[differ], new_low, new_high
        at_low, at_high = sub_low[differ], sub_high[differ]
        sub = columns[:, rows]
    return low, high, base, rows, at_low


def _walk_hulls(
    costs: np.ndarray, units: np.ndarray, start: np.ndarray, stop: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower-hull edges of each row between two of its hull vertices (gift wrapping).

    Args:
        costs: (m, J) costs.
        units: (J,) candidate units.
        start: (m,) first hull vertex (fewer units).
        stop: (m,) last hull vertex.

    Returns:
        vertices: (m, J) hull vertex i from ``start`` (padded with ``stop``).
        breakpoints: (m, J - 1) price ``mu`` of edge i (non-increasing, padded with -inf):
            the block takes edge i iff the price is below ``mu``.
        widths: (m, J - 1) int64 units gained by edge i (0 for padding).
    """
    count, num_lengths = costs.shape
    vertices = np.repeat(stop[:, None], num_lengths, axis=1).astype(choice_dtype(num_lengths))
    vertices[:, 0] = start
    breakpoints = np.full((count, num_lengths - 1), -np.inf)
    widths = np.zeros((count, num_lengths - 1), dtype=np.int64)
    current = start.astype(np.int64)
    active = np.flatnonzero(current < stop)
    candidates = np.arange(num_lengths)
    for edge in range(num_lengths - 1):
        if active.size == 0:
            break
        here = current[active]
        rise = costs[active] - costs[active, here][:, None]
        run = units[None, :] - units[here][:, None]
        inside = (candidates[None, :] > here[:, None]) & (candidates[None, :] <= stop[active, None])
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = np.where(inside, rise / run, np.inf)
        # Farthest vertex among equal slopes: collinear points are not hull vertices.
        following = num_lengths - 1 - np.argmin(slope[:, ::-1], axis=1)
        breakpoints[active, edge] = -slope[np.arange(active.size), following]
        widths[active, edge] = units[following] - units[here]
        vertices[active, edge + 1] = following
        current[active] = following
        active = active[following < stop[active]]
    # Rounding can break monotonicity by an ulp; the selection needs prefixes per row.
    np.minimum.accumulate(breakpoints, axis=1, out=breakpoints)
    return vertices, breakpoints, widths


def _weighted_selection(mu: np.ndarray, width: np.ndarray, need: int) -> float:
    """Breakpoint ``v`` with ``width(mu > v) < need <= width(mu >= v)`` (``need >= 1``)."""
    order = np.argsort(-mu, kind="stable")
    cumulative = np.cumsum(width[order], dtype=np.int64)
    return float(mu[order[np.searchsorted(cumulative, need)]])
