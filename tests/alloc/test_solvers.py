"""Both solvers against brute force and scipy's HiGHS MILP, budgets, fallbacks and errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

from adaptok.alloc import InfeasibleBudgetError, allocate, lagrangian
from adaptok.alloc.dp import solve_knapsack_dp
from adaptok.alloc.fast_solver import solve_one_group
from adaptok.alloc.feasibility import TokenGrid, is_reachable, min_parts
from adaptok.alloc.mip_solver import MipOutcome

LENGTH_SETS = {
    "gcd64": np.array([64, 128, 192, 256]),
    "gcd1_358": np.array([3, 5, 8]),
    "irregular": np.array([1, 2, 4, 7, 11]),
}


def make_costs(rng: np.random.Generator, shape: tuple[int, ...], kind: str) -> np.ndarray:
    """Costs (..., J): random (non-convex), monotone decreasing, tied, or identical rows."""
    costs = rng.random(shape)
    if kind == "monotone":
        costs = np.sort(costs, axis=-1)[..., ::-1].copy()
    elif kind == "ties":
        costs = np.round(costs * 4) / 4
    elif kind == "identical":
        costs = np.broadcast_to(costs[..., :1, :], shape).copy()
    return costs


def brute_force(costs: np.ndarray, lengths: np.ndarray, total: int, equality: bool) -> float:
    """Least summed cost over every allocation of (n, J) costs (inf if none is feasible)."""
    num_blocks, num_lengths = costs.shape
    best = np.inf
    for picks in itertools.product(range(num_lengths), repeat=num_blocks):
        spent = lengths[list(picks)].sum()
        if spent == total if equality else spent <= total:
            best = min(best, costs[np.arange(num_blocks), list(picks)].sum())
    return best


def highs_optimum(costs: np.ndarray, lengths: np.ndarray, total: int, equality: bool) -> float:
    """Optimal objective of the multiple-choice knapsack by scipy.optimize.milp (HiGHS)."""
    num_blocks, num_lengths = costs.shape
    one_each = LinearConstraint(
        sparse.kron(sparse.eye(num_blocks), np.ones((1, num_lengths))), 1, 1
    )
    budget = LinearConstraint(
        np.tile(lengths, num_blocks)[None], total if equality else -np.inf, total
    )
    result = milp(
        costs.ravel(),
        constraints=[one_each, budget],
        integrality=np.ones(costs.size),
        bounds=Bounds(0, 1),
        options={"mip_rel_gap": 0.0},
    )
    assert result.success
    return float(result.fun)


def random_budget(
    rng: np.random.Generator, num_blocks: int, lengths: np.ndarray, equality: bool
) -> int | None:
    """A total budget inside the range (None when an equality total is unreachable)."""
    grid = TokenGrid.from_lengths(lengths)
    units = int(rng.integers(0, num_blocks * grid.max_units + 1))
    total = grid.to_tokens(units, num_blocks) + (0 if equality else int(rng.integers(0, grid.step)))
    if equality and not is_reachable(np.array([total]), num_blocks, grid)[0]:
        return None
    return total


def check_allocation(
    allocation, costs: np.ndarray, total: int, equality: bool, optimum: float
) -> None:
    """Budget met and objective optimal (to rounding)."""
    spent = allocation.total_tokens
    assert spent == total if equality else spent <= total
    assert allocation.objective == pytest.approx(optimum, abs=1e-9)
    chosen = np.take_along_axis(costs, allocation.choice[..., None], axis=-1).sum()
    assert chosen == pytest.approx(allocation.objective, abs=1e-12)


@pytest.mark.parametrize("equality", [True, False])
@pytest.mark.parametrize("length_set", sorted(LENGTH_SETS))
def test_small_instances_match_brute_force(length_set: str, equality: bool) -> None:
    lengths = LENGTH_SETS[length_set]
    rng = np.random.default_rng(0)
    checked = 0
    for trial in range(60):
        num_blocks = int(rng.integers(1, 5))
        kind = ["random", "monotone", "ties", "identical"][trial % 4]
        costs = make_costs(rng, (1, num_blocks, len(lengths)), kind)
        total = random_budget(rng, num_blocks, lengths, equality)
        if total is None:
            continue
        optimum = brute_force(costs[0], lengths, total, equality)
        for solver in ("fast", "mip"):
            allocation = allocate(
                costs, lengths, total / num_blocks, solver=solver, equality=equality
            )
            assert allocation.solver == solver
            check_allocation(allocation, costs, total, equality, optimum)
        # Both exact paths of the fast solver, whichever the dispatcher would pick.
        grid = TokenGrid.from_lengths(lengths)
        units = grid.to_units(total, num_blocks)
        for choice in (
            solve_one_group(costs[0], grid.units, units, equality),
            solve_knapsack_dp(costs, grid.units, np.array([units]), equality)[0],
        ):
            spent = lengths[choice].sum()
            assert spent == total if equality else spent <= total
            assert costs[0, np.arange(num_blocks), choice].sum() == pytest.approx(optimum)
        checked += 1
    assert checked >= 20


@pytest.mark.parametrize("equality", [True, False])
@pytest.mark.parametrize("kind", ["random", "monotone", "ties", "identical"])
def test_medium_instances_match_highs(kind: str, equality: bool) -> None:
    rng = np.random.default_rng(1)
    for lengths in LENGTH_SETS.values():
        num_blocks = int(rng.integers(40, 120))
        costs = make_costs(rng, (1, num_blocks, len(lengths)), kind)
        total = random_budget(rng, num_blocks, lengths, equality)
        if total is None:
            continue
        optimum = highs_optimum(costs[0], lengths, total, equality)
        for solver in ("fast", "mip"):
            allocation = allocate(
                costs, lengths, total / num_blocks, solver=solver, equality=equality
            )
            check_allocation(allocation, costs, total, equality, optimum)


@pytest.mark.parametrize("equality", [True, False])
@pytest.mark.parametrize("kind", ["random", "monotone", "ties", "identical"])
def test_lagrangian_core_path_matches_dp(
    kind: str, equality: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The price + core-DP solver (with the sampled bracket forced on) equals the full DP."""
    monkeypatch.setattr(lagrangian, "_DIRECT_ROWS", 64)
    rng = np.random.default_rng(2)
    for lengths in LENGTH_SETS.values():
        grid = TokenGrid.from_lengths(lengths)
        num_blocks = 400
        costs = make_costs(rng, (1, num_blocks, len(lengths)), kind)
        total = random_budget(rng, num_blocks, lengths, equality)
        if total is None:
            continue
        units = grid.to_units(total, num_blocks)
        fast = solve_one_group(costs[0], grid.units, units, equality)
        exact = solve_knapsack_dp(costs, grid.units, np.array([units]), equality)[0]
        fast_cost = costs[0, np.arange(num_blocks), fast].sum()
        exact_cost = costs[0, np.arange(num_blocks), exact].sum()
        assert fast_cost == pytest.approx(exact_cost, abs=1e-9)
        spent = grid.lengths[fast].sum()
        assert spent == total if equality else spent <= total


