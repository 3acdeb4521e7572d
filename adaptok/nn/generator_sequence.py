"""Token streams of the AR generator: blocks closed by `<EOB>` (docs/METHOD.md section 5).

A clip tokenised into K blocks of M codes with kept lengths `L_b` becomes one stream: for each
block its first `L_b` codes, then `<EOB>`. Frame prediction (FP) puts a prefix in front: the
codes of the condition clip's first blocks and a separator `<SEP>`
(`adaptok.nn.frame_condition.condition_prefix`, shared with sampling); the stream then starts at
block 1, because block 0 is copied from the condition at sampling (docs/METHOD.md
section 5.3).

Vocabulary (docs/METHOD.md section 5.1): codes `0..V-1`, `<EOB> = V`, `<SEP> = V + 1` (an input
only; never predicted). The class and budget conditions are NOT tokens of this stream: the
network embeds them as prefix positions of its own.

Every function here is pure PyTorch and works on one sample (`build_sequence`,
`parse_sequence`) or a list of samples (`collate_sequences`). Positions are found by
explicit slicing, never by sorting (the reference compacts codes with an unstable sort).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from adaptok.nn.frame_condition import condition_prefix

__all__ = [
    "SEQUENCE_KEYS",
    "GeneratorVocab",
    "build_sequence",
    "collate_sequences",
    "parse_sequence",
]

#: Per-token keys of a built sequence (1-D per sample, `(B, S)` once collated).
SEQUENCE_KEYS: tuple[str, ...] = ("tokens", "block_index", "block_position", "loss_mask")


@dataclass(frozen=True)
class GeneratorVocab:
    """Token ids of the generator for a codebook of `codebook_size` codes.

    Attributes:
        codebook_size: V, the number of tokenizer codes (ids `0..V-1`).
    """

    codebook_size: int

    def __post_init__(self) -> None:
        if int(self.codebook_size) < 1:
            raise ValueError(f"codebook_size must be >= 1, got {self.codebook_size}")

    @property
    def eob(self) -> int:
        """Id of `<EOB>` (end of block) = V."""
        return self.codebook_size

    @property
    def sep(self) -> int:
        """Id of `<SEP>` (end of the frame-prediction prefix) = V + 1; input only."""
        return self.codebook_size + 1

    @property
    def size(self) -> int:
        """Number of input ids (codes, `<EOB>`, `<SEP>`) = V + 2."""
        return self.codebook_size + 2

    @property
    def num_outputs(self) -> int:
        """Number of predicted classes (codes and `<EOB>`; `<SEP>` is never predicted) = V + 1."""
        return self.codebook_size + 1

    @property
    def pad(self) -> int:
        """Id used for right padding (`<EOB>`; padding is masked out by `padding_mask`)."""
        return self.codebook_size


def _as_long(x: Tensor | Sequence[int], name: str) -> Tensor:
    t = torch.as_tensor(x)
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integers, got dtype {t.dtype}")
    return t.long()


def build_sequence(
    codes: Tensor,
    lengths: Tensor,
    prefix: Tensor | None = None,
    *,
    codebook_size: int,
    start_block: int | None = None,
) -> dict[str, Tensor]:
    """Builds the target stream of one clip.

    Layout: `[prefix..., <SEP>]` (FP only) then, for each modelled block b, its first `L_b`
    codes followed by `<EOB>`. Example with K=2, M=4, L=(2, 3), no prefix:
    `tokens = c00 c01 EOB c10 c11 c12 EOB`, `block_index = 0 0 0 1 1 1 1`,
    `block_position = 0 1 2 0 1 2 3`, `loss_mask` all True.

    Args:
        codes: `(K, M)` integer codes in `[0, V)` (every code; lengths are prefixes).
        lengths: `(K,)` integer kept lengths in `[0, M]`.
        prefix: FP only: the condition codes, `(P, M)` (P condition blocks, usually 2) or
            1-D with a multiple of M entries, values in `[0, V)`, WITHOUT `<SEP>` (it is
            appended here). None for class-conditional streams.
        codebook_size: V; `<EOB> = V`, `<SEP> = V + 1`.
        start_block: First modelled block. Defaults to 1 with a prefix (block 0 is copied
            from the condition in FP) and 0 without.

    Returns:
        Dict of 1-D tensors of length S (prefix + `<SEP>` + sum over modelled blocks of
        `L_b + 1`): `tokens` (long), `block_index` (long; prefix tokens carry the index of
        their condition block and `<SEP>` that of the last condition block),
        `block_position` (long, position inside the block, `<EOB>` at `L_b`; `<SEP>` at M),
        `loss_mask` (bool, True on targets, never on the prefix or `<SEP>`), and the 0-d
        long `prefix_length` (prefix + `<SEP>`, 0 without a prefix).

    Raises:
        ValueError: on wrong shapes, codes outside `[0, V)`, lengths outside `[0, M]`,
            a prefix whose size is not a multiple of M, or `start_block` outside `[0, K)`.
        TypeError: on non-integer inputs.
    """
    vocab = GeneratorVocab(codebook_size)
    codes = _as_long(codes, "codes")
    lengths = _as_long(lengths, "lengths")
    if codes.dim() != 2:
        raise ValueError(f"codes must be (K, M), got shape {tuple(codes.shape)}")
    num_blocks, block_size = codes.shape
    if lengths.shape != (num_blocks,):
        raise ValueError(f"lengths must be ({num_blocks},), got shape {tuple(lengths.shape)}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= codebook_size):
        raise ValueError(
            f"codes must lie in [0, {codebook_size}), got [{int(codes.min())}, {int(codes.max())}]"
        )
    if int(lengths.min()) < 0 or int(lengths.max()) > block_size:
        raise ValueError(f"lengths must lie in [0, {block_size}], got {lengths.tolist()}")
    if start_block is None:
        start_block = 0 if prefix is None else 1
    if not 0 <= start_block < num_blocks:
        raise ValueError(f"start_block must lie in [0, {num_blocks}), got {start_block}")

    tokens: list[Tensor] = []
    block_index: list[Tensor] = []
    block_position: list[Tensor] = []
    loss_mask: list[Tensor] = []
    prefix_length = 0
    if prefix is not None:
        prefix = _as_long(prefix, "prefix")
        if prefix.dim() == 1:
            if prefix.numel() == 0 or prefix.numel() % block_size != 0:
                raise ValueError(
                    f"a 1-D prefix must hold a positive multiple of M={block_size} codes, "
                    f"got {prefix.numel()}"
                )
            prefix = prefix.view(-1, block_size)
        if prefix.dim() != 2 or prefix.shape[1] != block_size or prefix.shape[0] == 0:
            raise ValueError(f"prefix must be (P, {block_size}), got shape {tuple(prefix.shape)}")
        if int(prefix.min()) < 0 or int(prefix.max()) >= codebook_size:
            raise ValueError(
                f"prefix codes must lie in [0, {codebook_size}) (pass the condition codes "
                f"without <SEP>: build_sequence appends it), got "
                f"[{int(prefix.min())}, {int(prefix.max())}]"
            )
        head = condition_prefix(prefix, vocab.sep)
        tokens.append(head.tokens)
        block_index.append(head.block_index)
        block_position.append(head.block_position)
        prefix_length = head.length
        loss_mask.append(torch.zeros(prefix_length, dtype=torch.bool))

    for b in range(start_block, num_blocks):
        length = int(lengths[b])
        tokens += [codes[b, :length], torch.tensor([vocab.eob])]
        block_index.append(torch.full((length + 1,), b, dtype=torch.long))
        block_position.append(torch.arange(length + 1))
        loss_mask.append(torch.ones(length + 1, dtype=torch.bool))

    return {
        "tokens": torch.cat(tokens).long(),
        "block_index": torch.cat(block_index).long(),
        "block_position": torch.cat(block_position).long(),
        "loss_mask": torch.cat(loss_mask),
        "prefix_length": torch.tensor(prefix_length, dtype=torch.long),
    }


def collate_sequences(samples: Sequence[Mapping[str, Any]], pad_id: int) -> dict[str, Any]:
    """Pads built sequences on the right to the longest one, every `<EOB>` included.

    The reference cut batches to the longest sample's code count and so lost that sample's
    last codes and final `<EOB>` (docs/METHOD.md section 5.2, defect); here
    the batch length S is the full length of the longest stream.

    Args:
        samples: Dicts from `build_sequence`, possibly with extra per-sample entries
            (tensors of equal shape or numbers are stacked; anything else is listed).
        pad_id: Token id written into padding (`GeneratorVocab.pad`); any id works since
            padding is never attended to by real tokens (causal) nor in the loss.

    Returns:
        Dict with `tokens`, `block_index`, `block_position` (long `(B, S)`; padding 0 in
        the index tensors), `loss_mask` (bool `(B, S)`, False on padding), `padding_mask`
        (bool `(B, S)`, True = real token), `prefix_length` (long `(B,)`) and the extra
        entries.

    Raises:
        ValueError: on an empty list, missing keys, or per-sample tensors of unequal length.
    """
    if len(samples) == 0:
        raise ValueError("collate_sequences needs at least one sample")
    for i, s in enumerate(samples):
        missing = [k for k in SEQUENCE_KEYS if k not in s]
        if missing:
            raise ValueError(f"sample {i} lacks {missing}; build it with build_sequence")
        n = s["tokens"].numel()
        for k in SEQUENCE_KEYS:
            if s[k].dim() != 1 or s[k].numel() != n:
                raise ValueError(
                    f"sample {i}: {k} must be 1-D of length {n}, got shape {tuple(s[k].shape)}"
                )
    batch_size = len(samples)
    seq_len = max(int(s["tokens"].numel()) for s in samples)
    out: dict[str, Any] = {
        "tokens": torch.full((batch_size, seq_len), pad_id, dtype=torch.long),
        "block_index": torch.zeros(batch_size, seq_len, dtype=torch.long),
        "block_position": torch.zeros(batch_size, seq_len, dtype=torch.long),
        "loss_mask": torch.zeros(batch_size, seq_len, dtype=torch.bool),
        "padding_mask": torch.zeros(batch_size, seq_len, dtype=torch.bool),
    }
    for i, s in enumerate(samples):
        n = int(s["tokens"].numel())
        for k in SEQUENCE_KEYS:
            out[k][i, :n] = s[k]
        out["padding_mask"][i, :n] = True
    out["prefix_length"] = torch.tensor(
        [int(s.get("prefix_length", 0)) for s in samples], dtype=torch.long
    )
    extra = [k for k in samples[0] if k not in SEQUENCE_KEYS and k != "prefix_length"]
    for k in extra:
        values = [s.get(k) for s in samples]
        if all(isinstance(v, Tensor) for v in values) and len({v.shape for v in values}) == 1:
            out[k] = torch.stack(values)
        elif all(isinstance(v, (bool, int, float)) for v in values):
            out[k] = torch.tensor(values)
        else:
            out[k] = values
    return out


def parse_sequence(
    tokens: Tensor, num_blocks: int, tokens_per_block: int, *, codebook_size: int
) -> tuple[Tensor, Tensor]:
    """Inverts `build_sequence`: a stream (optionally padded) back to codes and lengths.

    With a `<SEP>` in the stream (FP), the tokens before it are the condition prefix: block
    0 is its first M codes at full length (as it is copied at sampling), and the stream's
    `<EOB>`-closed blocks fill blocks 1..K-1. Without `<SEP>`, they fill blocks 0..K-1.
    Anything after the last needed `<EOB>` (padding) is ignored.

    Args:
        tokens: 1-D integer stream, values in `[0, V + 1]`.
        num_blocks: K.
        tokens_per_block: M.
        codebook_size: V.

    Returns:
        `codes` long `(K, M)` (zero after each block's length) and `lengths` long `(K,)`.

    Raises:
        ValueError: on a stream that is not 1-D, holds ids outside `[0, V + 1]`, lacks
            `<EOB>`s for some block, has a block longer than M, a `<SEP>` after codes, or a
            prefix shorter than M.
    """
    vocab = GeneratorVocab(codebook_size)
    tokens = _as_long(tokens, "tokens")
    if tokens.dim() != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tuple(tokens.shape)}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) > vocab.sep):
        raise ValueError(f"token ids must lie in [0, {vocab.sep}]")
    codes = torch.zeros(num_blocks, tokens_per_block, dtype=torch.long)
    lengths = torch.zeros(num_blocks, dtype=torch.long)

    sep_at = (tokens == vocab.sep).nonzero().flatten()
    start_block = 0
    body = tokens
    if sep_at.numel():
        cut = int(sep_at[0])
        head = tokens[:cut]
        if head.numel() < tokens_per_block or bool((head == vocab.eob).any()):
            raise ValueError(
                f"the prefix before <SEP> must hold >= {tokens_per_block} codes and no <EOB>"
            )
        codes[0] = head[:tokens_per_block]
        lengths[0] = tokens_per_block
        start_block = 1
        body = tokens[cut + 1 :]

    eob_at = (body == vocab.eob).nonzero().flatten()
    needed = num_blocks - start_block
    if eob_at.numel() < needed:
        raise ValueError(
            f"the stream closes {eob_at.numel()} blocks with <EOB>, {needed} are needed"
        )
    start = 0
    for j in range(needed):
        end = int(eob_at[j])
        block = body[start:end]
        if block.numel() > tokens_per_block:
            raise ValueError(
                f"block {start_block + j} holds {block.numel()} > {tokens_per_block} codes"
            )
        if bool((block == vocab.sep).any()):
            raise ValueError(f"block {start_block + j} holds a <SEP>")
        codes[start_block + j, : block.numel()] = block
        lengths[start_block + j] = block.numel()
        start = end + 1
    return codes, lengths
