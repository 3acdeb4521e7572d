"""Block-wise tail dropping: random per-block token lengths for training."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["TailDropSampler", "keep_mask"]

Distribution = Literal["truncnorm", "uniform", "fixed"]


class TailDropSampler:
    """Samples how many leading tokens each block keeps, independently per sample and block.

    ``max_tokens`` left None means the tokenizer's tokens per block M: the stage that holds
    the tokenizer fills it in with :meth:`resolve` (``TokenizerModule`` does), so a YAML
    never restates M.

    Args:
        distribution: "truncnorm" (Normal(mean, std) truncated to [min_tokens, max_tokens],
            rounded to 1 token), "uniform" (integers in [min_tokens, max_tokens]) or "fixed"
            (always `fixed` tokens).
        mean: Mean of the truncated normal, in tokens.
        std: Standard deviation of the truncated normal, in tokens.
        min_tokens: Smallest length (>= 1).
        max_tokens: Largest length, at most the tokenizer's tokens per block M; None (default):
            M, filled in by :meth:`resolve`.
        fixed: Length of the "fixed" distribution; defaults to `max_tokens`.

    Raises:
        ValueError: An unknown distribution, ``std <= 0``, or lengths outside
            ``1 <= min_tokens <= max_tokens`` / ``1 <= fixed <= max_tokens``.
    """

    def __init__(
        self,
        distribution: Distribution = "truncnorm",
        mean: float = 256.0,
        std: float = 128.0,
        min_tokens: int = 32,
        max_tokens: int | None = None,
        fixed: int | None = None,
    ) -> None:
        if distribution not in ("truncnorm", "uniform", "fixed"):
            raise ValueError(f"unknown tail-drop distribution {distribution!r}")
        if min_tokens < 1:
            raise ValueError(f"need 1 <= min_tokens <= max_tokens, got min_tokens={min_tokens}")
        if std <= 0:
            raise ValueError(f"std must be positive, got {std}")
        if fixed is not None and fixed < 1:
            raise ValueError(f"fixed must be >= 1, got {fixed}")
        self.distribution = distribution
        self.mean = mean
        self.std = std
        self.min_tokens = min_tokens
        self.requested_max_tokens = max_tokens
        self.requested_fixed = fixed
        self.max_tokens: int | None = None
        self.fixed: int | None = None
        if max_tokens is not None:
            self._set_range(max_tokens)

    def _set_range(self, max_tokens: int) -> None:
        if not 1 <= self.min_tokens <= max_tokens:
            raise ValueError(
                f"need 1 <= min_tokens <= max_tokens, got {self.min_tokens}, {max_tokens}"
            )
        fixed = max_tokens if self.requested_fixed is None else self.requested_fixed
        if not 1 <= fixed <= max_tokens:
            raise ValueError(f"fixed must lie in [1, {max_tokens}], got {fixed}")
        self.max_tokens, self.fixed = max_tokens, fixed

    def resolve(self, tokens_per_block: int) -> TailDropSampler:
        """Fit the sampler to a tokenizer of ``tokens_per_block`` tokens per block (in place).

        A ``max_tokens`` given as None becomes ``tokens_per_block``; a given one must not
        exceed it. Calling again with another tokenizer starts from the given settings.

        Args:
            tokens_per_block: The tokenizer's tokens per block M.

        Returns:
            This sampler, with ``max_tokens`` and ``fixed`` set.

        Raises:
            ValueError: The given ``max_tokens`` exceeds M, or ``min_tokens`` / ``fixed`` do
                not fit in ``[1, M]``; the message names both values.
        """
        given = self.requested_max_tokens
        if given is not None and given > tokens_per_block:
            raise ValueError(
                f"max_tokens={given} exceeds the tokenizer's tokens_per_block "
                f"M={tokens_per_block}; leave max_tokens unset (null) for M"
            )
        if self.min_tokens > tokens_per_block:
            raise ValueError(
                f"min_tokens={self.min_tokens} exceeds the tokenizer's "
                f"tokens_per_block M={tokens_per_block}"
            )
        self._set_range(tokens_per_block if given is None else given)
        return self

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

        Raises:
            RuntimeError: ``max_tokens`` is still None (:meth:`resolve` not called).
        """
        if self.max_tokens is None:
            raise RuntimeError(
                "TailDropSampler(max_tokens=None) means the tokenizer's tokens_per_block: "
                "call resolve(tokens_per_block) first (TokenizerModule does)"
            )
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
