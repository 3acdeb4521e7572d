"""TokenBudgetPlanner: scorer / uniform / oracle policies in every mode meet the budget."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from adaptok.alloc import InfeasibleBudgetError, TokenBudget
from adaptok.budget_planner import TokenBudgetPlanner
from adaptok.losses import BlockQuality
from adaptok.nn.scorer import BlockCausalScorer
from modules.loading import load_frozen_tokenizer


@pytest.fixture(scope="module")
def parts(tokenizer_ckpt: Path) -> tuple:
    tokenizer = load_frozen_tokenizer(tokenizer_ckpt)
    torch.manual_seed(0)
    scorer = BlockCausalScorer(
        token_width=32,
        num_blocks=4,
        tokens_per_block=8,
        num_candidates=4,
        width=32,
        depth=1,
        heads=2,
    ).eval()
    video = torch.rand(3, 3, 8, 32, 32, generator=torch.Generator().manual_seed(2))
    return tokenizer, scorer, video, tokenizer.encode(video)


@pytest.mark.parametrize("mode", ["batch", "per_clip", "streaming"])
@pytest.mark.parametrize("policy", ["scorer", "oracle"])
def test_every_clip_spends_its_budget_exactly(parts: tuple, mode: str, policy: str) -> None:
    tokenizer, scorer, video, encoding = parts
    planner = TokenBudgetPlanner(tokenizer, scorer, BlockQuality("mse"), mode=mode)
    lengths = planner.plan(video, encoding, TokenBudget.from_fraction(0.5, 8), policy=policy)
    assert lengths.shape == (3, 4)
    assert set(lengths.flatten().tolist()) <= {2, 4, 6, 8}
    if mode == "batch":
        assert int(lengths.sum()) == 3 * 4 * 4
    else:
        assert lengths.sum(1).tolist() == [16, 16, 16]


def test_uniform_policy_and_its_range_check(parts: tuple) -> None:
    tokenizer, scorer, video, encoding = parts
    planner = TokenBudgetPlanner(tokenizer, scorer)
    assert planner.plan(video, encoding, TokenBudget(5, 8), "uniform").unique().tolist() == [5]
    with pytest.raises(ValueError, match=r"mean in \(0, 8\]"):
        planner.plan(video, encoding, TokenBudget(9, 8), "uniform")
    with pytest.raises(ValueError, match=r"keeps round\(0.25\) = 0 tokens per block"):
        planner.plan(video, encoding, TokenBudget(0.25, 8), "uniform")  # rounds to 0 tokens
    with pytest.raises(ValueError, match="of 16 tokens per block, the tokenizer has 8"):
        planner.plan(video, encoding, TokenBudget(5, 16), "uniform")


def test_oracle_beats_or_ties_uniform_on_the_measured_cost(parts: tuple) -> None:
    tokenizer, scorer, video, encoding = parts
    quality = BlockQuality("mse")
    planner = TokenBudgetPlanner(tokenizer, scorer, quality, mode="batch")

    def cost(lengths: torch.Tensor) -> float:
        return float(quality(video, tokenizer.decode(encoding.codes, lengths)).sum())

    oracle = planner.plan(video, encoding, TokenBudget(4, 8), "oracle")
    uniform = planner.plan(video, encoding, TokenBudget(4, 8), "uniform")
    # per-block costs are measured with earlier blocks at full length, so allow a small slack
    assert cost(oracle) <= cost(uniform) * 1.05


def test_oracle_needs_no_scorer(parts: tuple) -> None:
    """Without a scorer the oracle allocates over the paper's grid of 8 candidates (M/8 ... M)."""
    tokenizer, _, video, encoding = parts
    planner = TokenBudgetPlanner(tokenizer, None, BlockQuality("mse"), mode="per_clip")
    assert planner.candidates == [1, 2, 3, 4, 5, 6, 7, 8]
    lengths = planner.plan(video, encoding, TokenBudget(3, 8), policy="oracle")
    assert lengths.sum(1).tolist() == [12, 12, 12]
    assert len(set(lengths.flatten().tolist())) > 1  # not every block kept in full
    with pytest.raises(ValueError, match="candidate lengths"):
        TokenBudgetPlanner(tokenizer, None, candidates=[0, 9])


