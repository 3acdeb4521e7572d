"""A fixed-size memory of training examples, sampled uniformly (experience replay).

The scorer's labels are expensive (``K x J`` decodes per clip) and its network is small, so
a label used once is wasted: with ``ScorerModule(replay_size=...)`` every measured cost table
is kept here and regressed many times, in random company (docs/DEVIATIONS.md). The idea is
the replay memory of DQN (Mnih et al., Nature 2015); the code is ours.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["ReplayBuffer"]


class ReplayBuffer:
    """Holds the last ``capacity`` rows of a set of named tensors; first in, first out.

    Every :meth:`add` gives the same names, with tensors that share their first (row)
    dimension; a row's other dimensions and dtype are fixed by the first call. Storage is
    allocated on the first call, on that call's device, and rows are copied in (detached).

    Args:
        capacity: Rows held at most, >= 1.

    Raises:
        ValueError: ``capacity < 1``.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._store: dict[str, Tensor] = {}
        self._size = 0
        self._next = 0  # the slot the next row goes to

    def __len__(self) -> int:
        return self._size

    def add(self, **rows: Tensor) -> None:
        """Store a batch of rows, overwriting the oldest when full.

        Args:
            **rows: ``name -> (R, ...)`` tensors, the same ``R`` for all; the same names,
                row shapes and dtypes as the first call.

        Raises:
            ValueError: No rows, rows of different lengths, or names, row shapes or dtypes
                other than the first call's.
        """
        if not rows:
            raise ValueError("add() needs at least one named tensor")
        counts = {name: int(value.shape[0]) for name, value in rows.items()}
        if len(set(counts.values())) != 1:
            raise ValueError(f"every tensor must have the same number of rows, got {counts}")
        if not self._store:
            self._store = {
                name: value.new_empty((self.capacity, *value.shape[1:]))
                for name, value in rows.items()
            }
        if set(rows) != set(self._store):
            raise ValueError(f"expected the tensors {sorted(self._store)}, got {sorted(rows)}")
        for name, value in rows.items():
            stored = self._store[name]
            if value.shape[1:] != stored.shape[1:] or value.dtype != stored.dtype:
                raise ValueError(
                    f"{name}: rows of shape {tuple(value.shape[1:])} {value.dtype}, the buffer "
                    f"holds {tuple(stored.shape[1:])} {stored.dtype}"
                )
        count = next(iter(counts.values()))
        slots = (torch.arange(count) + self._next) % self.capacity
        for name, value in rows.items():
            # only the last `capacity` rows of an oversized batch survive, as one by one
            keep = slice(max(0, count - self.capacity), count)
            target = self._store[name]
            target[slots[keep].to(target.device)] = value[keep].detach().to(target.device)
        self._next = (self._next + count) % self.capacity
        self._size = min(self.capacity, self._size + count)

    def sample(self, size: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``size`` rows drawn uniformly with replacement from those held.

        Args:
            size: Rows to draw, >= 1.
            generator: CPU random generator (None: the global one).

        Returns:
            ``name -> (size, ...)`` tensors on the buffer's device.

        Raises:
            ValueError: ``size < 1``, or the buffer is empty.
        """
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if self._size == 0:
            raise ValueError("the replay buffer is empty: add() rows before sampling")
        index = torch.randint(self._size, (size,), generator=generator)
        return {name: value[index.to(value.device)] for name, value in self._store.items()}
