"""Choosing per-block token counts for clips: scorer-driven (IPAL), uniform, or oracle.

This is where the networks meet the allocator: the scorer (or, for the oracle, real
decodes) supplies each block's cost at every candidate length, and ``adaptok.alloc`` solves
the budgeted choice. It is the one planning path: the ``AllocationEvaluator`` callback, the
annotator (``modules.AnnotatorModule``), ``adaptok tokenize`` and ``load_pretrained`` all
allocate through :meth:`TokenBudgetPlanner.plan`, so the same costs and budget give the same
lengths everywhere. Budgets are :class:`adaptok.alloc.TokenBudget` values.

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

from adaptok.alloc import StreamingAllocator, TokenBudget, allocate, block_targets
from adaptok.alloc.feasibility import TokenGrid, check_total, total_from_mean
from adaptok.losses.block_quality import BlockQuality, measure_block_costs
from adaptok.nn.scorer import BlockCausalScorer
from adaptok.nn.tokenizer import AdapTokTokenizer, TokenizerEncoding

__all__ = [
    "PLANNER_MODES",
    "AllocationPolicy",
    "PlannerMode",
    "TokenBudgetPlanner",
    "default_candidates",
]

AllocationPolicy = Literal["scorer", "uniform", "oracle"]
PlannerMode = Literal["batch", "per_clip", "streaming", "causal_table"]
PLANNER_MODES: tuple[str, ...] = ("batch", "per_clip", "streaming", "causal_table")


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

    def budget(self, budget: TokenBudget | float) -> TokenBudget:
        """``budget`` as a :class:`TokenBudget` of this tokenizer.

        Args:
            budget: A :class:`TokenBudget`, or a number read as mean tokens per block.

        Raises:
            ValueError: A budget of another tokens-per-block, or a mean outside ``(0, M]``.
        """
        tokens = self.tokenizer.tokens_per_block
        if isinstance(budget, TokenBudget):
            if budget.tokens_per_block != tokens:
                raise ValueError(
                    f"budget {budget} is of {budget.tokens_per_block} tokens per block, the "
                    f"tokenizer has {tokens}"
                )
            return budget
        return TokenBudget(float(budget), tokens)

    def check_budget(self, budget: TokenBudget, mode: PlannerMode | None = None) -> None:
        """Refuse, before any work, a budget the planner cannot meet in ``mode``.

        ``causal_table``: the block table must have a row for the budget. The other modes:
        each clip's total ``K x mean`` must be reachable with the candidate lengths (an
        equality budget exactly; ``batch`` is then feasible for any batch size too).

        Raises:
            ValueError: ``causal_table`` and no row in the block table.
            InfeasibleBudgetError: A clip total the candidates cannot meet (with the range).
        """
        mode = mode or self.mode
        if mode == "causal_table":
            self.block_targets(budget)
            return
        blocks = self.tokenizer.num_blocks
        grid = TokenGrid.from_lengths(np.asarray(self.candidates, dtype=np.int64))
        total = total_from_mean(self.budget(budget).mean_tokens, blocks, self.equality)
        check_total(total, blocks, grid, self.equality)

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

    def block_targets(self, budget: TokenBudget | float) -> list[float]:
        """``causal_table``'s target mean tokens of each block position at this budget.

        Raises:
            ValueError: The table has no row for the budget's fraction or not K entries.
        """
        budget = self.budget(budget)
        targets = block_targets(
            budget.fraction, budget.tokens_per_block, self.tokenizer.num_blocks, self.block_table
        )
        return targets.tolist()

    def table_allocator(self, budget: TokenBudget | float) -> StreamingAllocator:
        """A fresh ``causal_table`` allocator: one batch ILP per block, totals rounded down."""
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

        ``scorer``: one scorer pass (normalised predicted cost); ``oracle``: ``K`` rounds of
        ``J`` real decodes, each scored by ``quality`` (lower is better for both).
        """
        full = self.full_lengths(video.shape[0], video.device)
        if policy == "scorer" and self.scorer is not None:
            return self.scorer(encoding.latents, encoding.quantized, full)
        per_block = [
            self._block_costs(policy, video, encoding, full, b)
            for b in range(self.tokenizer.num_blocks)
        ]
        return torch.stack(per_block, dim=1)

    def _block_costs(
        self,
        policy: AllocationPolicy,
        video: Tensor,
        encoding: TokenizerEncoding,
        context: Tensor,
        block: int,
    ) -> Tensor:
        """``(B, J)`` costs of block ``block`` with earlier blocks kept at ``context``."""
        if policy == "scorer":
            if self.scorer is None:
                raise ValueError("policy='scorer' needs a scorer")
            return self.scorer(encoding.latents, encoding.quantized, context)[:, block]
        if self.quality is None:
            raise ValueError("policy='oracle' needs a quality (cost) function")
        blocks = torch.full((video.shape[0],), block, dtype=torch.long, device=video.device)
        return measure_block_costs(
            self.tokenizer, self.quality, video, encoding.codes, context, blocks, self.candidates
        )

    @torch.no_grad()
    def plan(
        self,
        video: Tensor,
        encoding: TokenizerEncoding,
        budget: TokenBudget | float,
        policy: AllocationPolicy = "scorer",
        mode: PlannerMode | None = None,
        costs: Tensor | None = None,
    ) -> Tensor:
        """Choose the lengths.

        Args:
            video: ``(B, C, T, H, W)`` clips in [0, 1] (used by the oracle only).
            encoding: ``tokenizer.encode(video)``.
            budget: The budget (a :class:`TokenBudget`; a number is read as mean tokens per
                block, e.g. 256 of 512).
            policy: ``scorer`` (IPAL), ``uniform`` (every block ``round(mean tokens)``) or
                ``oracle`` (IPAL on measured instead of predicted costs).
            mode: Overrides the planner's mode for this call.
            costs: ``(B, K, J)`` from :meth:`costs` for this ``policy``, to reuse across
                budgets (``batch``/``per_clip`` only: the causal modes re-score block by
                block).

        Returns:
            ``(B, K)`` long lengths.

        Raises:
            ValueError: An unknown mode, a uniform count outside ``[1, M]``, a budget of
                another tokenizer.
            InfeasibleBudgetError: A budget the candidate lengths cannot meet.
        """
        batch, device = video.shape[0], video.device
        num_blocks = self.tokenizer.num_blocks
        budget = self.budget(budget)
        mean_tokens = budget.mean_tokens
        if policy == "uniform":
            count = int(round(mean_tokens))
            if not 1 <= count <= self.tokenizer.tokens_per_block:
                raise ValueError(
                    f"mean_tokens {mean_tokens} outside [1, {self.tokenizer.tokens_per_block}]"
                )
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
