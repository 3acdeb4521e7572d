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
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from adaptok.nn.masks import encoder_mask
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
    ) -> None:
        super().__init__()
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
        tokens = self.input_proj(torch.cat([latents, quantized], dim=-1)) + self.pos_embed
        hidden = self.transformer(tokens, self.attention_mask(context_lengths))
        batch = hidden.shape[0]
        hidden = hidden.view(batch, self.num_blocks, self.tokens_per_block, -1)
        return self.head(hidden[:, :, self.readout_slots]).squeeze(-1)
