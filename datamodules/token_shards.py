"""TokenShardsDataModule: the generator's training data, read from token annotation shards.

Pipeline per split (the shared :class:`~adaptok.data.shard_stream.ShardStream`, run in the
DataLoader workers)::

    shard list -> [rank split -> worker split] -> tar samples -> [shuffle buffer]
      -> TokenSampleDecoder (check, pick a budget, build_sequence) -> collate_tokens
    train with ``epoch_length``: shards drawn with replacement, a fixed count per worker

Each annotated window holds the lengths of every block at P budgets
(``callbacks.AnnotationWriter``); every epoch each sample draws ONE of them, from a seed, its
key and the epoch, so the choice is reproducible, changes from epoch to epoch, and does not
depend on the worker or rank that reads the sample. The stream is built by
``adaptok.nn.generator_sequence.build_sequence`` (for each block its first L_b codes then
``<EOB>``; in frame prediction the condition's first blocks + ``<SEP>`` in front) and padded by
``collate_sequences`` to the longest stream of the batch, every ``<EOB>`` included.

Bad or mismatched samples (missing members, wrong shapes, lengths out of range, codes outside
the codebook, other budgets or tokenizer sizes than the rest of the data: the one definition
of a valid sample in ``adaptok.data.token_samples``, which ``adaptok-shards verify`` applies
too) are skipped and counted by reason; the counts travel in the batches and are reported once per pass as a
:class:`SkippedSamplesWarning`; totals are in ``datamodule.skip_counts``.

Resume: as every shard datamodule (:class:`~datamodules.shard_data.ShardDataModule`), the
state saved in a checkpoint holds the epoch and the training batches consumed in it; shard
order, shuffle buffer and budget draws of a pass are seeded by its epoch, so a run restarted
with ``--ckpt_path`` continues the token stream where it stopped.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any, Literal

import numpy as np
import torch
import webdataset as wds

from adaptok.data.shard_stream import Decode, ShardLoader, ShardStream
from adaptok.data.shards import ShardOrder
from adaptok.data.skips import (
    REPORT_KEY,
    REPORT_ONLY_KEY,
    SkippedSamplesWarning,
    SkipSample,
    SkipTracker,
    merge_reports,
)
from adaptok.data.tar_samples import read_tar_json
from adaptok.data.token_samples import (
    SPEC_KEYS,
    InvalidTokenSample,
    TokenSpec,
    check_token_sample,
    metadata_spec,
)
from adaptok.nn.generator_sequence import GeneratorVocab, build_sequence, collate_sequences
from datamodules.shard_data import ShardDataModule, Split

__all__ = [
    "SkippedSamplesWarning",
    "TokenSampleDecoder",
    "TokenShardsDataModule",
    "TokenSpec",
    "TokenStream",
    "collate_tokens",
]

Condition = Literal["class", "frame_prediction"]


class TokenSampleDecoder:
    """Raw annotation samples -> built sequences (bad samples raise :class:`SkipSample`).

    Output samples: the ``build_sequence`` dict (``tokens``, ``block_index``,
    ``block_position``, ``loss_mask``, ``prefix_length``) plus ``label`` int, ``budget_level``
    int, ``budget`` float (the fraction) and ``key`` str.

    Args:
        spec: Sizes and budgets every sample must match (:data:`TokenSpec`).
        condition: ``class`` (UCF-101) or ``frame_prediction`` (Kinetics-600: needs
            ``cond.npy``; the prefix is its first ``condition_blocks`` blocks).
        condition_blocks: Condition blocks in the frame-prediction prefix (reference: 2).
        budget_levels: Indices of the annotated budgets to draw from (None: all).
        num_classes: Class-conditional labels must lie in ``[0, num_classes)`` (None: >= 0).
        seed: Seed of the budget draws.
    """

    def __init__(
        self,
        spec: TokenSpec,
        condition: Condition,
        condition_blocks: int,
        budget_levels: Sequence[int] | None,
        num_classes: int | None,
        seed: int,
    ) -> None:
        self.spec = {k: spec[k] for k in SPEC_KEYS}
        self.condition, self.condition_blocks = condition, condition_blocks
        levels = range(len(spec["budgets"])) if budget_levels is None else budget_levels
        self.levels = [int(x) for x in levels]
        self.num_classes, self.seed = num_classes, seed

    def choose_level(self, key: str, epoch: int) -> int:
        """The budget level of sample ``key`` in ``epoch`` (depends on seed, key, epoch only)."""
        rng = np.random.default_rng([self.seed, epoch, zlib.crc32(key.encode())])
        return self.levels[int(rng.integers(len(self.levels)))]

    def decode(self, sample: dict[str, Any], epoch: int) -> dict[str, Any]:
        """Check one raw sample and build its sequence at this epoch's budget.

        The sample must be a valid token sample of this data's sizes and budgets
        (:func:`~adaptok.data.token_samples.check_token_sample`, the check ``adaptok-shards
        verify`` makes too) and, class-conditional, carry a label in range.

        Raises:
            SkipSample: With the reason, for any bad or mismatched sample.
        """
        key = str(sample.get("__key__", ""))
        try:
            checked = check_token_sample(
                sample, self.spec, need_cond=self.condition == "frame_prediction"
            )
        except InvalidTokenSample as error:
            raise SkipSample(error.reason) from error
        label = checked.label
        if self.condition == "class" and (
            label < 0 or (self.num_classes is not None and label >= self.num_classes)
        ):
            raise SkipSample("label out of range")
        prefix = None
        if self.condition == "frame_prediction":
            prefix = torch.from_numpy(checked.cond[: self.condition_blocks])
        level = self.choose_level(key, epoch)
        sequence = build_sequence(
            torch.from_numpy(checked.codes),
            torch.from_numpy(checked.lengths[level]),
            prefix,
            codebook_size=self.spec["codebook_size"],
        )
        return {
            **sequence,
            "label": label,
            "budget_level": level,
            "budget": float(self.spec["budgets"][level]),
            "key": key,
        }


def collate_tokens(samples: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Batch built sequences (in the worker): ``collate_sequences`` + the sample fields.

    Report-only entries (:data:`~adaptok.data.skips.REPORT_ONLY_KEY`) add their skip counts
    only.

    Returns:
        ``tokens``, ``block_index``, ``block_position`` long (B, S), ``loss_mask``,
        ``padding_mask`` bool (B, S), S = the longest stream INCLUDING all its ``<EOB>``s;
        ``prefix_length``, ``label``, ``budget_level`` long (B,); ``budget`` float (B,);
        ``key`` list; ``skipped`` the summed skip report. When every entry is report-only:
        just the report and ``REPORT_ONLY_KEY``.
    """
    report = merge_reports([s.pop(REPORT_KEY, None) or {} for s in samples])
    sequences = [s for s in samples if not s.get(REPORT_ONLY_KEY)]
    if not sequences:
        return {REPORT_KEY: report, REPORT_ONLY_KEY: True}
    batch = collate_sequences(sequences, pad_id)
    batch["label"] = batch["label"].long()
    batch["budget_level"] = batch["budget_level"].long()
    batch["budget"] = batch["budget"].float()
    batch[REPORT_KEY] = report
    return batch