@pytest.mark.slow
def test_large_realistic_instance_matches_highs() -> None:
    """17k blocks: the sampled bracket runs unpatched; HiGHS confirms the optimum."""
    rng = np.random.default_rng(3)
    lengths = np.arange(64, 513, 64)
    num_blocks = 17_000
    scale = rng.uniform(0.05, 0.4, (num_blocks, 1))
    decay = rng.uniform(0.3, 1.5, (num_blocks, 1))
    costs = scale * (lengths / 64.0) ** -decay + rng.normal(0, 0.005, (num_blocks, 8))
    costs = np.sort(costs, axis=1)[:, ::-1][None].copy()
    allocation = allocate(costs, lengths, 256)
    check_allocation(
        allocation,
        costs,
        256 * num_blocks,
        True,
        highs_optimum(costs[0], lengths, 256 * num_blocks, True),
    )


@pytest.mark.parametrize("equality", [True, False])
def test_quality_never_worse_with_more_budget(equality: bool) -> None:
    rng = np.random.default_rng(4)
    lengths = np.arange(64, 513, 64)
    costs = make_costs(rng, (4, 8, 8), "monotone")
    objectives = [
        allocate(costs, lengths, mean, equality=equality).objective for mean in range(64, 513, 16)
    ]
    assert np.all(np.diff(objectives) <= 1e-12)
    # <= budgets: monotone for any costs and any lengths.
    odd_costs = make_costs(rng, (3, 5, 3), "random")
    objectives = [
        allocate(odd_costs, [3, 5, 8], mean, equality=False).objective
        for mean in np.arange(3, 8.01, 1 / 15)
    ]
    assert np.all(np.diff(objectives) <= 1e-12)


def test_budget_is_met_for_every_mode_and_solver() -> None:
    rng = np.random.default_rng(5)
    lengths = np.arange(64, 513, 64)
    costs = make_costs(rng, (6, 4, 8), "random")
    for mode in ("batch", "per_clip", "streaming"):
        for solver in ("fast", "mip"):
            allocation = allocate(costs, lengths, 192, mode=mode, solver=solver)
            assert allocation.total_tokens == 192 * costs.shape[0] * costs.shape[1]
            assert allocation.lengths.shape == (6, 4)
            assert np.array_equal(allocation.lengths, lengths[allocation.choice])


