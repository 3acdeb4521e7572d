"""The frame-prediction (FP) condition, built in one place (docs/METHOD.md section 5.3).

Two halves, each used by every stage that needs it:

- the condition *clip*: the first ``condition_frames`` frames of a clip, the last of them
  repeated up to the clip length; the annotator encodes it into the shards' ``cond.npy`` and
  the generator encodes it from real clips at evaluation, so both see the same pixels;
- the condition *prefix* of the generator's stream: the condition's first ``P`` blocks of
  codes followed by ``<SEP>``, with their block indices and within-block positions; training
  sequences (``build_sequence``) and sampling (``sample``) start with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ConditionPrefix", "condition_clip", "condition_prefix"]


def condition_clip(video: Tensor, condition_frames: int) -> Tensor:
    """The condition clip: the first ``condition_frames`` frames, the last one held.

    Args:
        video: ``(B, C, T, H, W)`` clips (any dtype and value range).
        condition_frames: Frames kept from the start, in ``[1, T]`` (paper: 5 of 16).

    Returns:
        ``(B, C, T, H, W)``: frames ``0..condition_frames - 1`` of ``video`` and then frame
        ``condition_frames - 1`` repeated up to ``T``.

    Raises:
        ValueError: ``video`` is not 5-D or ``condition_frames`` lies outside ``[1, T]``.
    """
    if video.dim() != 5:
        raise ValueError(f"video must be (B, C, T, H, W), got shape {tuple(video.shape)}")
    total = video.shape[2]
    if not 1 <= condition_frames <= total:
        raise ValueError(f"condition_frames must lie in [1, {total}], got {condition_frames}")
    head = video[:, :, :condition_frames]
    tail = head[:, :, -1:].expand(-1, -1, total - condition_frames, -1, -1)
    return torch.cat([head, tail], dim=2)


@dataclass(frozen=True)
class ConditionPrefix:
    """The FP prefix of a generator stream: ``P * M`` condition codes and ``<SEP>``.

    Attributes:
        tokens: Long ``(..., P * M + 1)``: the codes of blocks ``0..P-1``, then ``<SEP>``.
        block_index: Long ``(P * M + 1,)``: ``b`` for the codes of block ``b``; ``<SEP>``
            carries the last condition block's index, ``P - 1``.
        block_position: Long ``(P * M + 1,)``: ``0..M-1`` within each block; ``<SEP>`` sits
            at position ``M``, just after the last code of block ``P - 1``.
    """

    tokens: Tensor
    block_index: Tensor
    block_position: Tensor

    @property
    def length(self) -> int:
        """Stream positions the prefix takes, ``P * M + 1``."""
        return int(self.block_index.numel())


def condition_prefix(condition_codes: Tensor, sep: int) -> ConditionPrefix:
    """The stream prefix of condition codes (``build_sequence`` and ``sample`` share it).

    Args:
        condition_codes: Long ``(..., P, M)``, ``P >= 1`` condition blocks of codes (the
            caller checks their range); leading dimensions (a batch) are kept.
        sep: The ``<SEP>`` token id (``GeneratorVocab.sep``).

    Returns:
        :class:`ConditionPrefix` on the device of ``condition_codes``.

    Raises:
        ValueError: ``condition_codes`` has fewer than 2 dimensions or no block or code.
    """
    if condition_codes.dim() < 2 or condition_codes.shape[-2] < 1 or condition_codes.shape[-1] < 1:
        raise ValueError(
            "condition codes must be (..., P, M) with P, M >= 1, got "
            f"{tuple(condition_codes.shape)}"
        )
    num_blocks, block_size = condition_codes.shape[-2:]
    device = condition_codes.device
    lead = condition_codes.shape[:-2]
    separator = torch.full((*lead, 1), sep, dtype=torch.long, device=device)
    tokens = torch.cat([condition_codes.long().flatten(-2), separator], -1)
    blocks = torch.arange(num_blocks, device=device)
    block_index = torch.cat([blocks.repeat_interleave(block_size), blocks[-1:]])
    block_position = torch.cat(
        [
            torch.arange(block_size, device=device).repeat(num_blocks),
            torch.tensor([block_size], device=device),
        ]
    )
    return ConditionPrefix(tokens=tokens, block_index=block_index, block_position=block_position)
