"""LARP-style stochastic vector quantizer on the unit sphere."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import Tensor, nn

__all__ = ["QuantizerOutput", "StochasticQuantizer"]


@dataclass
class QuantizerOutput:
    """What `StochasticQuantizer.forward` returns.

    Attributes:
        codes: `(B, N)` long code indices.
        quantized: `(B, N, width)` codebook vectors after the post-quant projection
            (straight-through: gradients flow to the pre-quant features).
        code_vectors: `(B, N, code_dim)` unit-norm codebook vectors, straight-through.
        commit_loss: Scalar `||z - sg(c)||^2`, mean over kept tokens and channels.
        codebook_loss: Scalar `||sg(z) - c||^2`, mean over kept tokens and channels.
    """

    codes: Tensor
    quantized: Tensor
    code_vectors: Tensor
    commit_loss: Tensor
    codebook_loss: Tensor


class StochasticQuantizer(nn.Module):
    """Cosine-similarity VQ with sampling in training and argmax in eval.

    `Linear(width -> code_dim)` and L2 normalisation give z; the codebook is L2-normalised;
    logits are `cos(z, c) / temperature`. Training samples a code from their softmax, eval
    takes the argmax. The straight-through vector goes through `Linear(code_dim -> width)`.

    Args:
        width: Token width of the encoder/decoder.
        codebook_size: Number of codes.
        code_dim: Width of the codebook vectors.
        temperature: Softmax temperature of the sampling.
    """

    def __init__(
        self, width: int, codebook_size: int = 8192, code_dim: int = 16, temperature: float = 0.03
    ) -> None:
        super().__init__()
        self.temperature = temperature
        self.pre_proj = nn.Linear(width, code_dim)
        self.post_proj = nn.Linear(code_dim, width)
        self.codebook = nn.Parameter(torch.empty(codebook_size, code_dim))
        trunc_normal_(self.codebook, std=1.0, a=-2.0, b=2.0)

    @property
    def codebook_size(self) -> int:
        """Number of codes."""
        return self.codebook.shape[0]

    def normalized_codebook(self) -> Tensor:
        """`(codebook_size, code_dim)` unit-norm codebook."""
        return F.normalize(self.codebook, dim=-1)

    def embed_codes(self, codes: Tensor) -> Tensor:
        """Codes `(B, N)` long -> quantized tokens `(B, N, width)` (the decoder's input)."""
        return self.post_proj(F.embedding(codes, self.normalized_codebook()))

    def forward(self, features: Tensor, keep: Tensor | None = None) -> QuantizerOutput:
        """Quantizes encoder outputs.

        Args:
            features: `(B, N, width)`.
            keep: Optional bool `(B, N)`; the losses average over kept tokens only.

        Returns:
            A `QuantizerOutput`.
        """
        z = F.normalize(self.pre_proj(features), dim=-1)
        codebook = self.normalized_codebook()
        cosines = z @ codebook.t()
        if self.training:
            probs = (cosines.float() / self.temperature).softmax(dim=-1).flatten(0, -2)
            codes = torch.multinomial(probs, 1).view(cosines.shape[:-1])
        else:
            codes = cosines.argmax(dim=-1)  # the temperature does not change the argmax
        vectors = F.embedding(codes, codebook)
        weights = None if keep is None else keep.to(z.dtype)
        commit = _masked_mse(z, vectors.detach(), weights)
        codebook_loss = _masked_mse(vectors, z.detach(), weights)
        code_vectors = z + (vectors - z).detach()
        return QuantizerOutput(
            codes=codes,
            quantized=self.post_proj(code_vectors),
            code_vectors=code_vectors,
            commit_loss=commit,
            codebook_loss=codebook_loss,
        )


def _masked_mse(prediction: Tensor, target: Tensor, weights: Tensor | None) -> Tensor:
    """Mean squared error over `(B, N, C)`, restricted to tokens with weight 1 `(B, N)`."""
    squared = (prediction - target).pow(2).mean(dim=-1)
    if weights is None:
        return squared.mean()
    return (squared * weights).sum() / weights.sum().clamp_min(1.0)