def test_mip_time_limit_falls_back_to_fast(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(6)
    lengths = np.arange(64, 513, 64)
    costs = make_costs(rng, (8, 4, 8), "monotone")
    reference = allocate(costs, lengths, 256)
    monkeypatch.setattr(
        "adaptok.alloc.knapsack.solve_mip",
        lambda *args, **kwargs: MipOutcome(choice=None, status="FEASIBLE"),
    )
    with caplog.at_level("WARNING"):
        allocation = allocate(costs, lengths, 256, solver="mip", time_limit=0.5)
    assert allocation.solver == "fast"
    assert "fell back" in allocation.notes[0] and "FEASIBLE" in allocation.notes[0]
    assert "fell back" in caplog.text
    assert allocation.objective == pytest.approx(reference.objective)


def test_mip_tiny_time_limit_on_big_instance_is_still_optimal() -> None:
    rng = np.random.default_rng(7)
    lengths = np.arange(64, 513, 64)
    costs = make_costs(rng, (64, 32, 8), "monotone")
    reference = allocate(costs, lengths, 256)
    allocation = allocate(costs, lengths, 256, solver="mip", time_limit=1e-3)
    assert allocation.objective == pytest.approx(reference.objective, abs=1e-9)
    if allocation.solver == "fast":
        assert allocation.notes and "fell back" in allocation.notes[0]


def test_infeasible_budgets_state_the_range() -> None:
    lengths = np.arange(64, 513, 64)
    costs = np.zeros((2, 4, 8))
    with pytest.raises(InfeasibleBudgetError, match=r"\[512, 4096\].*mean 64\.\.512"):
        allocate(costs, lengths, 600)
    with pytest.raises(InfeasibleBudgetError, match=r"\[512, 4096\]"):
        allocate(costs, lengths, 32, equality=False)
    with pytest.raises(InfeasibleBudgetError, match="nearest reachable: 1984 and 2048"):
        allocate(costs, lengths, 250)  # 2000 tokens: not a multiple of 64
    with pytest.raises(InfeasibleBudgetError, match="nearest reachable: 3 and 5"):
        allocate(np.zeros((1, 1, 3)), [3, 5, 8], 4)
    assert issubclass(InfeasibleBudgetError, ValueError)
    # Above the range is fine for an upper bound: everything at the longest length.
    decreasing = np.broadcast_to(-lengths.astype(float), (2, 4, 8))
    assert allocate(decreasing, lengths, 600, equality=False).total_tokens == 8 * 512


def test_reachability_matches_enumeration() -> None:
    rng = np.random.default_rng(8)
    # [4, 8, 12, 16]: evenly spaced (parts 1..p, closed form), the others through the table
    for lengths in ([3, 5, 8], [4, 10, 14], [1, 2, 4, 7, 11], [64, 448, 512], [4, 8, 12, 16]):
        grid = TokenGrid.from_lengths(np.array(lengths))
        for num_blocks in range(1, 5):
            sums = {sum(p) for p in itertools.product(lengths, repeat=num_blocks)}
            totals = np.arange(num_blocks * lengths[0] - 2, num_blocks * lengths[-1] + 3)
            expected = np.array([t in sums for t in totals])
            assert np.array_equal(is_reachable(totals, num_blocks, grid), expected)
    parts = np.array([4, 9])
    targets = rng.integers(0, 400, 50)
    expected = [
        min((a + b for a in range(101) for b in range(45) if 4 * a + 9 * b == t), default=None)
        for t in targets
    ]
    found = min_parts(targets, parts)
    for value, want in zip(found, expected, strict=True):
        assert (want is None and value > 10**9) or value == want
    # parts 1..p (closed form) against a plain dynamic programme
    fewest = [0]
    for t in range(1, 3000):
        fewest.append(1 + min(fewest[t - q] for q in range(1, 12) if q <= t))
    assert np.array_equal(min_parts(np.arange(3000), np.arange(1, 12)), fewest)


def test_free_lengths_at_paper_scale() -> None:
    """M = 512, every length allowed (the closed form; the table would take seconds)."""
    grid = TokenGrid.from_lengths(np.arange(1, 513))
    reachable = is_reachable(np.arange(0, 4 * 512 + 2), 4, grid)
    assert not reachable[:4].any() and reachable[4 : 4 * 512 + 1].all() and not reachable[-1]


def test_torch_costs_and_invalid_inputs() -> None:
    lengths = torch.tensor([64, 128, 192, 256])
    costs = torch.rand(2, 3, 4, dtype=torch.float32)
    allocation = allocate(costs, lengths, 128)
    assert allocation.choice.dtype == np.int64 and allocation.total_tokens == 128 * 6
    with pytest.raises(ValueError, match="strictly increasing"):
        allocate(costs, [64, 64, 128, 256], 128)
    with pytest.raises(ValueError, match="finite"):
        allocate(torch.full((1, 1, 4), float("nan")), lengths, 128)
    with pytest.raises(ValueError, match="axes"):
        allocate(costs[0], lengths, 128)
    with pytest.raises(ValueError, match="solver"):
        allocate(costs, lengths, 128, solver="pulp")
