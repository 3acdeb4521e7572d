"""Token allocation: choose a token length per block under a budget (AdapTok's IPAL and more).

Public API:
    allocate: one entry point for the ``batch``, ``per_clip``, ``streaming`` and ``target``
        modes with the ``fast`` (exact numpy) or ``mip`` (python-mip CBC) solver.
    Allocation: the result (choices, lengths, objective, solver used, notes).
    StreamingAllocator: causal block-by-block allocation with a learned price per token.
    InfeasibleBudgetError: a budget no allocation can meet (states the feasible range).
    REFERENCE_BLOCK_TABLE, block_targets: the official code's per-block targets.
    TokenBudget: a budget as a fraction of the tokens per block, with explicit conversions
        to mean tokens per block and tokens per clip.
"""

from adaptok.alloc.allocation import MODES, Allocation, allocate
from adaptok.alloc.block_table import REFERENCE_BLOCK_TABLE, block_targets
from adaptok.alloc.budget import TokenBudget
from adaptok.alloc.feasibility import InfeasibleBudgetError
from adaptok.alloc.knapsack import SOLVERS
from adaptok.alloc.streaming import StreamingAllocator
from adaptok.alloc.target import SCOPES

__all__ = [
    "MODES",
    "REFERENCE_BLOCK_TABLE",
    "SCOPES",
    "SOLVERS",
    "Allocation",
    "InfeasibleBudgetError",
    "StreamingAllocator",
    "TokenBudget",
    "allocate",
    "block_targets",
]