class TokenStream(ShardStream):
    """Token sequences of one split for the current epoch (a :class:`ShardStream`).

    Shards are grouped without a video member (``complete=None``) and no run of failures
    stops the stream. The seeds are those the token data has always been read with: the
    shard order of epoch ``e`` from ``seed * 1_000_003 + e``; a resampled pass draws as
    ``webdataset.ResampledShards`` with worker seed ``rank * 1000 + worker``; the shuffle
    buffer is ``webdataset``'s, seeded by ``seed * 7919 + rank * 104_729 + e`` (the same for
    the workers of a rank).

    Args:
        urls: Resolved shard URLs.
        order: ``ordered``, ``shuffled`` or ``resampled``.
        decoder: Checks samples and builds their sequences.
        draw_per_epoch: Budget draws follow the epoch (training); off: every pass draws as
            epoch 0 (evaluation: the same budgets every time).
        **stream: The other arguments of :class:`ShardStream` (seed, rank, world size,
            shuffle buffer, samples per worker, split; not ``max_consecutive_skips`` nor
            ``complete``, fixed as above).
    """

    def __init__(
        self,
        urls: Sequence[str],
        order: ShardOrder,
        decoder: TokenSampleDecoder,
        draw_per_epoch: bool,
        **stream: Any,
    ) -> None:
        super().__init__(urls, order, max_consecutive_skips=None, complete=None, **stream)
        self.decoder, self.draw_per_epoch = decoder, draw_per_epoch

    def shard_order(self, worker: int, num_workers: int) -> Iterator[str]:
        """Shards this rank's ``worker`` reads in this pass."""
        if self.order == "resampled":
            rank = self.rank
            drawn = wds.ResampledShards(
                self.urls,
                seed=self.seed,
                worker_seed=lambda: rank * 1000 + worker,
                deterministic=True,
            )
            drawn.epoch = self.epoch - 1  # it counts one up before drawing
            return (entry["url"] for entry in drawn)
        listed = list(self.urls)
        if self.order == "shuffled":
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(listed)
        return iter(listed[self.rank :: self.world_size][worker::num_workers])

    def shuffle(self, samples: Iterator[dict[str, Any]], worker: int) -> Iterator[dict[str, Any]]:
        """``webdataset``'s shuffle buffer, filled before the first output."""
        rng = random.Random(self.seed * 7919 + self.rank * 104_729 + self.epoch)
        return wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)(samples)

    def pass_decoder(self, worker: int) -> Decode:
        """Build each sample's sequence at the budget drawn for this pass's epoch."""
        epoch = self.epoch if self.draw_per_epoch else 0

        def decode(sample: dict[str, Any], tracker: SkipTracker) -> list[dict[str, Any]]:
            return [self.decoder.decode(sample, epoch)]

        return decode


