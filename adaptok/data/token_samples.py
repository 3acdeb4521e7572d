"""What a valid token annotation sample is: one check for the token loader and ``verify``.

A token annotation sample (written by ``callbacks.AnnotationWriter``; the format is described
in the docstring of ``callbacks/annotation_writer.py``) holds:

- ``json``: an object naming the sizes ``num_blocks`` K, ``tokens_per_block`` M,
  ``codebook_size`` V (positive integers), ``budgets`` (the P annotated fractions, numbers),
  an integer ``label`` (absent: -1) and, optionally, ``candidate_lengths`` (J of them);
- ``codes.npy``: integers (K, M) inside the codebook ``[0, V)``;
- ``lengths.npy``: integers (P, K), each in ``[1, M]``;
- ``costs.npy`` (optional): finite floats (K, J), one column per candidate length;
- ``cond.npy`` (frame prediction): integers (K, M) inside the codebook.

:func:`check_token_sample` checks all of it and returns the decoded arrays, or raises
:class:`InvalidTokenSample`, whose :attr:`~InvalidTokenSample.reason` is short and stable
(``datamodules.TokenShardsDataModule`` counts skipped samples under it) and whose message
says exactly what is wrong (``adaptok-shards verify`` lists it). Given the
:data:`TokenSpec` a dataset was opened with, the sample must also carry those sizes and
budgets (a loader never mixes annotations of two tokenizers or budget sets).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from adaptok.data.tar_samples import PROBLEM_KEY

__all__ = [
    "SIZE_KEYS",
    "SPEC_KEYS",
    "InvalidTokenSample",
    "TokenSample",
    "TokenSpec",
    "check_token_sample",
    "metadata_spec",
    "sample_spec",
]

TokenSpec = dict[str, Any]
"""What every sample of a dataset must agree on: ``num_blocks`` K, ``tokens_per_block`` M,
``codebook_size`` V (ints), ``budgets`` (the P annotated fractions, floats)."""

SIZE_KEYS = ("num_blocks", "tokens_per_block", "codebook_size")
"""The tokenizer sizes a sample's JSON names (K, M, V)."""

SPEC_KEYS = (*SIZE_KEYS, "budgets")
"""The keys of a :data:`TokenSpec`."""


class InvalidTokenSample(ValueError):
    """A token sample that is not valid.

    Args:
        reason: Short, stable name of the fault (the key skipped samples are counted under).
        detail: What exactly is wrong (the message); ``None``: the reason.

    Attributes:
        reason: As given.
    """

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(detail or reason)
        self.reason = reason


@dataclass(frozen=True)
class TokenSample:
    """The checked contents of one token annotation sample.

    Attributes:
        meta: The JSON object.
        spec: The sample's sizes and budgets (:data:`TokenSpec`).
        codes: int64 (K, M) codes in ``[0, V)``.
        lengths: int64 (P, K) kept tokens per block at each budget, in ``[1, M]``.
        label: The class id (-1 when the JSON has none).
        costs: float (K, J) predicted cost table, or ``None`` when the sample has none.
        cond: int64 (K, M) condition codes (frame prediction), or ``None``.
    """

    meta: dict[str, Any]
    spec: TokenSpec
    codes: np.ndarray
    lengths: np.ndarray
    label: int
    costs: np.ndarray | None
    cond: np.ndarray | None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _load(files: Mapping[str, Any], member: str) -> np.ndarray:
    """One ``.npy`` member (no pickles).

    Raises:
        InvalidTokenSample: ``missing <member>`` or ``unreadable <member>``.
    """
    if member not in files:
        raise InvalidTokenSample(
            f"missing {member}", f"token sample without {member} (members: {_members(files)})"
        )
    data = files[member]
    if not isinstance(data, bytes):
        raise InvalidTokenSample(f"unreadable {member}", f"{member} is not file data")
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise InvalidTokenSample(
            f"unreadable {member}", f"{member} does not load as a .npy array: {error}"
        ) from error


def _members(files: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in files if not k.startswith("__"))


def _codes(array: np.ndarray, name: str, shape: tuple[int, int], vocab: int) -> np.ndarray:
    """An integer ``shape`` array inside the codebook, as int64.

    Raises:
        InvalidTokenSample: ``<name>: not integers``, ``<name>: wrong shape`` or ``code out
            of range``.
    """
    member = f"{name}.npy"
    if array.dtype.kind not in "iu":
        raise InvalidTokenSample(
            f"{name}: not integers", f"{member} is {array.dtype} {array.shape}, not integer"
        )
    if array.shape != shape:
        raise InvalidTokenSample(
            f"{name}: wrong shape",
            f"{member} is {array.dtype} {array.shape}, not integer (K, M) = {shape}",
        )
    codes = array.astype(np.int64)
    if codes.size and (codes.min() < 0 or codes.max() >= vocab):
        raise InvalidTokenSample(
            "code out of range",
            f"{member} holds {int(codes.min())}..{int(codes.max())}, outside the codebook "
            f"of {vocab}",
        )
    return codes


