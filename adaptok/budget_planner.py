"""Choosing per-block token counts for clips: scorer-driven (IPAL), uniform, or oracle.

This is where the networks meet the allocator: the scorer (or, for the oracle, real
decodes) supplies each block's cost at every candidate length, and ``adaptok.alloc`` solves
the budgeted choice. It is the one planning path: the ``AllocationEvaluator`` callback, the
annotator (``modules.AnnotatorModule``), ``adaptok tokenize`` and ``load_pretrained`` all
allocate through :meth:`TokenBudgetPlanner.plan`, so the same costs and budget give the same
lengths everywhere. Budgets are :class:`adaptok.alloc.TokenBudget` values (a bare number is
refused: it could be a fraction or a mean). ``target`` allocation (the fewest tokens whose
predicted cost reaches a quality threshold) is :meth:`TokenBudgetPlanner.plan_target`.

Conditioning. A block's cost depends on the lengths kept by earlier blocks (the decoder is
block-causal). In ``streaming`` and ``causal_table`` modes the planner scores block ``b``
after fixing blocks ``< b`` (causal: each decision uses only the past, as a streaming encoder
must). In ``batch`` and ``per_clip`` modes all blocks are scored at once with every earlier
block at full length, then solved jointly. In ``streaming`` mode the price per token is
carried from call to call (a stream of clips) or, with ``carry_price=False``, started afresh
for every clip alone, so a clip's lengths depend on nothing but the clip (annotation).

``causal_table`` is the official code's IPAL (``models/adaptok.py::encode_eval``): for
``b = 0..K-1``, score block ``b`` given the chosen lengths of blocks ``< b``, then solve one
ILP over the batch whose total for block ``b`` is ``B x target[b]`` (rounded down onto the
candidate grid), the targets read from a per-block table
(:data:`adaptok.alloc.REFERENCE_BLOCK_TABLE` by default). K scorer passes and K ILPs per
batch; a clip's lengths depend on its batch-mates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from adaptok.alloc import (
    InfeasibleBudgetError,
    StreamingAllocator,
    TokenBudget,
    allocate,
    block_targets,
)
from adaptok.alloc.feasibility import TokenGrid, check_total, total_from_mean
from adaptok.losses.block_quality import BlockQuality, measure_block_costs, measure_cost_table
from adaptok.nn.scorer import BlockCausalScorer
from adaptok.nn.tokenizer import AdapTokTokenizer, TokenizerEncoding

__all__ = [
    "PLANNER_MODES",
    "PLANNING_VERSION",
    "AllocationPolicy",
    "PlannerMode",
    "TokenBudgetPlanner",
    "default_candidates",
]

AllocationPolicy = Literal["scorer", "uniform", "oracle"]
PlannerMode = Literal["batch", "per_clip", "streaming", "causal_table"]
PLANNER_MODES: tuple[str, ...] = ("batch", "per_clip", "streaming", "causal_table")
PLANNING_VERSION = 2
"""Version of the planning procedure: raised whenever the same weights, budgets and settings
may give other lengths (2: ``per_clip`` and ``batch`` solve on the scorer's normalised
predictions, and ``streaming`` scores each block given the lengths chosen for the earlier
ones). Annotation sets record it, so a resumed run refuses shards planned the old way."""


def default_candidates(tokens_per_block: int, count: int = 8) -> list[int]:
    """The paper's candidate grid: ``count`` evenly spaced lengths up to ``tokens_per_block``.

    docs/METHOD.md section 3: the scorer reads every 64th of 512 positions, i.e.
    ``M/8, 2M/8, ..., M``.
    """
    count = min(count, tokens_per_block)
    return sorted({max(1, round(tokens_per_block * (j + 1) / count)) for j in range(count)})


class TokenBudgetPlanner:
    """Per-block token counts for a batch of clips at a given mean budget.

    Args:
        tokenizer: The frozen tokenizer.
        scorer: The trained block-causal scorer (for ``policy='scorer'``).
        quality: Cost of a reconstructed block (for ``policy='oracle'``).
        mode: Default allocation mode: ``streaming`` (causal, block by block, a price per
            token), ``causal_table`` (the official code: causal, one batch ILP per block with
            a per-block target), ``batch`` (the paper's ILP over the mini-batch) or
            ``per_clip`` (each clip its own budget).
        solver: ``fast`` (exact, vectorised) or ``mip`` (python-mip CBC).
        equality: Spend the budget exactly (the paper) instead of at most. ``causal_table``
            always spends its rounded block totals exactly, as the official code.
        candidates: Candidate lengths; default the scorer's, or without a scorer the paper's
            grid of 8 (``M/8, 2M/8, ..., M``; docs/METHOD.md section 3), so the oracle runs
            on its own.
        block_table: ``causal_table``'s targets: budget fraction -> one target fraction (of
            the tokens per block) per block; None = the official table
            (:data:`adaptok.alloc.REFERENCE_BLOCK_TABLE`, 4 blocks).
        carry_price: ``streaming``: keep each budget's price per token from call to call (a
            stream of clips; a clip's lengths depend on the clips before it) or, False, run
            every clip alone from a fresh price (lengths independent of batch-mates, batch
            size and order).

    Raises:
        ValueError: An unknown mode, or candidate lengths outside ``[1, M]``.
    """

    def __init__(
        self,
        tokenizer: AdapTokTokenizer,
        scorer: BlockCausalScorer | None = None,
        quality: BlockQuality | None = None,
        mode: PlannerMode = "streaming",
        solver: Literal["fast", "mip"] = "fast",
        equality: bool = True,
        candidates: Sequence[int] | None = None,
        block_table: Mapping[float, Sequence[float]] | None = None,
        carry_price: bool = True,
    ) -> None:
        if mode not in PLANNER_MODES:
            raise ValueError(f"mode must be one of {PLANNER_MODES}, got {mode!r}")
        self.tokenizer = tokenizer
        self.block_table = block_table
        self.scorer = scorer
        self.quality = quality
        self.mode = mode
        self.solver = solver
        self.equality = equality
        self.carry_price = carry_price
        if candidates is None:
            candidates = (
                scorer.candidate_lengths
                if scorer is not None
                else default_candidates(tokenizer.tokens_per_block)
            )
        self.candidates = sorted({int(c) for c in candidates})
        if not self.candidates or not 1 <= self.candidates[0] <= self.candidates[-1] <= (
            tokenizer.tokens_per_block
        ):
            raise ValueError(
                f"candidate lengths {list(candidates)} must lie in [1, {tokenizer.tokens_per_block}]"
            )
        self._streaming: dict[tuple[float, str], StreamingAllocator] = {}

    def budget(self, budget: TokenBudget) -> TokenBudget:
        """``budget``, checked to be a :class:`TokenBudget` of this tokenizer.

        Args:
            budget: A :class:`TokenBudget` (build one from a YAML fraction with
                :meth:`TokenBudget.from_fraction`).

        Returns:
            ``budget`` unchanged.

        Raises:
            TypeError: Not a :class:`TokenBudget` (a bare number could be a fraction or a
                mean: the planner does not guess).
            ValueError: A budget of another tokens-per-block.
        """
        if not isinstance(budget, TokenBudget):
            raise TypeError(
                f"budgets are TokenBudget values, got {type(budget).__name__} {budget!r}: build "
                "one with TokenBudget.from_fraction(fraction, tokens_per_block) or "
                "TokenBudget(mean_tokens, tokens_per_block)"
            )
        tokens = self.tokenizer.tokens_per_block
        if budget.tokens_per_block != tokens:
            raise ValueError(
                f"budget {budget} is of {budget.tokens_per_block} tokens per block, the "
                f"tokenizer has {tokens}"
            )
        return budget

    def feasible_range(self) -> str:
        """The budgets the candidate lengths can meet, in words (for error messages)."""
        tokens = self.tokenizer.tokens_per_block
        low, high = self.candidates[0] / tokens, self.candidates[-1] / tokens
        return (
            f"feasible budgets lie in [{low:.4g}, {high:.4g}] (the candidate lengths "
            f"{self.candidates} of {tokens} tokens per block)"
        )

    def budget_from_fraction(self, fraction: float) -> TokenBudget:
        """``TokenBudget.from_fraction(fraction, M)``, refusing a fraction outside ``(0, 1]``.

        The boundary where a user's fraction (``--budget``, ``tokenize(budget=...)``) becomes
        a budget: the refusal names the feasible range. Call :meth:`check_budget` on the
        result to refuse what the candidates cannot meet.

        Args:
            fraction: Share of the ``M`` tokens of each block kept on average.

        Returns:
            The :class:`TokenBudget`.

        Raises:
            InfeasibleBudgetError: ``fraction`` is not a number in ``(0, 1]`` (NaN and
                infinities included); the message names the feasible range.
        """
        try:
            return TokenBudget.from_fraction(fraction, self.tokenizer.tokens_per_block)
        except (TypeError, ValueError) as error:
            raise InfeasibleBudgetError(
                f"budget {fraction} is not a fraction of the tokens per block in (0, 1]; "
                f"{self.feasible_range()}"
            ) from error

    def check_budget(
        self,
        budget: TokenBudget,
        mode: PlannerMode | None = None,
        policy: AllocationPolicy = "scorer",
    ) -> list[float] | None:
        """Refuse, before any work, a budget the planner cannot meet in ``mode``.

        ``uniform`` policy: ``round(mean tokens)`` must be a length in ``[1, M]``.
        ``causal_table``: the block table must have a row for the budget. The other modes:
        the mean must lie within the candidate lengths (above the longest is allowed when
        spending at most), and each clip's total
        ``K x mean`` must be reachable with them (an equality budget exactly; ``batch`` is
        then feasible for any batch size too).

        Args:
            budget: The budget.
            mode: Overrides the planner's mode.
            policy: ``uniform`` checks the uniform count only; ``scorer``/``oracle`` the mode.

        Returns:
            ``causal_table``: the target mean tokens of each block position
            (:meth:`block_targets`); otherwise None.

        Raises:
            TypeError: ``budget`` is not a :class:`TokenBudget`.
            ValueError: ``causal_table`` and no row in the block table; a uniform budget
                that rounds to no token; a budget of another tokens-per-block.
            InfeasibleBudgetError: A mean outside the candidate lengths, or a clip total
                they cannot meet (the message names the feasible range).
        """
        budget = self.budget(budget)
        mean_tokens = budget.mean_tokens
        if policy == "uniform":
            count = round(mean_tokens)
            if count < 1:  # mean_tokens <= M already (TokenBudget)
                raise ValueError(
                    f"uniform allocation at budget {budget} keeps round({mean_tokens:g}) = "
                    f"{count} tokens per block; it needs at least 1"
                )
            return None
        mode = mode or self.mode
        if mode == "causal_table":
            return self.block_targets(budget)
        above = mean_tokens > self.candidates[-1] + 1e-9  # at most: every block at the longest
        if mean_tokens < self.candidates[0] - 1e-9 or (above and self.equality):
            raise InfeasibleBudgetError(
                f"budget {budget.fraction:g} ({mean_tokens:.4g} tokens per block) is "
                f"infeasible: {self.feasible_range()}"
            )
        blocks = self.tokenizer.num_blocks
        grid = TokenGrid.from_lengths(np.asarray(self.candidates, dtype=np.int64))
        try:
            total = total_from_mean(mean_tokens, blocks, self.equality)
            check_total(total, blocks, grid, self.equality)
        except InfeasibleBudgetError as error:
            raise InfeasibleBudgetError(
                f"budget {budget.fraction:g} ({mean_tokens:.4g} tokens per block, {blocks} "
                f"blocks per clip) cannot be spent exactly: {error}. Choose a budget whose "
                "clip total is a reachable whole number of tokens, or spend at most the "
                "budget (equality=False)"
            ) from error
        return None

    def _streaming_allocator(
        self, budget: TokenBudget, policy: AllocationPolicy
    ) -> StreamingAllocator:
        """One streaming allocator per (budget, policy), kept across batches.

        Its price per token carries over time instead of restarting from an estimate on every
        batch.
        """
        key = (budget.mean_tokens, policy)
        if key not in self._streaming:
            self._streaming[key] = self._fresh_streaming_allocator(budget)
        return self._streaming[key]

    def _fresh_streaming_allocator(self, budget: TokenBudget) -> StreamingAllocator:
        """A streaming allocator at ``budget`` with no price yet."""
        return StreamingAllocator(
            self.candidates,
            mean_tokens=budget.mean_tokens,
            num_blocks=self.tokenizer.num_blocks,
            equality=self.equality,
            solver=self.solver,
        )

    def block_targets(self, budget: TokenBudget) -> list[float]:
        """``causal_table``'s target mean tokens of each block position at this budget.

        Args:
            budget: The budget; its fraction selects the table's row.

        Returns:
            ``K`` target mean tokens, one per block position.

        Raises:
            TypeError: ``budget`` is not a :class:`TokenBudget`.
            ValueError: The table has no row for the budget's fraction or not K entries.
        """
        budget = self.budget(budget)
        targets = block_targets(
            budget.fraction, budget.tokens_per_block, self.tokenizer.num_blocks, self.block_table
        )
        return targets.tolist()

    def table_allocator(self, budget: TokenBudget) -> StreamingAllocator:
        """A fresh ``causal_table`` allocator: one batch ILP per block, totals rounded down.

        Raises:
            TypeError: ``budget`` is not a :class:`TokenBudget`.
            ValueError: The block table has no row for the budget.
        """
        return StreamingAllocator(
            self.candidates,
            block_budgets=self.block_targets(budget),
            equality=True,
            solver=self.solver,
            round_budgets=True,
        )

    def full_lengths(self, batch_size: int, device: torch.device) -> Tensor:
        """``(B, K)`` lengths keeping every token."""
        shape = (batch_size, self.tokenizer.num_blocks)
        return torch.full(shape, self.tokenizer.tokens_per_block, dtype=torch.long, device=device)

    @torch.no_grad()
    def costs(self, policy: AllocationPolicy, video: Tensor, encoding: TokenizerEncoding) -> Tensor:
        """``(B, K, J)`` costs of every block at every candidate, earlier blocks at full length.

        ``scorer``: one scorer pass, its predictions in the label metric's units
        (``scorer.to_label_units``: the allocation sums costs, so they must be in the units
        whose sum it minimises, whatever the scorer's label transform); ``oracle``: ``K``
        rounds of ``J`` real decodes, each scored by ``quality`` (lower is better for both).
        """
        full = self.full_lengths(video.shape[0], video.device)
        if policy == "scorer" and self.scorer is not None:
            return self.scorer.to_label_units(
                self.scorer(encoding.latents, encoding.quantized, full)
            )
        return measure_cost_table(
            self.tokenizer,
            self._measuring_quality(policy),
            video,
            encoding.codes,
            full,
            self.candidates,
        )

    def _measuring_quality(self, policy: AllocationPolicy) -> BlockQuality:
        """The cost function that measures a table for ``policy``.

        Raises:
            ValueError: ``scorer`` without a scorer, or ``oracle`` without a quality.
        """
        if policy == "scorer":
            raise ValueError("policy='scorer' needs a scorer")
        if self.quality is None:
            raise ValueError("policy='oracle' needs a quality (cost) function")
        return self.quality

    def _block_costs(
        self,
        policy: AllocationPolicy,
        video: Tensor,
        encoding: TokenizerEncoding,
        context: Tensor,
        block: int,
    ) -> Tensor:
        """``(B, J)`` costs of block ``block`` with earlier blocks kept at ``context``."""
        if policy == "scorer" and self.scorer is not None:
            predictions = self.scorer(encoding.latents, encoding.quantized, context)[:, block]
            return self.scorer.to_label_units(predictions)
        quality = self._measuring_quality(policy)
        blocks = torch.full((video.shape[0],), block, dtype=torch.long, device=video.device)
        return measure_block_costs(
            self.tokenizer, quality, video, encoding.codes, context, blocks, self.candidates
        )

    @torch.no_grad()
    def plan(
        self,
        video: Tensor,
        encoding: TokenizerEncoding,
        budget: TokenBudget,
        policy: AllocationPolicy = "scorer",
        mode: PlannerMode | None = None,
        costs: Tensor | None = None,
    ) -> Tensor:
        """Choose the lengths.

        Args:
            video: ``(B, C, T, H, W)`` clips in [0, 1] (used by the oracle only).
            encoding: ``tokenizer.encode(video)``.
            budget: The budget, a :class:`TokenBudget` (e.g.
                ``TokenBudget.from_fraction(0.5, M)``).
            policy: ``scorer`` (IPAL), ``uniform`` (every block ``round(mean tokens)``) or
                ``oracle`` (IPAL on measured instead of predicted costs).
            mode: Overrides the planner's mode for this call.
            costs: ``(B, K, J)`` from :meth:`costs` for this ``policy``, to reuse across
                budgets (``batch``/``per_clip`` only: the causal modes re-score block by
                block).

        Returns:
            ``(B, K)`` long lengths.

        Raises:
            TypeError: ``budget`` is not a :class:`TokenBudget`.
            ValueError: An unknown mode, a uniform count below 1, a budget of another
                tokenizer.
            InfeasibleBudgetError: A budget the candidate lengths cannot meet.
        """
        batch, device = video.shape[0], video.device
        num_blocks = self.tokenizer.num_blocks
        budget = self.budget(budget)
        mean_tokens = budget.mean_tokens
        if policy == "uniform":
            self.check_budget(budget, policy="uniform")
            count = round(mean_tokens)
            return torch.full((batch, num_blocks), count, dtype=torch.long, device=device)
        mode = mode or self.mode
        if mode not in PLANNER_MODES:
            raise ValueError(f"mode must be one of {PLANNER_MODES}, got {mode!r}")
        if mode in ("streaming", "causal_table"):
            return self._plan_causal(video, encoding, budget, policy, mode)
        if costs is None:
            costs = self.costs(policy, video, encoding)
        result = allocate(
            costs,
            self.candidates,
            mean_tokens,
            mode=mode,
            solver=self.solver,
            equality=self.equality,
        )
        return torch.as_tensor(result.lengths, dtype=torch.long, device=device)

    def _plan_causal(
        self,
        video: Tensor,
        encoding: TokenizerEncoding,
        budget: TokenBudget,
        policy: AllocationPolicy,
        mode: PlannerMode,
    ) -> Tensor:
        """``streaming`` / ``causal_table``: block ``b`` scored given the lengths of ``< b``.

        The scorer runs over the whole batch (a clip's scores do not depend on its
        batch-mates); the allocators are one for the batch (``causal_table``, a carried
        ``streaming`` price) or one per clip (``streaming`` without ``carry_price``).
        """
        batch = video.shape[0]
        chosen = self.full_lengths(batch, video.device)
        if mode == "causal_table":
            allocators = [self.table_allocator(budget)]
        elif self.carry_price:
            allocators = [self._streaming_allocator(budget, policy)]
        else:
            allocators = [self._fresh_streaming_allocator(budget) for _ in range(batch)]
        for block in range(self.tokenizer.num_blocks):
            costs = self._block_costs(policy, video, encoding, chosen, block)
            if len(allocators) == 1:
                step = allocators[0].step(costs)
            else:  # every clip alone: its price follows its own blocks only
                step = np.concatenate([a.step(costs[i : i + 1]) for i, a in enumerate(allocators)])
            chosen[:, block] = torch.as_tensor(step, device=video.device)
        return chosen

    @torch.no_grad()
    def plan_target(self, video: Tensor, encoding: TokenizerEncoding, threshold: float) -> Tensor:
        """``target`` allocation: per block, the fewest tokens predicted to reach ``threshold``.

        The scorer scores every block with the earlier blocks at full length, in the label
        metric's units (:meth:`costs`), so the threshold is compared as given. A block that
        reaches the threshold at no candidate gets its lowest-cost length
        (``adaptok.alloc.target``).

        Args:
            video: ``(B, C, T, H, W)`` clips in [0, 1].
            encoding: ``tokenizer.encode(video)``.
            threshold: The predicted cost each block must reach, in the scorer metric's units
                (LPIPS for the paper's scorer; lower is better).

        Returns:
            ``(B, K)`` long lengths.

        Raises:
            ValueError: The planner has no scorer.
        """
        if self.scorer is None:
            raise ValueError("target allocation needs a scorer")
        costs = self.costs("scorer", video, encoding)
        result = allocate(costs, self.candidates, mode="target", threshold=float(threshold))
        return torch.as_tensor(result.lengths, dtype=torch.long, device=video.device)