def read_token_spec(url: str) -> TokenSpec:
    """The sizes and budgets of the first annotation in shard ``url`` that names them.

    Only the shard's ``json`` members are read
    (:func:`~adaptok.data.tar_samples.read_tar_json`), up to the first that names them.

    Raises:
        ValueError: The shard holds no annotation whose ``json`` names them
            (:func:`~adaptok.data.token_samples.metadata_spec`).
        OSError: The shard cannot be opened.
        tarfile.TarError: The shard is not a readable tar.
    """
    for _, meta in read_tar_json(url):
        if meta is None:
            continue
        try:
            return metadata_spec(meta)
        except InvalidTokenSample:
            continue
    raise ValueError(f"no annotation with readable metadata in shard {url!r}")


class TokenShardsDataModule(ShardDataModule):
    """Token sequences for the AR generator from annotation shards.

    Batches: ``tokens``, ``block_index``, ``block_position``, ``loss_mask``, ``padding_mask``
    (B, S); ``label``, ``budget_level``, ``prefix_length`` (B,) long; ``budget`` (B,) float
    (fraction of M); ``key`` list; ``skipped`` (reason -> samples skipped since the previous
    batch; taken out by :meth:`on_before_batch_transfer`). See
    ``adaptok.nn.generator_sequence`` for the layout.

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

    Raises:
        ValueError: A size or count out of range, or an unknown ``condition``.
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
        super().__init__(
            {"train": train_urls, "val": val_urls, "test": test_urls},
            seed,
            noun="token sample",
            empty_pass_error=False,
            shard_advice="annotate into more shards (AnnotationWriter samples_per_shard)",
        )
        if batch_size < 1 or num_workers < 0 or condition_blocks < 1:
            raise ValueError("batch_size and condition_blocks must be >= 1, num_workers >= 0")
        if epoch_length is not None and epoch_length < 1:
            raise ValueError(f"epoch_length must be >= 1 or None, got {epoch_length}")
        if condition not in ("class", "frame_prediction"):
            raise ValueError(f"condition must be 'class' or 'frame_prediction', got {condition!r}")
        self.save_hyperparameters()
        self.condition, self.condition_blocks = condition, condition_blocks
        self.num_classes, self.budget_levels = num_classes, budget_levels
        self.expected = {
            "num_blocks": num_blocks,
            "tokens_per_block": tokens_per_block,
            "codebook_size": codebook_size,
        }
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.epoch_length, self.shuffle_buffer = epoch_length, shuffle_buffer
        self.spec: TokenSpec | None = None

    # ----------------------------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        """Resolve the shards and fix the token spec (from the first shard where not given).

        Raises:
            FileNotFoundError: A pattern matches nothing.
            ValueError: The first shard contradicts a given size, or a budget level is out of
                range.
        """
        for split in ("train", "val", "test"):
            self._resolve(split)
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

    def _stream(
        self, split: Split, shards: list[str], rank: int, world_size: int, workers: int
    ) -> TokenStream:
        train = split == "train"
        resampled = train and self.epoch_length is not None
        decoder = TokenSampleDecoder(
            self.spec,
            self.condition,
            self.condition_blocks,
            self.budget_levels,
            self.num_classes,
            self.seed,
        )
        return TokenStream(
            shards,
            order="resampled" if resampled else "shuffled" if train else "ordered",
            decoder=decoder,
            draw_per_epoch=train,
            seed=self.seed,
            rank=rank,
            world_size=world_size,
            shuffle_buffer=self.shuffle_buffer if train else 0,
            samples_per_worker=self._samples_per_worker(world_size, workers) if resampled else None,
            split=split,
        )

    def _dataloader(self, split: Split) -> ShardLoader:
        if self.urls[split] is None:
            raise ValueError(f"{split}_urls is not set: no {split} data")
        self.setup()
        pad = GeneratorVocab(self.spec["codebook_size"]).pad
        # Training workers persist from epoch to epoch (not started again for every epoch);
        # each pass still reads its own epoch.
        return self._loader(
            split,
            partial(collate_tokens, pad_id=pad),
            counts_in_batch=True,
            persistent_workers=split == "train",
        )

    def train_dataloader(self) -> ShardLoader:
        """Training sequences: shuffled, a fresh budget draw per sample each epoch."""
        return self._dataloader("train")

    def val_dataloader(self) -> ShardLoader | list:
        """Validation sequences in a fixed order and fixed budgets (none: no ``val_urls``)."""
        return self._dataloader("val") if self.urls["val"] is not None else []

    def test_dataloader(self) -> ShardLoader:
        """Test sequences in a fixed order and fixed budgets."""
        return self._dataloader("test")
