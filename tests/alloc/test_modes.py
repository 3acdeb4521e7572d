"""Allocation modes: batch, per-clip independence, causal streaming, quality targets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from adaptok.alloc import StreamingAllocator, allocate

LENGTHS = np.arange(64, 513, 64)


def decreasing_costs(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Noisy costs that fall with the length, like a scorer's predicted LPIPS (..., 8)."""
    scale = rng.uniform(0.05, 0.4, (*shape, 1))
    decay = rng.uniform(0.3, 1.5, (*shape, 1))
    costs = scale * (LENGTHS / 64.0) ** -decay + rng.normal(0.0, 0.005, (*shape, 8))
    return np.sort(costs, axis=-1)[..., ::-1].copy()


def per_clip_costs(allocation, costs: np.ndarray) -> np.ndarray:
    """(B,) summed chosen cost of each clip."""
    return np.take_along_axis(costs, allocation.choice[..., None], axis=-1)[..., 0].sum(axis=1)


@pytest.mark.parametrize("solver", ["fast", "mip"])
def test_batch_mode_shares_one_budget(solver: str) -> None:
    costs = decreasing_costs(np.random.default_rng(0), (6, 4))
    batch = allocate(costs, LENGTHS, 256, mode="batch", solver=solver)
    per_clip = allocate(costs, LENGTHS, 256, mode="per_clip", solver=solver)
    assert batch.total_tokens == per_clip.total_tokens == 256 * 24
    assert batch.mode == "batch" and per_clip.mode == "per_clip"
    # One shared budget is a relaxation of one budget per clip.
    assert batch.objective <= per_clip.objective + 1e-12
    # ...which is why a clip's lengths in batch mode depend on its batch-mates.
    assert (batch.lengths.sum(axis=1) != 256 * 4).any()


@pytest.mark.parametrize("solver", ["fast", "mip"])
@pytest.mark.parametrize("equality", [True, False])
def test_per_clip_mode_is_independent_of_batch_composition(solver: str, equality: bool) -> None:
    rng = np.random.default_rng(1)
    costs = decreasing_costs(rng, (5, 4))
    together = allocate(costs, LENGTHS, 192, mode="per_clip", solver=solver, equality=equality)
    clip_totals = together.lengths.sum(axis=1)
    assert np.all(clip_totals == 192 * 4) if equality else np.all(clip_totals <= 192 * 4)
    order = rng.permutation(5)
    shuffled = allocate(
        costs[order], LENGTHS, 192, mode="per_clip", solver=solver, equality=equality
    )
    np.testing.assert_allclose(
        per_clip_costs(shuffled, costs[order]), per_clip_costs(together, costs)[order]
    )
    others = decreasing_costs(rng, (3, 4))
    mixed = allocate(
        np.concatenate([costs[2:3], others]),
        LENGTHS,
        192,
        mode="per_clip",
        solver=solver,
        equality=equality,
    )
    alone = allocate(costs[2:3], LENGTHS, 192, mode="per_clip", solver=solver, equality=equality)
    assert per_clip_costs(mixed, np.concatenate([costs[2:3], others]))[0] == pytest.approx(
        per_clip_costs(alone, costs[2:3])[0]
    )
    assert per_clip_costs(alone, costs[2:3])[0] == pytest.approx(per_clip_costs(together, costs)[2])


def test_per_clip_budgets_per_clip_and_brute_force() -> None:
    rng = np.random.default_rng(2)
    lengths = np.array([64, 128, 192, 256])
    costs = rng.random((3, 3, 4))
    means = np.array([64.0, 128.0, 192.0])
    allocation = allocate(costs, lengths, means, mode="per_clip")
    for clip in range(3):
        best = min(
            costs[clip, np.arange(3), list(p)].sum()
            for p in itertools.product(range(4), repeat=3)
            if lengths[list(p)].sum() == 3 * means[clip]
        )
        assert per_clip_costs(allocation, costs)[clip] == pytest.approx(best)


