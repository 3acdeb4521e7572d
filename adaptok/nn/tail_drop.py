"""Block-wise tail dropping: random per-block token lengths for training."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["TailDropSampler", "keep_mask"]

Distribution = Literal["truncnorm", "uniform", "fixed"]


class TailDropSampler:
    """Samples how many leading tokens each block keeps, independently per sample and block.

    Args:
        distribution: "truncnorm" (Normal(mean, std) truncated to [min_tokens, max_tokens],
            rounded to 1 token), "uniform" (integers in [min_tokens, max_tokens]) or "fixed"
            (always `fixed` tokens).
        mean: Mean of the truncated normal.
        std: Standard deviation of the truncated normal.
        min_tokens: Smallest length (>= 1).
        max_tokens: Largest length (at most the tokenizer's tokens per block).
        fixed: Length of the "fixed" distribution; defaults to `max_tokens`.
    """

    def __init__(
        self,
        distribution: Distribution = "truncnorm",
        mean: float = 256.0,
        std: float = 128.0,
        min_tokens: int = 32,
        max_tokens: int = 512,
        fixed: int | None = None,
    ) -> None:
        if distribution not in ("truncnorm", "uniform", "fixed"):
            raise ValueError(f"unknown tail-drop distribution {distribution!r}")
        if not 1 <= min_tokens <= max_tokens:
            raise ValueError(f"need 1 <= min_tokens <= max_tokens, got {min_tokens}, {max_tokens}")
        if std <= 0:
            raise ValueError(f"std must be positive, got {std}")
        self.fixed = max_tokens if fixed is None else fixed
        if not 1 <= self.fixed <= max_tokens:
            raise ValueError(f"fixed must lie in [1, {max_tokens}], got {self.fixed}")
        self.distribution = distribution
        self.mean = mean
        self.std = std
        self.min_tokens = min_tokens
        self.max_tokens = max_tokens

    def sample(
        self,
        batch_size: int,
        num_blocks: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draws lengths.

        Args:
            batch_size: B.
            num_blocks: K.
            generator: Optional CPU generator for reproducible draws.
            device: Device of the result.

        Returns:
            Long `(B, K)` in [min_tokens, max_tokens].
        """
        shape = (batch_size, num_blocks)
        if self.distribution == "fixed":
            lengths = torch.full(shape, self.fixed, dtype=torch.long)
        elif self.distribution == "uniform":
            lengths = torch.randint(
                self.min_tokens, self.max_tokens + 1, shape, generator=generator
            )
        else:
            lengths = self._truncnorm(shape, generator)
        return lengths.to(device)

    def _truncnorm(self, shape: tuple[int, int], generator: torch.Generator | None) -> Tensor:
        """Inverse-CDF draw of the truncated normal, rounded and clamped to the range."""
        bounds = torch.tensor([self.min_tokens - 0.5, self.max_tokens + 0.5], dtype=torch.float64)
        low, high = torch.special.ndtr((bounds - self.mean) / self.std).tolist()
        uniform = torch.rand(shape, generator=generator, dtype=torch.float64)
        quantile = (low + (high - low) * uniform).clamp(1e-12, 1 - 1e-12)
        values = self.mean + self.std * torch.special.ndtri(quantile)
        return values.round().long().clamp(self.min_tokens, self.max_tokens)

    def __repr__(self) -> str:
        return (
            f"TailDropSampler(distribution={self.distribution!r}, mean={self.mean}, "
            f"std={self.std}, min_tokens={self.min_tokens}, max_tokens={self.max_tokens}, "
            f"fixed={self.fixed})"
        )


def keep_mask(lengths: Tensor, tokens_per_block: int) -> Tensor:
    """Marks the kept (leading) tokens of each block.

    Args:
        lengths: Long `(B, K)` kept tokens per block.
        tokens_per_block: M.

    Returns:
        Bool `(B, K * M)`: position `k * M + j` is True iff `j < lengths[:, k]`.
    """
    positions = torch.arange(tokens_per_block, device=lengths.device)
    return (positions < lengths.unsqueeze(-1)).flatten(1)
