"""LARP's learned autoregressive prior: a small causal GPT over the quantized tokens.

It reads the kept tokens of a clip in order (block 0's kept tokens, then block 1's, ...) and
predicts each next code; logits are dot products with the unit-norm codebook. Its loss flows
back into the encoder (through the straight-through code vectors) and the codebook, which
shapes the latent space for the later AR generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import Tensor, nn

from adaptok.nn.masks import causal_mask
from adaptok.nn.transformer import TransformerStack, init_weights

__all__ = ["Prior"]


class Prior(nn.Module):
    """Causal transformer predicting the next code of the kept-token sequence.

    Args:
        code_dim: Width of the quantizer's code vectors.
        num_tokens: N, the largest absolute token index + 1 (learned index embedding).
        width: Transformer width (paper: 384).
        depth: Transformer depth (paper: 12).
        heads: Attention heads.
        mlp_ratio: MLP hidden width as a multiple of `width`.
    """

    def __init__(
        self,
        code_dim: int = 16,
        num_tokens: int = 2048,
        width: int = 384,
        depth: int = 12,
        heads: int = 6,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.input_proj = nn.Linear(code_dim, width)
        self.index_embed = nn.Parameter(torch.zeros(num_tokens, width))
        self.transformer = TransformerStack(width, depth, heads, mlp_ratio)
        self.output_proj = nn.Linear(width, code_dim)
        self.apply(init_weights)
        trunc_normal_(self.index_embed, std=0.02)

    def forward(
        self, code_vectors: Tensor, codes: Tensor, keep: Tensor, codebook: Tensor
    ) -> Tensor:
        """Next-code cross-entropy over the kept tokens.

        Args:
            code_vectors: `(B, N, code_dim)` (straight-through) unit-norm code vectors.
            codes: `(B, N)` long code indices (the targets).
            keep: Bool `(B, N)`, True for kept tokens.
            codebook: `(codebook_size, code_dim)` unit-norm codebook.

        Returns:
            Scalar mean cross-entropy over every kept token that has a kept successor.
        """
        length = codes.shape[1]
        # Stable sort moves the kept tokens to the front, in order; the rest is padding.
        order = torch.argsort((~keep).to(torch.uint8), dim=1, stable=True)
        kept = torch.gather(keep, 1, order)
        vectors = torch.gather(code_vectors, 1, order.unsqueeze(-1).expand_as(code_vectors))
        targets = torch.gather(codes, 1, order)
        hidden = self.input_proj(vectors) + self.index_embed[order]
        hidden = self.transformer(hidden, causal_mask(length, codes.device))
        logits = self.output_proj(hidden[:, :-1]) @ codebook.t()
        valid = kept[:, 1:]
        losses = F.cross_entropy(
            logits.flatten(0, 1).float(), targets[:, 1:].flatten(), reduction="none"
        )
        weights = valid.flatten().to(losses.dtype)
        return (losses * weights).sum() / weights.sum().clamp_min(1.0)