@pytest.mark.parametrize("solver", ["fast", "mip"])
@pytest.mark.parametrize("equality", [True, False])
def test_streaming_equals_batch_given_the_same_block_budgets(solver: str, equality: bool) -> None:
    costs = decreasing_costs(np.random.default_rng(3), (8, 4))
    budgets = [448, 256, 192, 128] if equality else [456, 242, 172, 150]
    batch = allocate(costs, LENGTHS, budgets, mode="batch", solver=solver, equality=equality)
    streaming = allocate(
        costs, LENGTHS, budgets, mode="streaming", solver=solver, equality=equality
    )
    assert streaming.objective == pytest.approx(batch.objective, abs=1e-12)
    np.testing.assert_array_equal(streaming.lengths.sum(axis=0), batch.lengths.sum(axis=0))
    position_totals = streaming.lengths.sum(axis=0)
    limits = 8 * np.array(budgets)
    assert np.all(position_totals == limits) if equality else np.all(position_totals <= limits)
    # The same through the step API, re-scoring block b after blocks < b are fixed.
    allocator = StreamingAllocator(LENGTHS, block_budgets=budgets, equality=equality, solver=solver)
    stepped = np.stack([allocator.step(torch.tensor(costs[:, b])) for b in range(4)], axis=1)
    np.testing.assert_array_equal(stepped.sum(axis=0), position_totals)


@pytest.mark.parametrize("budget", [192, [384, 192, 128, 64]])
def test_streaming_is_causal(budget: float | list[float]) -> None:
    rng = np.random.default_rng(4)
    costs = decreasing_costs(rng, (6, 4))
    first = allocate(costs, LENGTHS, budget, mode="streaming")
    changed = costs.copy()
    changed[:, 2:] = decreasing_costs(rng, (6, 2))
    second = allocate(changed, LENGTHS, budget, mode="streaming")
    np.testing.assert_array_equal(first.lengths[:, :2], second.lengths[:, :2])


@pytest.mark.parametrize("equality", [True, False])
def test_price_mode_meets_each_clips_budget(equality: bool) -> None:
    rng = np.random.default_rng(5)
    allocator = StreamingAllocator(LENGTHS, 256, num_blocks=4, equality=equality)
    for _ in range(5):  # new clips start automatically after block 4
        lengths = np.stack([allocator.step(decreasing_costs(rng, (7,))) for _ in range(4)], axis=1)
        totals = lengths.sum(axis=1)
        assert np.all(totals == 1024) if equality else np.all(totals <= 1024)
    assert allocator.price is not None and allocator.price >= 0.0


def test_learned_price_gives_the_harder_first_block_more() -> None:
    """No table: after a few batches the price alone gives block 0 (no past, steeper) most."""
    rng = np.random.default_rng(6)
    allocator = StreamingAllocator(LENGTHS, 256, num_blocks=4)
    position_means = []
    for _ in range(20):
        costs = decreasing_costs(rng, (32, 4))
        costs[:, 0] *= 3.0
        lengths = np.stack([allocator.step(costs[:, b]) for b in range(4)], axis=1)
        assert np.all(lengths.sum(axis=1) == 1024)
        position_means.append(lengths.mean(axis=0))
    late = np.mean(position_means[10:], axis=0)
    assert late[0] > late[1:].max()


@pytest.mark.parametrize("start_price", [None, 0.0])
def test_price_keeps_the_running_mean_on_target(start_price: float | None) -> None:
    rng = np.random.default_rng(7)
    allocator = StreamingAllocator(LENGTHS, 192, price=start_price)
    errors = []
    for steps in (100, 400):
        while allocator.blocks_allocated < steps * 16:
            allocator.step(decreasing_costs(rng, (16,)))
        errors.append(abs(allocator.running_mean - 192))
    # Integral control: the error is (final - initial price) / (rate * steps), so it shrinks.
    assert errors[1] < 0.06 * 192 and errors[1] <= errors[0] + 1.0
    if start_price is None:  # started at the first block's LP price
        assert errors[1] < 0.01 * 192


