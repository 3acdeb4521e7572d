"""TokenBudget: one token budget, with explicit conversions between its three readings.

"Budget" is read three ways across the allocation code: a fraction of the tokens per block
``M`` (the YAML spelling, ``budgets: [0.25, 0.5]``), mean tokens per block (what
:func:`adaptok.alloc.allocate` and the solvers take) and tokens per clip (``K`` blocks at
that mean). A :class:`TokenBudget` holds the fraction and ``M`` and converts on request, so a
public interface (the budget planner, the annotator, the allocation evaluator) states which
reading it takes by its type alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["TokenBudget"]


@dataclass(frozen=True)
class TokenBudget:
    """A token budget: mean tokens kept per block, out of the ``tokens_per_block`` of a block.

    Build one from the YAML's fraction with :meth:`from_fraction` (``fraction x M``, the
    conversion done once at a public boundary) or from a mean directly; read it back as
    :attr:`mean_tokens`, :attr:`fraction` or :meth:`clip_tokens`.

    Attributes:
        mean_tokens: Mean tokens kept per block, in ``(0, tokens_per_block]``.
        tokens_per_block: ``M``, the tokens of a block kept in full (an integer >= 1).

    Raises:
        ValueError: ``tokens_per_block`` not an integer >= 1, or a mean outside
            ``(0, tokens_per_block]`` (a fraction outside ``(0, 1]``) or not finite.
    """

    mean_tokens: float
    tokens_per_block: int

    def __post_init__(self) -> None:
        tokens = self.tokens_per_block
        if isinstance(tokens, bool) or int(tokens) != tokens or int(tokens) < 1:
            raise ValueError(f"tokens_per_block must be an integer >= 1, got {tokens}")
        mean = float(self.mean_tokens)
        if not (math.isfinite(mean) and 0.0 < mean <= int(tokens)):
            raise ValueError(
                f"a budget must keep a mean in (0, {int(tokens)}] tokens per block (a fraction "
                f"in (0, 1]), got {self.mean_tokens} ({mean / int(tokens):g} of the tokens)"
            )
        object.__setattr__(self, "mean_tokens", mean)
        object.__setattr__(self, "tokens_per_block", int(tokens))

    @classmethod
    def from_fraction(cls, fraction: float, tokens_per_block: int) -> TokenBudget:
        """The budget keeping ``fraction`` of the ``tokens_per_block`` tokens of each block.

        Args:
            fraction: Share of each block's tokens kept on average, in ``(0, 1]`` (the YAML's
                ``budgets`` entries, ``--budget``).
            tokens_per_block: ``M``, an integer >= 1.

        Returns:
            The budget of mean ``fraction x M`` tokens per block.

        Raises:
            ValueError: A fraction outside ``(0, 1]`` or not finite, or ``tokens_per_block``
                not an integer >= 1.
        """
        return cls(float(fraction) * tokens_per_block, tokens_per_block)

    @property
    def fraction(self) -> float:
        """Share of each block's tokens kept on average: ``mean_tokens / M`` (the YAML's)."""
        return self.mean_tokens / self.tokens_per_block

    def clip_tokens(self, num_blocks: int) -> float:
        """Tokens of one clip of ``num_blocks`` blocks: ``num_blocks x mean_tokens``."""
        return num_blocks * self.mean_tokens

    def __str__(self) -> str:
        return (
            f"{self.fraction:g} of {self.tokens_per_block} tokens per block ({self.mean_tokens:g})"
        )
