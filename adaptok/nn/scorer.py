"""Block-causal scorer: predicts each block's reconstruction cost for every candidate length.

METHOD section 3: the input is ``concat(continuous encoder output, quantized latent)``, projected
to the scorer width, with a learned position embedding; a block-causal transformer runs over
the latent blocks; a head reads the outputs at every ``tokens_per_block / num_candidates``-th
position of each block, giving the cost of keeping ``64, 128, ..., 512`` tokens (paper scale)
from ONE forward pass (attention inside a block is full, so each read-out slot sees the whole
block and is trained to predict the cost of one prefix length).

Context: the score of block ``b`` must describe block ``b`` *given the lengths already chosen
for blocks < b*. ``context_lengths`` therefore hides, from every later block, the tail tokens
that earlier blocks will not keep; a block always sees all of its own tokens.

Implementations (``attention``): "blockwise" (default) runs one unmasked attention call per
block (``adaptok.nn.block_layout.scorer_layout``; per-sample groups when the samples'
context lengths differ) and computes only the read-out slots in the last layer; "dense" is
the masked reference. Both give the same scores within float rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from adaptok.nn.block_layout import AttentionImpl, check_attention, scorer_layout
from adaptok.nn.masks import encoder_mask
from adaptok.nn.precision import Precision, autocast_for, check_precision
from adaptok.nn.transformer import TransformerStack, init_weights

__all__ = ["BlockCausalScorer"]


class BlockCausalScorer(nn.Module):
    """Scores every candidate token count of every block in one pass.

    Args:
        token_width: Width of the tokenizer's latents (the input is twice that: continuous +
            quantized).
        num_blocks: Temporal blocks K.
        tokens_per_block: Latent tokens per block M.
        num_candidates: Candidate lengths J per block; must divide M. The candidates are
            ``M/J, 2M/J, ..., M``.
        width: Scorer transformer width.
        depth: Transformer layers.
        heads: Attention heads.
        mlp_ratio: MLP width multiple in the transformer.
        attention: "blockwise" (fast) or "dense" (masked reference); an attribute too.
        precision: "fp32" or "bf16" (autocast of the forward; scores are float32).
    """

    def __init__(
        self,
        token_width: int = 768,
        num_blocks: int = 4,
        tokens_per_block: int = 512,
        num_candidates: int = 8,
        width: int = 768,
        depth: int = 12,
        heads: int = 12,
        mlp_ratio: float = 4.0,
        attention: AttentionImpl = "blockwise",
        precision: Precision = "fp32",
    ) -> None:
        super().__init__()
        check_attention(attention)
        check_precision(precision)
        self.attention = attention
        self.precision = precision
        if tokens_per_block % num_candidates != 0:
            raise ValueError(
                f"num_candidates ({num_candidates}) must divide tokens_per_block ({tokens_per_block})"
            )
        self.num_blocks = num_blocks
        self.tokens_per_block = tokens_per_block
        self.num_candidates = num_candidates
        num_tokens = num_blocks * tokens_per_block
        self.input_proj = nn.Linear(2 * token_width, width)
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, width))
        self.transformer = TransformerStack(width, depth, heads, mlp_ratio)
        self.head = nn.Sequential(nn.Linear(width, 2 * width), nn.Tanh(), nn.Linear(2 * width, 1))
        step = tokens_per_block // num_candidates
        block_of_token = torch.arange(num_tokens) // tokens_per_block
        slot_in_block = torch.arange(num_tokens) % tokens_per_block
        self.register_buffer("block_of_token", block_of_token, persistent=False)
        self.register_buffer("slot_in_block", slot_in_block, persistent=False)
        # Latents only: the encoder's block-causal mask with no patch tokens.
        causal = encoder_mask(num_blocks, 0, tokens_per_block, torch.device("cpu"))
        self.register_buffer("causal_mask", causal.clone(), persistent=False)
        readout = torch.arange(1, num_candidates + 1) * step - 1
        self.register_buffer("readout_slots", readout, persistent=False)
        self._readout_tuple = tuple(readout.tolist())
        self.apply(init_weights)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    @property
    def candidate_lengths(self) -> list[int]:
        """Token counts the scores refer to, ascending: ``[M/J, 2M/J, ..., M]``."""
        return [int(slot) + 1 for slot in self.readout_slots.tolist()]

    def attention_mask(self, context_lengths: Tensor | None) -> Tensor:
        """Block-causal mask, hiding earlier blocks' dropped tail tokens.

        Args:
            context_lengths: ``(B, K)`` tokens kept per block, or None for all tokens.

        Returns:
            ``(N, N)`` or ``(B, 1, N, N)`` boolean mask, True where a query may attend.
        """
        if context_lengths is None:
            return self.causal_mask
        kept_key = self.slot_in_block[None, :] < context_lengths[:, self.block_of_token]  # (B, N)
        same_block = self.block_of_token[:, None] == self.block_of_token[None, :]  # (N, N)
        visible = same_block[None] | kept_key[:, None, :]
        return (self.causal_mask[None] & visible)[:, None]

    def forward(
        self, latents: Tensor, quantized: Tensor, context_lengths: Tensor | None = None
    ) -> Tensor:
        """Predicts costs.

        Args:
            latents: ``(B, N, token_width)`` continuous encoder outputs.
            quantized: ``(B, N, token_width)`` quantized latents (after the post-quant projection).
            context_lengths: ``(B, K)`` lengths of the blocks as they will be kept; block ``b``'s
                scores are conditioned on blocks ``< b`` at these lengths. None = all tokens.

        Returns:
            ``(B, K, J)`` predicted (normalised) cost of block ``k`` kept at candidate ``j``.
        """
        expected = self.num_blocks * self.tokens_per_block
        if latents.shape != quantized.shape or latents.shape[1] != expected:
            raise ValueError(
                f"expected latents and quantized of shape (B, {expected}, D), got "
                f"{tuple(latents.shape)} and {tuple(quantized.shape)}"
            )
        batch = latents.shape[0]
        if context_lengths is not None:
            self._check_context(context_lengths, batch)
        with autocast_for(latents.device, self.precision):
            tokens = self.input_proj(torch.cat([latents, quantized], dim=-1)) + self.pos_embed
            if self.attention == "dense":
                hidden = self.transformer(tokens, self.attention_mask(context_lengths))
                hidden = hidden.view(batch, self.num_blocks, self.tokens_per_block, -1)
                hidden = hidden[:, :, self.readout_slots]
            else:
                hidden = self._blockwise(tokens, context_lengths)
            return self.head(hidden).squeeze(-1).float()

    def _check_context(self, context_lengths: Tensor, batch: int) -> None:
        """Raises ValueError unless ``context_lengths`` is integer ``(B, K)`` in [0, M]."""
        expected = (batch, self.num_blocks)
        if tuple(context_lengths.shape) != expected or context_lengths.is_floating_point():
            raise ValueError(
                f"expected integer context_lengths of shape {expected}, got "
                f"{context_lengths.dtype} {tuple(context_lengths.shape)}"
            )
        if bool((context_lengths < 0).any() | (context_lengths > self.tokens_per_block).any()):
            raise ValueError(f"context_lengths must lie in [0, {self.tokens_per_block}]")

    def _blockwise(self, tokens: Tensor, context_lengths: Tensor | None) -> Tensor:
        """Block-sparse transformer; returns the read-out rows ``(B, K, J, width)``."""
        batch = tokens.shape[0]
        k, m = self.num_blocks, self.tokens_per_block
        rows = None if context_lengths is None else tuple(map(tuple, context_lengths.tolist()))
        if rows is not None and len(set(rows)) > 1:
            tokens = tokens.reshape(1, batch * k * m, -1)  # per-sample groups
        elif rows is not None:
            rows = rows[:1]
        hidden = self.transformer(
            tokens,
            layout=scorer_layout(rows, k, m),
            output_layout=scorer_layout(rows, k, m, self._readout_tuple),
        )
        return hidden.reshape(batch, k, self.num_candidates, -1)