def test_price_mode_clip_does_not_depend_on_batch_mates_at_a_fixed_price() -> None:
    rng = np.random.default_rng(8)
    costs = decreasing_costs(rng, (5, 4))
    fixed = {"price": 2e-4, "adapt_rate": 0.0, "num_blocks": 4}
    together = StreamingAllocator(LENGTHS, 256, **fixed)
    alone = StreamingAllocator(LENGTHS, 256, **fixed)
    for block in range(4):
        both = together.step(costs[:, block])
        single = alone.step(costs[1:2, block])
        assert both[1] == single[0]


def test_streaming_allocator_checks_its_inputs() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        StreamingAllocator(LENGTHS, 256, block_budgets=[256, 256])
    allocator = StreamingAllocator(LENGTHS, 256, num_blocks=4)
    allocator.step(np.ones((3, 8)))
    with pytest.raises(ValueError, match="clips"):
        allocator.step(np.ones((2, 8)))
    with pytest.raises(ValueError, match="8 entries|lengths has 8"):
        allocator.step(np.ones((3, 7)))


def test_target_per_block_takes_the_fewest_tokens() -> None:
    costs = decreasing_costs(np.random.default_rng(9), (4, 4))
    threshold = float(np.median(costs))
    allocation = allocate(costs, LENGTHS, mode="target", threshold=threshold)
    chosen = np.take_along_axis(costs, allocation.choice[..., None], axis=-1)[..., 0]
    reachable = costs.min(axis=-1) <= threshold
    assert np.all(chosen[reachable] <= threshold)
    shorter = np.where(allocation.choice > 0, allocation.choice - 1, 0)
    one_less = np.take_along_axis(costs, shorter[..., None], axis=-1)[..., 0]
    assert np.all((one_less > threshold) | (allocation.choice == 0) | ~reachable)
    assert np.all(allocation.choice[~reachable] == np.argmin(costs[~reachable], axis=-1))
    assert allocation.solver == "threshold"


def test_target_per_clip_is_the_fewest_tokens_for_the_mean_cost() -> None:
    rng = np.random.default_rng(10)
    lengths = np.array([64, 128, 192, 256])
    costs = np.sort(rng.random((3, 3, 4)), axis=-1)[..., ::-1].copy()
    threshold = 0.45
    allocation = allocate(costs, lengths, mode="target", threshold=threshold, scope="clip")
    for clip in range(3):
        totals = [
            lengths[list(p)].sum()
            for p in itertools.product(range(4), repeat=3)
            if costs[clip, np.arange(3), list(p)].mean() <= threshold
        ]
        if totals:
            assert allocation.lengths[clip].sum() == min(totals)
    unreachable = allocate(costs, lengths, mode="target", threshold=-1.0, scope="clip")
    assert "cannot reach" in unreachable.notes[0]
    np.testing.assert_array_equal(unreachable.lengths, np.full((3, 3), 256))


def test_mode_arguments_are_checked() -> None:
    costs = np.ones((1, 2, 8))
    with pytest.raises(ValueError, match="mode"):
        allocate(costs, LENGTHS, 256, mode="global")
    with pytest.raises(ValueError, match="threshold"):
        allocate(costs, LENGTHS, mode="target")
    with pytest.raises(ValueError, match="threshold"):
        allocate(costs, LENGTHS, 256, mode="target", threshold=0.1)
    with pytest.raises(ValueError, match="scope"):
        allocate(costs, LENGTHS, mode="target", threshold=0.1, scope="video")
    with pytest.raises(ValueError, match="shape"):
        allocate(costs, LENGTHS, [256, 256, 256], mode="batch")
