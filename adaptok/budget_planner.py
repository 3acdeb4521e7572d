"""Choosing per-block token counts for clips: scorer-driven (IPAL), uniform, or oracle.

This is where the networks meet the allocator: the scorer (or, for the oracle, real
decodes) supplies each block's cost at every candidate length, and ``adaptok.alloc`` solves
the budgeted choice. The same planner serves the ``TokenAllocator`` callback, annotation
writers and benchmarks.

Conditioning. A block's cost depends on the lengths kept by earlier blocks (the decoder is
block-causal). In ``streaming`` and ``causal_table`` modes the planner scores block ``b``
after fixing blocks ``< b`` (causal: each decision uses only the past, as a streaming encoder
must). In ``batch`` and ``per_clip`` modes all blocks are scored at once with every earlier
block at full length, then solved jointly.

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

import torch
from torch import Tensor

from adaptok.alloc import StreamingAllocator, allocate, block_targets
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

    def _streaming_allocator(
        self, mean_tokens: float, policy: AllocationPolicy
    ) -> StreamingAllocator:
        """One streaming allocator per (budget, policy), kept across batches.

        Its price per token carries over time instead of restarting from an estimate on every
        batch.
        """
        key = (float(mean_tokens), policy)
        if key not in self._streaming:
            self._streaming[key] = StreamingAllocator(
                self.candidates,
                mean_tokens=mean_tokens,
                num_blocks=self.tokenizer.num_blocks,
                equality=self.equality,
                solver=self.solver,
            )
        return self._streaming[key]

    def block_targets(self, mean_tokens: float) -> list[float]:
        """``causal_table``'s target mean tokens of each block position at this budget.

        Raises:
            ValueError: The table has no row for ``mean_tokens / M`` or not K entries.
        """
        tokens = self.tokenizer.tokens_per_block
        targets = block_targets(
            mean_tokens / tokens, tokens, self.tokenizer.num_blocks, self.block_table
        )
        return targets.tolist()

    def table_allocator(self, mean_tokens: float) -> StreamingAllocator:
        """A fresh ``causal_table`` allocator: one batch ILP per block, totals rounded down."""
        return StreamingAllocator(
            self.candidates,
            block_budgets=self.block_targets(mean_tokens),
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
        mean_tokens: float,
        policy: AllocationPolicy = "scorer",
        mode: PlannerMode | None = None,
        costs: Tensor | None = None,
    ) -> Tensor:
        """Choose the lengths.

        Args:
            video: ``(B, C, T, H, W)`` clips in [0, 1] (used by the oracle only).
            encoding: ``tokenizer.encode(video)``.
            mean_tokens: Target mean tokens per block (e.g. 256 of 512).
            policy: ``scorer`` (IPAL), ``uniform`` (every block ``round(mean_tokens)``) or
                ``oracle`` (IPAL on measured instead of predicted costs).
            mode: Overrides the planner's mode for this call.
            costs: ``(B, K, J)`` from :meth:`costs` for this ``policy``, to reuse across
                budgets (``batch``/``per_clip`` only: the causal modes re-score block by
                block).

        Returns:
            ``(B, K)`` long lengths.
        """
        batch, device = video.shape[0], video.device
        num_blocks = self.tokenizer.num_blocks
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
        chosen = self.full_lengths(batch, device)
        if mode in ("streaming", "causal_table"):
            allocator = (
                self._streaming_allocator(mean_tokens, policy)
                if mode == "streaming"
                else self.table_allocator(mean_tokens)
            )
            for block in range(num_blocks):
                costs = self._block_costs(policy, video, encoding, chosen, block)
                chosen[:, block] = torch.as_tensor(allocator.step(costs), device=device)
            return chosen
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
