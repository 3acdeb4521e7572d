"""What the training datamodules share: shards per split, ranks, epochs, skips, resume state.

:class:`ShardDataModule` wires a :class:`~adaptok.data.shard_stream.ShardStream` to Lightning.
A subclass builds the stream of a split (:meth:`ShardDataModule._stream`); this base resolves
the split's shards, clamps the workers to the shards of a rank, hands the stream to a
:class:`~adaptok.data.shard_stream.ShardLoader` with the trainer's epoch, accounts skipped
samples in one :class:`~adaptok.data.skips.SkipLedger` (totals in ``skip_counts``, one
warning per pass), and keeps the resume state.

Resume: :meth:`ShardDataModule.state_dict` (saved in every checkpoint) holds the epoch and the
number of training batches consumed in it; every random choice of a pass is seeded by its
epoch, so a run restarted with ``--ckpt_path`` continues the data stream where it stopped
instead of replaying the first epoch.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from lightning.pytorch import LightningDataModule

from adaptok.data.shard_stream import ShardLoader, ShardStream
from adaptok.data.shards import SPLIT_NAMES, resolve_shards
from adaptok.data.skips import REPORT_KEY, SkipLedger
from adaptok.distributed import rank_and_world_size

__all__ = ["ShardDataModule", "Split", "rank_workers"]

Split = Literal["train", "val", "test", "predict"]
_STATE_VERSION = 1


def rank_workers(requested: int, shards: Sequence[str], rank: int, world_size: int) -> int:
    """DataLoader workers that read a rank's share of ``shards`` whole.

    The shards are split ``rank::world_size`` and then between the workers, so a worker
    beyond the rank's shard count would read nothing: the request is capped there.

    Args:
        requested: Workers asked for.
        shards: Every shard of the split (all ranks).
        rank: This process's rank.
        world_size: Number of ranks.

    Returns:
        ``requested``, at most the number of this rank's shards (0 for a rank without any).
    """
    return min(requested, len(shards[rank::world_size]))


class ShardDataModule(LightningDataModule):
    """Base of the datamodules that read one :class:`ShardStream` per split.

    Subclasses call ``super().__init__`` first and implement :meth:`_stream`.

    Args:
        urls: Shard specifications per split (``None``: no such split).
        seed: Seed of every random choice of the streams.
        noun: What a sample is called in skip warnings.
        empty_pass_error: A pass without a batch raises
            :class:`~adaptok.data.skips.NoUsableSamplesError` (off: it is reported).
        shard_advice: How to get more shards, said when a rank would get none.
    """

    def __init__(
        self,
        urls: dict[str, Any],
        seed: int,
        noun: str = "sample",
        empty_pass_error: bool = True,
        shard_advice: str = "write smaller shards (adaptok-shards --shard-samples)",
    ) -> None:
        super().__init__()
        self.urls: dict[str, Any] = {split: urls.get(split) for split in ("train", "val", "test")}
        self.urls["predict"] = urls.get("predict")
        self.seed = seed
        self.shard_advice = shard_advice
        self.shards: dict[str, list[str]] = {}
        self.skip_counts: Counter = Counter()
        self.ledger = SkipLedger(self.skip_counts, noun=noun, empty_pass_error=empty_pass_error)
        self._train_position = (0, 0)  # (epoch, training batches consumed in it)
        self._resume_at: tuple[int, int] | None = None

    # --------------------------------------------------------------------------- shards
    def _resolve(self, split: str) -> None:
        """Resolve ``split``'s shards once (errors name the pattern or file)."""
        if self.urls[split] is not None and split not in self.shards:
            self.shards[split] = resolve_shards(
                self.urls[split], f"{split}_urls", split if split in SPLIT_NAMES else None
            )

    def _shards_of(self, split: Split) -> list[str]:
        if self.urls[split] is None:
            raise ValueError(f"{split}_urls is not set: no {split} data")
        self._resolve(split)
        return self.shards[split]

    def _trainer_epoch(self) -> int | None:
        """The fit epoch under way, when a trainer is fitting; else ``None``."""
        trainer = self.trainer
        if trainer is None or trainer.state.fn is None or trainer.state.fn.value != "fit":
            return None
        return int(trainer.current_epoch)

    def _workers(self, split: str, shards: list[str], rank: int, world_size: int) -> int:
        """DataLoader workers for a split read whole: at most the shards of this rank.

        Raises:
            ValueError: This rank gets no shard.
        """
        if not shards[rank::world_size]:
            raise ValueError(
                f"{split}: {len(shards)} shard(s) cannot be split over {world_size} ranks; "
                f"{self.shard_advice}"
            )
        workers = rank_workers(self.num_workers, shards, rank, world_size)
        if workers < self.num_workers:
            warnings.warn(
                f"{split}: num_workers={self.num_workers} > {workers} shard(s) on this rank; "
                f"using {workers} worker(s) (extra workers would get no shard)",
                stacklevel=3,
            )
        return workers

    # --------------------------------------------------------------------------- loaders
    def _stream(
        self, split: Split, shards: list[str], rank: int, world_size: int, workers: int
    ) -> ShardStream:
        """The stream of ``split`` on this rank for ``workers`` DataLoader workers."""
        raise NotImplementedError

    def _loader(
        self,
        split: Split,
        collate_fn: Callable[[list], Any],
        counts_in_batch: bool = False,
        persistent_workers: bool = False,
        yield_report_only: bool = False,
        warn_skips: bool = True,
    ) -> ShardLoader:
        """A :class:`ShardLoader` of ``split`` (the training one resumes a checkpoint's pass).

        Reads whole passes of the split's shards (clamping the workers to this rank's
        shards) unless the subclass's stream is resampled (``epoch_length``).
        ``counts_in_batch``, ``yield_report_only`` and ``warn_skips``: see
        :class:`ShardLoader` (a loader without warnings stays quiet in :meth:`teardown`
        too, for a pass cut short). ``persistent_workers``: keep the DataLoader workers
        from one pass to the next (where there are workers); each pass still reads its own
        epoch (:meth:`ShardStream.set_epoch`).
        """
        shards = self._shards_of(split)
        rank, world_size = rank_and_world_size(self.trainer)
        train = split == "train"
        resampled = train and getattr(self, "epoch_length", None) is not None
        workers = self.num_workers if resampled else self._workers(split, shards, rank, world_size)
        stream = self._stream(split, shards, rank, world_size, workers)
        resume_at = None
        if train:
            resume_at, self._resume_at = self._resume_at, None
        return ShardLoader(
            stream,
            ledger=self.ledger,
            split=split,
            epoch_fn=self._trainer_epoch if train else None,
            resume_at=resume_at,
            counts_in_batch=counts_in_batch,
            yield_report_only=yield_report_only,
            warn_skips=warn_skips,
            batch_size=self.batch_size,
            num_workers=workers,
            pin_memory=self.pin_memory,
            collate_fn=collate_fn,
            persistent_workers=persistent_workers and workers > 0,
        )

    @contextlib.contextmanager
    def private_loaders(self) -> Iterator[None]:
        """Loaders made inside this block read off the books (e.g. a statistics pass).

        They account their skips in a private :class:`SkipLedger` (not ``skip_counts``),
        leave the resume state of a restored checkpoint to the training loader, and read in
        the main process (no DataLoader workers are forked). Used by
        ``modules.scorer.ScorerModule`` to estimate its label normalisation before training.
        """
        saved = (self.ledger, self._resume_at, self.num_workers)
        self.ledger = SkipLedger(noun=self.ledger.noun, empty_pass_error=False)
        self._resume_at, self.num_workers = None, 0
        try:
            yield
        finally:
            self.ledger, self._resume_at, self.num_workers = saved

    def _samples_per_worker(self, world_size: int, workers: int) -> int:
        """Items per worker and pass of a resampled stream (``epoch_length`` over all ranks).

        Rounded up to whole batches, so every rank gets the same number of batches.
        """
        batches = self.epoch_length / (world_size * max(workers, 1) * self.batch_size)
        return math.ceil(batches) * self.batch_size

    # ---------------------------------------------------------------------- batch hooks
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Count consumed training batches (the resume position); drop any leftover report."""
        if isinstance(batch, dict):
            batch.pop(REPORT_KEY, None)
        epoch = self._trainer_epoch()
        if epoch is not None and self.trainer.training:
            last_epoch, consumed = self._train_position
            self._train_position = (epoch, consumed + 1 if last_epoch == epoch else 1)
        return batch

    def teardown(self, stage: str) -> None:
        """Report skips of passes not yet reported."""
        self.ledger.flush()

    # ---------------------------------------------------------------------- resume state
    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: the training epoch, batches consumed in it, and seed."""
        epoch, consumed = self._train_position
        return {"version": _STATE_VERSION, "epoch": epoch, "batches": consumed, "seed": self.seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue the training stream after the batches the checkpoint already used.

        The next training loader starts at the saved epoch (its order and random choices are
        those of that epoch) and drops the batches consumed before the checkpoint.
        """
        if not state_dict:
            return
        if state_dict.get("seed", self.seed) != self.seed:
            warnings.warn(
                f"data seed changed from {state_dict['seed']} (checkpoint) to {self.seed}: the "
                "resumed run reads the data in a different order",
                stacklevel=2,
            )
        epoch, consumed = int(state_dict.get("epoch", 0)), int(state_dict.get("batches", 0))
        self._train_position = (epoch, consumed)
        self._resume_at = (epoch, consumed)
