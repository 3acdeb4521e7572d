"""Choosing per-block token counts for clips: scorer-driven (IPAL), uniform, or oracle.

This is where the networks meet the allocator: the scorer (or, for the oracle, real
decodes) supplies each block's cost at every candidate length, and ``adaptok.alloc`` solves
the budgeted choice. The same planner serves the ``TokenAllocator`` callback, annotation
writers and benchmarks.

Conditioning. A block's cost depends on the lengths kept by earlier blocks (the decoder is
block-causal). In ``streaming`` mode the planner scores block ``b`` after fixing blocks
``< b`` (causal: each decision uses only the past, as a streaming encoder must). In ``batch``
and ``per_clip`` modes all blocks are scored at once with every earlier block at full length,
then solved jointly.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from adaptok.alloc import StreamingAllocator, allocate
from adaptok.losses.block_quality import BlockQuality, measure_block_costs
from adaptok.nn.scorer import BlockCausalScorer
from adaptok.nn.tokenizer import AdapTokTokenizer, TokenizerEncoding

__all__ = ["AllocationPolicy", "TokenBudgetPlanner"]

AllocationPolicy = Literal["scorer", "uniform", "oracle"]
PlannerMode = Literal["batch", "per_clip", "streaming"]


class TokenBudgetPlanner:
    """Per-block token counts for a batch of clips at a given mean budget.

    Args:
        tokenizer: The frozen tokenizer.
        scorer: The trained block-causal scorer (for ``policy='scorer'``).
        quality: Cost of a reconstructed block (for ``policy='oracle'``).
        mode: ``streaming`` (causal, block by block), ``batch`` (the paper's ILP over the
            mini-batch) or ``per_clip`` (each clip its own budget).
        solver: ``fast`` (exact, vectorised) or ``mip`` (python-mip CBC).
        equality: Spend the budget exactly (the paper) instead of at most.
    """

    def __init__(
        self,
        tokenizer: AdapTokTokenizer,
        scorer: BlockCausalScorer | None = None,
        quality: BlockQuality | None = None,
        mode: PlannerMode = "streaming",
        solver: Literal["fast", "mip"] = "fast",
        equality: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.scorer = scorer
        self.quality = quality
        self.mode = mode
        self.solver = solver
        self.equality = equality
        self.candidates = (
            scorer.candidate_lengths if scorer is not None else [tokenizer.tokens_per_block]
        )
        self._streaming: dict[tuple[float, str], StreamingAllocator] = {}

    def _streaming_allocator(
        self, mean_tokens: float, policy: AllocationPolicy
    ) -> StreamingAllocator:
        """One allocator per (budget, policy), kept across batches so its price per token
        carries over time instead of restarting from an estimate on every batch."""
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

    def full_lengths(self, batch_size: int, device: torch.device) -> Tensor:
        """``(B, K)`` lengths keeping every token."""
        shape = (batch_size, self.tokenizer.num_blocks)
        return torch.full(shape, self.tokenizer.tokens_per_block, dtype=torch.long, device=device)

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
    ) -> Tensor:
        """Choose the lengths.

        Args:
            video: ``(B, C, T, H, W)`` clips in [0, 1] (used by the oracle only).
            encoding: ``tokenizer.encode(video)``.
            mean_tokens: Target mean tokens per block (e.g. 256 of 512).
            policy: ``scorer`` (IPAL), ``uniform`` (every block ``round(mean_tokens)``) or
                ``oracle`` (IPAL on measured instead of predicted costs).

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
        chosen = self.full_lengths(batch, device)
        if self.mode == "streaming":
            allocator = self._streaming_allocator(mean_tokens, policy)
            for block in range(num_blocks):
                costs = self._block_costs(policy, video, encoding, chosen, block)
                chosen[:, block] = torch.as_tensor(allocator.step(costs), device=device)
            return chosen
        if policy == "scorer" and self.scorer is not None:  # one pass scores every block
            costs = self.scorer(encoding.latents, encoding.quantized, chosen)
        else:
            per_block = [
                self._block_costs(policy, video, encoding, chosen, b) for b in range(num_blocks)
            ]
            costs = torch.stack(per_block, dim=1)
        result = allocate(
            costs,
            self.candidates,
            mean_tokens,
            mode=self.mode,
            solver=self.solver,
            equality=self.equality,
        )
        return torch.as_tensor(result.lengths, dtype=torch.long, device=device)