def _brute_force_block(costs: torch.Tensor, candidates: list[int], total: int) -> float:
    """Least summed cost of one block position over the clips with lengths summing to total."""
    best = float("inf")
    for choice in itertools.product(range(len(candidates)), repeat=costs.shape[0]):
        if sum(candidates[j] for j in choice) == total:
            best = min(best, float(sum(costs[i, j] for i, j in enumerate(choice))))
    return best


@pytest.mark.parametrize("policy", ["scorer", "oracle"])
def test_causal_table_is_the_official_procedure(parts: tuple, policy: str) -> None:
    """Block b is scored with the lengths chosen for blocks < b, then one ILP over the batch
    spends block b's table target x B, rounded down onto the grid (docs/METHOD.md
    section 4)."""
    tokenizer, scorer, video, encoding = parts
    quality = BlockQuality("mse")
    table = {0.5: [0.9, 0.45, 0.35, 0.3]}  # x 8 tokens: 7.2, 3.6, 2.8, 2.4
    planner = TokenBudgetPlanner(tokenizer, scorer, quality, mode="causal_table", block_table=table)
    lengths = planner.plan(video, encoding, TokenBudget(4, 8), policy=policy)
    # 3 clips: floor(3 x 7.2) = 21 -> 20 on the grid of 2; 10.8 -> 10; 8.4 -> 8; 7.2 -> 6
    assert lengths.sum(0).tolist() == [20, 10, 8, 6]
    context = planner.full_lengths(3, video.device)
    for block in range(4):
        with torch.no_grad():
            costs = planner._block_costs(policy, video, encoding, context, block)
        chosen = costs[
            torch.arange(3), [planner.candidates.index(int(x)) for x in lengths[:, block]]
        ]
        best = _brute_force_block(costs, planner.candidates, int(lengths[:, block].sum()))
        assert float(chosen.sum()) == pytest.approx(best, abs=1e-6)
        context[:, block] = lengths[:, block]


def test_causal_table_default_is_the_official_table(parts: tuple) -> None:
    tokenizer, scorer, video, encoding = parts
    planner = TokenBudgetPlanner(tokenizer, scorer, mode="causal_table")
    # official t1024_b4 row 64 of 256 = [142, 40, 36, 36] -> x 8 / 256 tokens per block
    assert planner.block_targets(TokenBudget(2, 8)) == [142 / 32, 40 / 32, 36 / 32, 36 / 32]
    lengths = planner.plan(video, encoding, TokenBudget.from_fraction(0.25, 8))
    assert lengths.sum(0).tolist() == [12, 6, 6, 6]  # floor(3 x 4.4375) = 13 -> 12; 3.75 -> 6
    with pytest.raises(ValueError, match="no row"):
        planner.plan(video, encoding, TokenBudget(2.5, 8))  # 0.3125 x M: not a row
    with pytest.raises(ValueError, match="mode must be"):
        TokenBudgetPlanner(tokenizer, scorer, mode="paper")  # type: ignore[arg-type]


def test_streaming_price_is_carried_or_started_per_clip(parts: tuple) -> None:
    """carry_price=False (annotation): every clip alone from a fresh price, so a clip's
    lengths do not depend on its batch-mates; the carried price (a stream) does remember."""
    tokenizer, scorer, video, encoding = parts
    budget = TokenBudget(4, 8)
    alone = TokenBudgetPlanner(tokenizer, scorer, mode="streaming", carry_price=False)
    together = alone.plan(video, encoding, budget)
    for clip in range(3):
        single = tokenizer.encode(video[clip : clip + 1])
        one = alone.plan(video[clip : clip + 1], single, budget)
        assert one.tolist() == together[clip : clip + 1].tolist()
        # the same as a fresh carried-price planner that sees only this clip
        fresh = TokenBudgetPlanner(tokenizer, scorer, mode="streaming")
        assert fresh.plan(video[clip : clip + 1], single, budget).tolist() == one.tolist()
    assert together.sum(1).tolist() == [16, 16, 16]
    stream = TokenBudgetPlanner(tokenizer, scorer, mode="streaming")
    stream.plan(video, encoding, budget)
    assert stream._streaming[(4.0, "scorer")].blocks_allocated == 12
    stream.plan(video, encoding, budget)
    assert stream._streaming[(4.0, "scorer")].blocks_allocated == 24  # one price, carried


