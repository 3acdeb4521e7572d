"""TokenShardsDataModule: the generator's training data, read from token annotation shards.

Pipeline per split (each box runs in the DataLoader workers)::

    shard list -> [rank split -> worker split] -> tar samples -> [shuffle buffer]
      -> TokenSampleDecoder (check, pick a budget, build_sequence) -> collate_sequences
    train with ``epoch_length``: resampled shards (with replacement) + ``with_epoch``

Each annotated window holds the lengths of every block at P budgets
(``callbacks.AnnotationWriter``); every epoch each sample draws ONE of them, from a seed, its
key and the epoch, so the choice is reproducible, changes from epoch to epoch, and does not
depend on the worker or rank that reads the sample. The stream is built by
``adaptok.nn.generator_sequence.build_sequence`` (for each block its first L_b codes then
``<EOB>``; in frame prediction the condition's first blocks + ``<SEP>`` in front) and padded by
``collate_sequences`` to the longest stream of the batch, every ``<EOB>`` included.

Bad or mismatched samples (missing members, wrong shapes, lengths out of range, codes outside
the codebook, other budgets or tokenizer sizes than the rest of the data) are skipped and
counted by reason; the counts travel in the batches and are reported once per pass as a
:class:`SkippedSamplesWarning`; totals are in ``datamodule.skip_counts``.
"""

from __future__ import annotations

import io
import json
import math
import random
import warnings
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from functools import partial
from itertools import islice
from typing import Any, Literal

import numpy as np
import torch
import webdataset as wds
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from adaptok.data.shards import SPLIT_NAMES, resolve_shards
from adaptok.data.skips import SkippedSamplesWarning
from adaptok.distributed import rank_and_world_size
from adaptok.nn.generator_sequence import GeneratorVocab, build_sequence, collate_sequences

__all__ = ["TokenSampleDecoder", "TokenShardsDataModule", "TokenSpec", "collate_tokens"]

Split = Literal["train", "val", "test", "predict"]
Condition = Literal["class", "frame_prediction"]

TokenSpec = dict[str, Any]
"""What every sample of a dataset must agree on: ``num_blocks`` K, ``tokens_per_block`` M,
``codebook_size`` V, ``budgets`` (the P annotated fractions)."""

_SPEC_KEYS = ("num_blocks", "tokens_per_block", "codebook_size", "budgets")


class _Skip(Exception):
    """A sample skipped, with the reason it is counted under."""


