"""This process's place in a job, and collectives that stay correct for uneven ranks.

:func:`rank_and_world_size` is the one answer to "which rank am I, of how many" for the
data streams (a trainer's view first, then an initialised process group, then the
``RANK``/``WORLD_SIZE`` environment a launcher sets). Lightning's ``all_gather`` needs equal
shapes on every rank and stalls otherwise; shards split unevenly across ranks
(``shards[rank::world_size]``) give exactly that, hence :func:`gather_rows`. Pure
``torch.distributed``, so the callbacks, the modules and plain scripts share it.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["gather_rows", "is_distributed", "rank_and_world_size"]


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world_size(trainer: Any | None = None) -> tuple[int, int]:
    """This process's rank and the number of processes.

    Args:
        trainer: Anything with ``global_rank`` and ``world_size`` (a Lightning trainer), or
            ``None``.

    Returns:
        ``(rank, world_size)``: the trainer's when one is given; else the initialised process
        group's; else ``RANK`` and ``WORLD_SIZE`` from the environment (0 and 1 when unset).
    """
    if trainer is not None:
        return int(trainer.global_rank), int(trainer.world_size)
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def gather_rows(rows: Tensor) -> Tensor:
    """Concatenate ``rows`` ``(N_r, *S)`` from every rank, in rank order.

    Every rank must call it (a collective). ``N_r`` may differ between ranks, including 0;
    the trailing shape ``S`` and the dtype must agree. Outside a process group the input is
    returned unchanged.

    Args:
        rows: ``(N_r, *S)`` tensor on this rank's device (CUDA for NCCL, any for gloo).

    Returns:
        ``(sum_r N_r, *S)`` on the same device, identical on every rank.
    """
    if not is_distributed():
        return rows
    world = dist.get_world_size()
    count = torch.tensor([rows.shape[0]], device=rows.device, dtype=torch.long)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    padded = rows.new_zeros((max(sizes), *rows.shape[1:]))
    padded[: rows.shape[0]] = rows
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])