def _metadata(files: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object.

    Raises:
        InvalidTokenSample: ``missing json`` or ``bad metadata``.
    """
    if "json" not in files:
        raise InvalidTokenSample(
            "missing json", f"token sample without json (members: {_members(files)})"
        )
    try:
        meta = json.loads(files["json"])
    except (ValueError, UnicodeDecodeError, TypeError) as error:
        raise InvalidTokenSample("bad metadata", f"metadata is not valid JSON: {error}") from error
    if not isinstance(meta, dict):
        raise InvalidTokenSample(
            "bad metadata", f"metadata is JSON {type(meta).__name__}, not an object"
        )
    return meta


def metadata_spec(meta: dict[str, Any]) -> TokenSpec:
    """The sizes and budgets a sample's JSON object names (:data:`TokenSpec`).

    Raises:
        InvalidTokenSample: ``mismatched tokenizer sizes`` (a size that is not a positive
            integer) or ``mismatched budgets`` (budgets that are not a list of numbers).
    """
    for name in SIZE_KEYS:
        value = meta.get(name)
        if not _is_int(value) or value < 1:
            raise InvalidTokenSample(
                "mismatched tokenizer sizes",
                f"metadata {name!r} is {value!r}, not a positive integer",
            )
    budgets = meta.get("budgets")
    if not isinstance(budgets, list) or not budgets or not all(map(_is_number, budgets)):
        raise InvalidTokenSample(
            "mismatched budgets", f"metadata 'budgets' is {budgets!r}, not a list of numbers"
        )
    return {**{name: meta[name] for name in SIZE_KEYS}, "budgets": [float(b) for b in budgets]}


def sample_spec(files: Mapping[str, Any]) -> TokenSpec | None:
    """The sizes and budgets a sample's JSON names, or ``None`` when it names none.

    The data's :data:`TokenSpec` is that of its first sample that names one (the token
    loader reads it from the first shard, ``verify`` per split); the sample's other faults
    do not matter here.
    """
    try:
        return metadata_spec(_metadata(files))
    except InvalidTokenSample:
        return None


def check_token_sample(
    files: Mapping[str, Any], spec: TokenSpec | None = None, need_cond: bool = False
) -> TokenSample:
    """Check one token annotation sample and decode its arrays (see the module docstring).

    The checks run in a fixed order and the first fault found is raised: a problem found
    while grouping the shard (:data:`~adaptok.data.tar_samples.PROBLEM_KEY`), the JSON, its
    sizes and budgets (against ``spec`` when given), ``codes``, ``lengths``, their ranges,
    ``cond``, the label, ``costs``.

    Args:
        files: The sample's members by suffix (``json``, ``codes.npy``...); keys starting
            with ``__`` (``__key__``, ``__url__``) are ignored.
        spec: Sizes and budgets the sample must carry (:data:`TokenSpec`); ``None``: its own
            JSON's (``verify``, which reads samples of any dataset).
        need_cond: ``cond.npy`` is required (frame prediction); otherwise it is checked when
            present.

    Returns:
        The checked sample.

    Raises:
        InvalidTokenSample: With a short reason (the skip count's key) and the detail.
    """
    if PROBLEM_KEY in files:
        problem = str(files[PROBLEM_KEY])
        raise InvalidTokenSample(problem, problem)
    meta = _metadata(files)
    own = metadata_spec(meta)
    if spec is not None:
        if any(own[name] != spec[name] for name in SIZE_KEYS):
            raise InvalidTokenSample(
                "mismatched tokenizer sizes",
                f"metadata K, M, V = {[own[n] for n in SIZE_KEYS]}, the data's are "
                f"{[spec[n] for n in SIZE_KEYS]}",
            )
        if own["budgets"] != [float(b) for b in spec["budgets"]]:
            raise InvalidTokenSample(
                "mismatched budgets",
                f"metadata budgets {own['budgets']}, the data's are {list(spec['budgets'])}",
            )
    blocks, tokens, vocab = (own[name] for name in SIZE_KEYS)
    levels = len(own["budgets"])
    codes = _codes(_load(files, "codes.npy"), "codes", (blocks, tokens), vocab)
    lengths = _load(files, "lengths.npy")
    if lengths.dtype.kind not in "iu":
        raise InvalidTokenSample(
            "lengths: not integers", f"lengths.npy is {lengths.dtype} {lengths.shape}, not integer"
        )
    if lengths.shape != (levels, blocks):
        raise InvalidTokenSample(
            "lengths: wrong shape",
            f"lengths.npy is {lengths.dtype} {lengths.shape}, not integer (P, K) = "
            f"{(levels, blocks)} for {levels} budgets of {blocks} blocks",
        )
    lengths = lengths.astype(np.int64)
    if lengths.min() < 1 or lengths.max() > tokens:
        raise InvalidTokenSample(
            "length out of range",
            f"lengths.npy holds {int(lengths.min())}..{int(lengths.max())}, outside "
            f"1..{tokens} (the tokens per block)",
        )
    cond = None
    if need_cond or "cond.npy" in files:
        cond = _codes(_load(files, "cond.npy"), "cond", (blocks, tokens), vocab)
    label = meta.get("label", -1)
    if not _is_int(label):
        raise InvalidTokenSample("bad label", f"metadata 'label' is {label!r}, not an integer")
    costs = None
    if "costs.npy" in files:
        costs = _load(files, "costs.npy")
        if costs.ndim != 2 or costs.dtype.kind != "f" or costs.shape[0] != blocks:
            raise InvalidTokenSample(
                "costs: wrong shape",
                f"costs.npy is {costs.dtype} {costs.shape}, not float ({blocks}, J)",
            )
        if not np.isfinite(costs).all():
            raise InvalidTokenSample("costs: not finite", "costs.npy holds NaN or infinite costs")
        candidates = meta.get("candidate_lengths")
        if isinstance(candidates, list) and len(candidates) != costs.shape[1]:
            raise InvalidTokenSample(
                "costs: wrong shape",
                f"costs.npy has {costs.shape[1]} columns, metadata lists {len(candidates)} "
                "candidate lengths",
            )
    return TokenSample(meta, own, codes, lengths, label, costs, cond)