def _load_npy(sample: dict[str, Any], member: str) -> np.ndarray:
    if member not in sample:
        raise _Skip(f"missing {member}")
    try:
        return np.load(io.BytesIO(sample[member]), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise _Skip(f"unreadable {member}") from error


def _integer_array(array: np.ndarray, member: str, shape: tuple[int, ...]) -> np.ndarray:
    if array.dtype.kind not in "iu":
        raise _Skip(f"{member}: not integers")
    if array.shape != shape:
        raise _Skip(f"{member}: wrong shape")
    return array.astype(np.int64)


class TokenSampleDecoder:
    """Pipeline stage: raw annotation samples -> built sequences (bad samples counted, skipped).

    Output samples: the ``build_sequence`` dict (``tokens``, ``block_index``,
    ``block_position``, ``loss_mask``, ``prefix_length``) plus ``label`` int, ``budget_level``
    int, ``budget`` float (the fraction), ``key`` str, ``skipped`` (reason -> count since the
    previous output). Each output is held back until the next is ready, so skips at the end of
    a stream still reach the main process; a stream that yields nothing warns from its worker.

    Args:
        spec: Sizes and budgets every sample must match (:data:`TokenSpec`).
        condition: ``class`` (UCF-101) or ``frame_prediction`` (Kinetics-600: needs
            ``cond.npy``; the prefix is its first ``condition_blocks`` blocks).
        condition_blocks: Condition blocks in the frame-prediction prefix (reference: 2).
        budget_levels: Indices of the annotated budgets to draw from (None: all).
        num_classes: Class-conditional labels must lie in ``[0, num_classes)`` (None: >= 0).
        seed: Seed of the budget draws.
        epoch: Epoch of the first pass; each later pass (call) adds one. ``None`` keeps every
            pass at epoch 0 (evaluation: the same budgets every time).
        counts: Shared skip counter (also the WebDataset handler of unreadable shards).
    """

    def __init__(
        self,
        spec: TokenSpec,
        condition: Condition,
        condition_blocks: int,
        budget_levels: Sequence[int] | None,
        num_classes: int | None,
        seed: int,
        epoch: int | None,
        counts: Counter,
    ) -> None:
        self.spec = {k: spec[k] for k in _SPEC_KEYS}
        self.condition, self.condition_blocks = condition, condition_blocks
        levels = range(len(spec["budgets"])) if budget_levels is None else budget_levels
        self.levels = [int(x) for x in levels]
        self.num_classes, self.seed = num_classes, seed
        self.advance = epoch is not None
        self.epoch = int(epoch or 0)
        self.counts = counts

    def __call__(self, samples: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Decode ``samples`` into sequences, counting the bad ones as skips."""
        epoch = self.epoch
        if self.advance:
            self.epoch += 1
        held: dict[str, Any] | None = None
        for sample in samples:
            try:
                item = self.decode(sample, epoch)
            except _Skip as skip:
                self.counts[str(skip)] += 1
                continue
            except Exception as error:  # bad data must never kill a worker
                self.counts[f"unreadable sample ({type(error).__name__})"] += 1
                continue
            if held is not None:
                held["skipped"] = self._drain()
                yield held
            held = item
        if held is not None:
            held["skipped"] = self._drain()
            yield held
        elif self.counts:
            # Nothing to carry the counts to the main process: say it here (worker stderr).
            reasons = ", ".join(f"{r}: {n}" for r, n in sorted(self._drain().items()))
            warnings.warn(
                f"a token data stream produced no sample; every sample was skipped ({reasons})",
                SkippedSamplesWarning,
                stacklevel=2,
            )

    def _drain(self) -> dict[str, int]:
        counts = dict(self.counts)
        self.counts.clear()
        return counts

    def choose_level(self, key: str, epoch: int) -> int:
        """The budget level of sample ``key`` in ``epoch`` (depends on seed, key, epoch only)."""
        rng = np.random.default_rng([self.seed, epoch, zlib.crc32(key.encode())])
        return self.levels[int(rng.integers(len(self.levels)))]

    def decode(self, sample: dict[str, Any], epoch: int) -> dict[str, Any]:
        """Check one raw sample and build its sequence at this epoch's budget.

        Raises:
            _Skip: with the reason, for any bad or mismatched sample.
        """
        key = str(sample.get("__key__", ""))
        if "json" not in sample:
            raise _Skip("missing json")
        try:
            meta = json.loads(sample["json"])
            if not isinstance(meta, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError) as error:
            raise _Skip("bad metadata") from error
        spec = self.spec
        if any(meta.get(k) != spec[k] for k in _SPEC_KEYS[:3]):
            raise _Skip("mismatched tokenizer sizes")
        budgets = meta.get("budgets")
        if not isinstance(budgets, list) or [float(b) for b in budgets] != spec["budgets"]:
            raise _Skip("mismatched budgets")
        blocks, block_size, vocab = (
            spec["num_blocks"],
            spec["tokens_per_block"],
            spec["codebook_size"],
        )
        codes = _integer_array(_load_npy(sample, "codes.npy"), "codes", (blocks, block_size))
        lengths = _integer_array(
            _load_npy(sample, "lengths.npy"), "lengths", (len(spec["budgets"]), blocks)
        )
        if codes.min() < 0 or codes.max() >= vocab:
            raise _Skip("code out of range")
        if lengths.min() < 1 or lengths.max() > block_size:
            raise _Skip("length out of range")
        prefix = None
        if self.condition == "frame_prediction":
            cond = _integer_array(_load_npy(sample, "cond.npy"), "cond", (blocks, block_size))
            if cond.min() < 0 or cond.max() >= vocab:
                raise _Skip("code out of range")
            prefix = torch.from_numpy(cond[: self.condition_blocks])
        label = meta.get("label", -1)
        if not isinstance(label, int) or isinstance(label, bool):
            raise _Skip("bad label")
        if self.condition == "class" and (
            label < 0 or (self.num_classes is not None and label >= self.num_classes)
        ):
            raise _Skip("label out of range")
        level = self.choose_level(key, epoch)
        sequence = build_sequence(
            torch.from_numpy(codes),
            torch.from_numpy(lengths[level]),
            prefix,
            codebook_size=vocab,
        )
        return {
            **sequence,
            "label": label,
            "budget_level": level,
            "budget": float(spec["budgets"][level]),
            "key": key,
        }


def collate_tokens(samples: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Batch built sequences (in the worker): ``collate_sequences`` + the sample fields.

    Returns:
        ``tokens``, ``block_index``, ``block_position`` long (B, S), ``loss_mask``,
        ``padding_mask`` bool (B, S), S = the longest stream INCLUDING all its ``<EOB>``s;
        ``prefix_length``, ``label``, ``budget_level`` long (B,); ``budget`` float (B,);
        ``key`` list; ``skipped`` summed counts.
    """
    skipped: Counter = Counter()
    for sample in samples:
        skipped.update(sample.pop("skipped", None) or {})
    batch = collate_sequences(samples, pad_id)
    batch["label"] = batch["label"].long()
    batch["budget_level"] = batch["budget_level"].long()
    batch["budget"] = batch["budget"].float()
    batch["skipped"] = dict(skipped)
    return batch


class _ShuffledShards(IterableDataset):
    """Shard URLs in a fresh seeded order each pass (the same order on every rank/worker)."""

    def __init__(self, urls: list[str], seed: int, epoch: int) -> None:
        super().__init__()
        self.urls, self.seed, self.epoch = urls, seed, epoch

    def __iter__(self) -> Iterator[dict[str, str]]:
        urls = list(self.urls)
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(urls)
        self.epoch += 1
        for url in urls:
            yield {"url": url}


def _split_by_rank(src: Iterator[Any], rank: int, world_size: int) -> Iterator[Any]:
    yield from islice(src, rank, None, world_size)


def _worker_seed(rank: int) -> int:
    info = get_worker_info()
    return rank * 1000 + (info.id if info is not None else 0)


def read_token_spec(url: str) -> TokenSpec:
    """The sizes and budgets of the first annotation in shard ``url``.

    Raises:
        ValueError: The shard holds no annotation with a readable ``json``.
    """
    for sample in wds.DataPipeline(wds.SimpleShardList([url]), wds.tarfile_to_samples()):
        try:
            meta = json.loads(sample["json"])
            return {
                "num_blocks": int(meta["num_blocks"]),
                "tokens_per_block": int(meta["tokens_per_block"]),
                "codebook_size": int(meta["codebook_size"]),
                "budgets": [float(b) for b in meta["budgets"]],
            }
        except (KeyError, ValueError, TypeError, UnicodeDecodeError):
            continue
    raise ValueError(f"no annotation with readable metadata in shard {url!r}")


class TokenShardsDataModule(LightningDataModule):
    """Token sequences for the AR generator from annotation shards.

    Batches: ``tokens``, ``block_index``, ``block_position``, ``loss_mask``, ``padding_mask``
    (B, S); ``label``, ``budget_level``, ``prefix_length`` (B,) long; ``budget`` (B,) float
    (fraction of M); ``key`` list. See ``adaptok.nn.generator_sequence`` for the layout.

    Args:
        train_urls: Training shards: glob, brace pattern, folder, local path or any URL
            WebDataset opens, or a list of those.
        val_urls: Validation shards; ``None``: no validation.
        test_urls: Test shards.
        condition: ``class`` (class-conditional, UCF-101) or ``frame_prediction``
            (Kinetics-600; shards must carry ``cond.npy``).
        condition_blocks: Condition blocks in the frame-prediction prefix (reference: 2).
        num_classes: Labels must lie in ``[0, num_classes)`` (class mode; None: only >= 0).
        budget_levels: Indices of the annotated budgets to train on (None: all).
        num_blocks: Expected K (None: from the first training shard).
        tokens_per_block: Expected M (None: likewise).
        codebook_size: Expected V (None: likewise).
        batch_size: Sequences per batch.
        num_workers: DataLoader workers.
        pin_memory: Pin batches in page-locked memory.
        epoch_length: Training samples per epoch over all ranks (shards drawn with
            replacement); ``None``: one pass over the shuffled shards per epoch.
        shuffle_buffer: Training samples mixed in a shuffle buffer (0 or 1: none).
        seed: Seed of shard order, shuffling and budget draws.
    """

    def __init__(
        self,
        train_urls: str | list[str] | None = None,
        val_urls: str | list[str] | None = None,
        test_urls: str | list[str] | None = None,
        condition: Condition = "class",
        condition_blocks: int = 2,
        num_classes: int | None = None,
        budget_levels: list[int] | None = None,
        num_blocks: int | None = None,
        tokens_per_block: int | None = None,
        codebook_size: int | None = None,
        batch_size: int = 8,
        num_workers: int = 2,
        pin_memory: bool = False,
        epoch_length: int | None = None,
        shuffle_buffer: int = 1000,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1 or num_workers < 0 or condition_blocks < 1:
            raise ValueError("batch_size and condition_blocks must be >= 1, num_workers >= 0")
        if epoch_length is not None and epoch_length < 1:
            raise ValueError(f"epoch_length must be >= 1 or None, got {epoch_length}")
        if condition not in ("class", "frame_prediction"):
            raise ValueError(f"condition must be 'class' or 'frame_prediction', got {condition!r}")
        self.save_hyperparameters()
        self.urls: dict[str, str | list[str] | None] = {
            "train": train_urls,
            "val": val_urls,
            "test": test_urls,
            "predict": None,
        }
        self.condition, self.condition_blocks = condition, condition_blocks
        self.num_classes, self.budget_levels = num_classes, budget_levels
        self.expected = {
            "num_blocks": num_blocks,
            "tokens_per_block": tokens_per_block,
            "codebook_size": codebook_size,
        }
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.epoch_length, self.shuffle_buffer, self.seed = epoch_length, shuffle_buffer, seed
        self.shards: dict[str, list[str]] = {}
        self.spec: TokenSpec | None = None
        self.skip_counts: Counter = Counter()
        self._pending_skips: dict[tuple[str, int], Counter] = {}

    # ----------------------------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        """Resolve the shards and fix the token spec (from the first shard where not given).

        Raises:
            FileNotFoundError: A pattern matches nothing.
            ValueError: The first shard contradicts a given size, or a budget level is out of
                range.
        """
        for split in ("train", "val", "test"):
            if self.urls[split] is not None and split not in self.shards:
                self.shards[split] = resolve_shards(
                    self.urls[split], f"{split}_urls", split if split in SPLIT_NAMES else None
                )
        if self.spec is None:
            first = next(
                (self.shards[s][0] for s in ("train", "val", "test") if s in self.shards), None
            )
            if first is None:
                raise ValueError("no shards: set train_urls, val_urls or test_urls")
            spec = read_token_spec(first)
            for name, value in self.expected.items():
                if value is not None and int(value) != spec[name]:
                    raise ValueError(
                        f"{name}={value} was asked but shard {first!r} holds {name}={spec[name]}"
                    )
            levels = self.budget_levels or []
            if any(not 0 <= int(x) < len(spec["budgets"]) for x in levels):
                raise ValueError(
                    f"budget_levels {levels} out of range: the shards annotate "
                    f"{len(spec['budgets'])} budgets {spec['budgets']}"
                )
            self.spec = spec

    @property
    def vocab(self) -> GeneratorVocab:
        """Token ids (codes, ``<EOB>``, ``<SEP>``) of the data, after :meth:`setup`."""
        self.setup()
        return GeneratorVocab(self.spec["codebook_size"])

    def _dataloader(self, split: Split) -> DataLoader:
        if self.urls[split] is None:
            raise ValueError(f"{split}_urls is not set: no {split} data")
        self.setup()
        shards = self.shards[split]
        rank, world_size = rank_and_world_size(self.trainer)
        train = split == "train"
        resampled = train and self.epoch_length is not None
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        workers = self.num_workers
        if not resampled:
            own = len(shards[rank::world_size])
            if own == 0:
                raise ValueError(
                    f"{split}: {len(shards)} shard(s) cannot be split over {world_size} ranks; "
                    "annotate into more shards (AnnotationWriter samples_per_shard)"
                )
            if workers > own:
                warnings.warn(
                    f"{split}: num_workers={workers} > {own} shard(s) on this rank; "
                    f"using {own} worker(s)",
                    stacklevel=2,
                )
                workers = own
        counts: Counter = Counter()

        def on_bad_shard(error: Exception) -> bool:
            counts[f"unreadable shard ({type(error).__name__})"] += 1
            return True

        if resampled:
            stages: list[Any] = [
                wds.ResampledShards(
                    shards,
                    seed=self.seed + epoch,
                    worker_seed=partial(_worker_seed, rank),
                    deterministic=True,
                )
            ]
        else:
            first = (
                _ShuffledShards(shards, self.seed, epoch) if train else wds.SimpleShardList(shards)
            )
            stages = [
                first,
                partial(_split_by_rank, rank=rank, world_size=world_size),
                wds.split_by_worker,
            ]
        stages.append(wds.tarfile_to_samples(handler=on_bad_shard))
        if train and self.shuffle_buffer > 1:
            rng = random.Random(self.seed * 7919 + rank * 104_729 + epoch)
            stages.append(wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng))
        stages.append(
            TokenSampleDecoder(
                self.spec,
                self.condition,
                self.condition_blocks,
                self.budget_levels,
                self.num_classes,
                self.seed,
                epoch if train else None,
                counts,
            )
        )
        dataset = wds.DataPipeline(*stages)
        if resampled:
            per_worker = self.epoch_length / (world_size * max(workers, 1) * self.batch_size)
            dataset = dataset.with_epoch(math.ceil(per_worker) * self.batch_size)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=workers,
            pin_memory=self.pin_memory,
            collate_fn=partial(
                collate_tokens, pad_id=GeneratorVocab(self.spec["codebook_size"]).pad
            ),
            persistent_workers=train and workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Training sequences: shuffled, a fresh budget draw per sample each epoch."""
        return self._dataloader("train")

    def val_dataloader(self) -> DataLoader | list:
        """Validation sequences in a fixed order and fixed budgets (none: no ``val_urls``)."""
        return self._dataloader("val") if self.urls["val"] is not None else []

    def test_dataloader(self) -> DataLoader:
        """Test sequences in a fixed order and fixed budgets."""
        return self._dataloader("test")

    # ---------------------------------------------------------------------------- skip report
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Take the skip counts out of the batch and report finished passes."""
        if not isinstance(batch, dict):
            return batch
        skipped = batch.pop("skipped", None) or {}
        current = ("unknown", 0)
        if self.trainer is not None and self.trainer.state.stage is not None:
            current = (self.trainer.state.stage.value, self.trainer.current_epoch)
        for other in list(self._pending_skips):
            if other != current:
                self._report_skips(other)
        if skipped:
            self._pending_skips.setdefault(current, Counter()).update(skipped)
            self.skip_counts.update(skipped)
        return batch

    def _report_skips(self, pass_key: tuple[str, int]) -> None:
        counts = self._pending_skips.pop(pass_key, None)
        if not counts:
            return
        stage, epoch = pass_key
        reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items()))
        warnings.warn(
            f"skipped {sum(counts.values())} token sample(s) in {stage} epoch {epoch} ({reasons})",
            SkippedSamplesWarning,
            stacklevel=2,
        )

    def teardown(self, stage: str) -> None:
        """Report skips of passes not yet reported."""
        for pass_key in list(self._pending_skips):
            self._report_skips(pass_key)