def test_check_budget_refuses_what_the_candidates_cannot_meet(parts: tuple) -> None:
    tokenizer, scorer, _, _ = parts
    planner = TokenBudgetPlanner(tokenizer, scorer, mode="per_clip")  # candidates 2, 4, 6, 8
    planner.check_budget(TokenBudget.from_fraction(0.25, 8))
    with pytest.raises(InfeasibleBudgetError, match="infeasible"):
        planner.check_budget(TokenBudget(1, 8))  # 4 tokens per clip < 4 x 2
    with pytest.raises(InfeasibleBudgetError, match="cannot be met exactly"):
        planner.check_budget(TokenBudget(4.25, 8))  # 17 tokens: odd, the grid is even
    planner.check_budget(TokenBudget(1, 8), mode="causal_table")  # 0.125: a table row
    with pytest.raises(ValueError, match="no row"):
        planner.check_budget(TokenBudget(2.5, 8), mode="causal_table")  # 0.3125: none


@pytest.mark.parametrize("bare", [0.5, 4, 4.0])
def test_a_bare_number_is_refused_not_read_as_a_mean_or_a_fraction(parts: tuple, bare) -> None:
    """plan(video, enc, 0.5) once planned half a token per block: now every entry refuses it."""
    tokenizer, scorer, video, encoding = parts
    planner = TokenBudgetPlanner(tokenizer, scorer, mode="per_clip")
    calls = [
        lambda: planner.plan(video, encoding, bare),
        lambda: planner.plan(video, encoding, bare, "uniform"),
        lambda: planner.check_budget(bare),
        lambda: planner.block_targets(bare),
        lambda: planner.table_allocator(bare),
    ]
    for call in calls:
        with pytest.raises(TypeError, match="budgets are TokenBudget values.*from_fraction"):
            call()


def test_budget_from_fraction_names_the_feasible_range(parts: tuple) -> None:
    tokenizer, scorer, _, _ = parts
    planner = TokenBudgetPlanner(tokenizer, scorer, mode="per_clip")  # candidates 2, 4, 6, 8
    assert planner.budget_from_fraction(0.5) == TokenBudget(4, 8)
    for fraction in (0.0, 1.5, float("nan")):
        with pytest.raises(
            InfeasibleBudgetError,
            match=rf"budget {fraction} is not a fraction .* feasible budgets lie in \[0.25, 1\]",
        ):
            planner.budget_from_fraction(fraction)
    with pytest.raises(InfeasibleBudgetError, match=r"budget 0.125 \(1 tokens per block\)"):
        planner.check_budget(planner.budget_from_fraction(0.125))
    assert planner.check_budget(planner.budget_from_fraction(0.25)) is None
    table = planner.check_budget(planner.budget_from_fraction(0.25), mode="causal_table")
    assert table == planner.block_targets(TokenBudget(2, 8))  # the targets, computed once


@pytest.mark.parametrize("transform", ["identity", "log"])
def test_plan_target_compares_the_threshold_in_the_label_metrics_units(
    parts: tuple, transform: str
) -> None:
    """The threshold is in the label metric's units, as the planner's scorer costs are (the
    scorer's own buffers and label transform convert its predictions)."""
    tokenizer, _, video, encoding = parts
    torch.manual_seed(0)
    scorer = BlockCausalScorer(
        token_width=32,
        num_blocks=4,
        tokens_per_block=8,
        num_candidates=4,
        width=32,
        depth=1,
        heads=2,
        label_transform=transform,
    ).eval()
    scorer.set_label_normalisation(0.3, 0.05)
    planner = TokenBudgetPlanner(tokenizer, scorer, mode="per_clip")
    labels = planner.costs("scorer", video, encoding)
    predictions = scorer(encoding.latents, encoding.quantized, planner.full_lengths(3, "cpu"))
    torch.testing.assert_close(labels, scorer.to_label_units(predictions))
    ordered = labels.flatten().sort().values
    middle = len(ordered) // 2
    threshold = float(ordered[middle] + ordered[middle + 1]) / 2  # between two costs: no ties
    lengths = planner.plan_target(video, encoding, threshold)
    # each block keeps its shortest candidate whose label-unit cost reaches the threshold
    grid = torch.tensor(planner.candidates)
    reached = labels <= threshold
    for clip, block in itertools.product(range(3), range(4)):
        if reached[clip, block].any():
            first = int(grid[reached[clip, block]].min())
            assert int(lengths[clip, block]) == first
    assert (planner.plan_target(video, encoding, 1e6) == 2).all()  # anything reaches it
