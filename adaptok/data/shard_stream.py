"""The stream under every shard datamodule: shards -> tar samples -> shuffle -> items, per pass.

:class:`ShardStream` is the ``IterableDataset`` run in each DataLoader worker. Its stages are
the same for video clips, annotation windows and token sequences:

1. the shards of this rank and worker for the pass (:meth:`ShardStream.shard_order`: split
   ``rank::world_size`` then ``worker::num_workers``, or drawn with replacement);
2. their samples, grouped by :func:`~adaptok.data.tar_samples.tar_samples` (unreadable shards
   counted, not fatal);
3. an optional shuffle buffer (:meth:`ShardStream.shuffle`);
4. the subclass's decoding (:meth:`ShardStream.pass_decoder`): a raw sample becomes zero or
   more items, or raises :class:`~adaptok.data.skips.SkipSample`, counted by reason;
5. skip reports in band: each item is held until the next one is ready and then carries the
   counts since the item before it (:data:`~adaptok.data.skips.REPORT_KEY`), the last item
   the counts left, so a worker's counts reach the main process without extra batches (a
   worker that produces nothing sends one report-only item); an optional cap of items per
   worker ends a resampled pass.

Every random choice is seeded by ``(seed, epoch, rank, worker)``, so a pass is a pure function
of its epoch number. :class:`ShardLoader` is the DataLoader that sets that epoch before each
pass, hands the skip reports to a :class:`~adaptok.data.skips.SkipLedger`, skips the batches a
resumed run already trained on, and refuses (or reports) a pass without batches.
"""

from __future__ import annotations

import gc
import random
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from adaptok.data.shards import ShardOrder, shards_for_pass
from adaptok.data.skips import REPORT_KEY, REPORT_ONLY_KEY, SkipLedger, SkipSample, SkipTracker
from adaptok.data.tar_samples import tar_samples
from adaptok.data.video_io import VIDEO_SUFFIXES

__all__ = ["Decode", "ShardLoader", "ShardStream", "shuffled", "worker_split"]

Decode = Callable[[dict[str, Any], SkipTracker], Iterable[dict[str, Any]]]
"""One raw sample and the pass's skip tracker -> the items it gives (may raise SkipSample)."""


def worker_split() -> tuple[int, int]:
    """``(worker id, workers)`` of the DataLoader worker running this code (``(0, 1)`` outside)."""
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def shuffled(items: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Shuffle a stream with a buffer of ``size`` items (filled before the first output)."""
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        index = rng.randrange(size)
        buffer[index], item = item, buffer[index]
        yield item
    rng.shuffle(buffer)
    yield from buffer


class ShardStream(IterableDataset):
    """Items of one split for the current epoch (see :meth:`set_epoch`).

    Subclasses implement :meth:`pass_decoder`; they may override :meth:`shard_order` and
    :meth:`shuffle` where their data is read with other seeds. Each output is an item plus
    :data:`~adaptok.data.skips.REPORT_KEY`, a skip report (see the module docstring); a
    worker without items sends its counts in one report-only item.

    Args:
        urls: Resolved shard URLs.
        order: Shard order (``ordered``, ``shuffled`` or ``resampled``).
        seed: Base seed.
        rank: Process rank.
        world_size: Number of processes.
        shuffle_buffer: Samples mixed in the shuffle buffer (0 or 1: none).
        samples_per_worker: Items per worker and pass (required for ``resampled``, which is
            endless otherwise); ``None``: until the shards are exhausted.
        max_consecutive_skips: Failed samples in a row after which a worker stops with
            :class:`~adaptok.data.skips.NoUsableSamplesError` (``None``: never).
        split: Split name (for messages).
        complete: Member suffixes a tar sample needs one of (its video; see
            :func:`~adaptok.data.tar_samples.group_members`); ``None``: any group is a sample.

    Raises:
        ValueError: ``resampled`` without ``samples_per_worker``.
    """

    def __init__(
        self,
        urls: Sequence[str],
        order: ShardOrder,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = 0,
        samples_per_worker: int | None = None,
        max_consecutive_skips: int | None = 100,
        split: str = "train",
        complete: Collection[str] | None = VIDEO_SUFFIXES,
    ) -> None:
        super().__init__()
        if order == "resampled" and samples_per_worker is None:
            raise ValueError("a resampled stream needs samples_per_worker (it is endless)")
        self.urls, self.order = list(urls), order
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.shuffle_buffer, self.samples_per_worker = shuffle_buffer, samples_per_worker
        self.max_consecutive_skips, self.split = max_consecutive_skips, split
        self.complete = None if complete is None else frozenset(complete)
        # In shared memory, so that persistent DataLoader workers (started once, holding
        # their own copy of the stream) read the epoch the main process sets for each pass.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        """The epoch of the pass the next iteration produces."""
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the pass the next iteration produces.

        Set before the pass starts: the value is shared with the DataLoader workers, the
        persistent ones included (they read it when the pass begins).
        """
        self._epoch.fill_(int(epoch))

    # ------------------------------------------------------------------------- the stages
    def shard_order(self, worker: int, num_workers: int) -> Iterator[str]:
        """Shards this rank's ``worker`` reads in this pass (see :func:`shards_for_pass`)."""
        return shards_for_pass(
            self.urls,
            self.order,
            self.seed,
            self.epoch,
            self.rank,
            self.world_size,
            worker,
            num_workers,
        )

    def shuffle(self, samples: Iterator[dict[str, Any]], worker: int) -> Iterator[dict[str, Any]]:
        """Mix ``samples`` in a buffer of ``shuffle_buffer`` (seeded by seed, epoch, rank, worker)."""
        rng = random.Random(f"shuffle/{self.seed}/{self.epoch}/{self.rank}/{worker}")
        return shuffled(samples, self.shuffle_buffer, rng)

    def pass_decoder(self, worker: int) -> Decode:
        """The function that turns raw samples into items for this pass and worker.

        It may keep state for the pass (a generator seeded by the epoch), count notes on the
        tracker, and raise :class:`~adaptok.data.skips.SkipSample` to skip a sample.
        """
        raise NotImplementedError

    # ----------------------------------------------------------------------------- a pass
    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, workers = worker_split()
        tracker = SkipTracker(self.max_consecutive_skips, self.split)
        shards = self.shard_order(worker, workers)
        samples: Iterator[dict[str, Any]] = tar_samples(shards, tracker, self.complete)
        if self.shuffle_buffer > 1:
            samples = self.shuffle(samples, worker)
        decode = self.pass_decoder(worker)
        cap = self.samples_per_worker
        produced, held = 0, None
        for sample in samples:
            url = sample.get("__url__")
            try:
                items = decode(sample, tracker)
            except SkipSample as skip:
                tracker.count(str(skip), url)
                continue
            except Exception as error:  # bad data must never kill a worker
                tracker.count(f"unreadable sample ({type(error).__name__})", url)
                continue
            for item in items:
                tracker.success()
                if held is not None:  # each item is held until the next is ready
                    held[REPORT_KEY] = tracker.drain()
                    yield held
                held = item
                produced += 1
                if cap is not None and produced >= cap:
                    break
            if cap is not None and produced >= cap:
                break
        # The last item takes the counts left; a worker without items reports them alone.
        if held is not None:
            held[REPORT_KEY] = tracker.drain()
            yield held
        elif tracker.has_pending():
            yield {REPORT_ONLY_KEY: True, REPORT_KEY: tracker.drain()}


class ShardLoader(DataLoader):
    """DataLoader over a :class:`ShardStream` that accounts for each pass.

    Before a pass it sets the stream's epoch: ``epoch_fn()`` when that returns a number (the
    trainer's current epoch), else one more than the previous pass. Batches are yielded
    without their skip report, which goes to ``ledger``; report-only batches are swallowed
    unless ``yield_report_only``. A pass that ends without a batch is refused or reported by
    the ledger, which also warns once per pass about the skips unless ``warn_skips`` is off.

    Args:
        dataset: The stream.
        ledger: Main-process skip accounting.
        split: Split name (for messages).
        epoch_fn: Returns the epoch of the pass about to start, or ``None``.
        resume_at: ``(epoch, batches)``: in the first pass of that epoch, the first
            ``batches`` batches are produced and dropped (they were trained on before a
            restart).
        counts_in_batch: Leave the batch's skip counts (reason -> n) under ``skipped`` for
            consumers that read them (the ledger has them all the same).
        yield_report_only: Yield the report-only batches too (marked with
            :data:`~adaptok.data.skips.REPORT_ONLY_KEY`), for a consumer that reads every
            batch's counts (``counts_in_batch``) or whose batch positions must not move (a
            sampler seeded by the batch index). They are not counted as batches: a pass of
            report-only batches is still a pass without batches. Not with ``resume_at``.
        warn_skips: Let the ledger warn once per pass about the skipped samples (off: the
            counts are only added to its totals, for a consumer that reports them itself).
        **kwargs: DataLoader arguments. ``persistent_workers`` may be on: the epoch set
            before each pass is shared with the workers (:meth:`ShardStream.set_epoch`).

    Raises:
        ValueError: ``yield_report_only`` together with ``resume_at``.
    """

    def __init__(
        self,
        dataset: ShardStream,
        ledger: SkipLedger,
        split: str = "train",
        epoch_fn: Callable[[], int | None] | None = None,
        resume_at: tuple[int, int] | None = None,
        counts_in_batch: bool = False,
        yield_report_only: bool = False,
        warn_skips: bool = True,
        **kwargs: Any,
    ) -> None:
        if yield_report_only and resume_at is not None:
            raise ValueError(
                "yield_report_only cannot resume a pass (resume_at): the skipped "
                "batches would include report-only ones"
            )
        super().__init__(dataset, **kwargs)
        self.ledger, self.split, self.epoch_fn, self.resume_at = ledger, split, epoch_fn, resume_at
        self.counts_in_batch, self.yield_report_only = counts_in_batch, yield_report_only
        self.warn_skips = warn_skips
        self.next_epoch = resume_at[0] if resume_at is not None else 0

    def __iter__(self) -> Iterator[Any]:
        epoch = self.epoch_fn() if self.epoch_fn is not None else None
        epoch = self.next_epoch if epoch is None else int(epoch)
        self.next_epoch = epoch + 1
        self.dataset.set_epoch(epoch)
        drop = 0
        if self.resume_at is not None and self.resume_at[0] == epoch:
            drop = self.resume_at[1]
        self.resume_at = None
        batches, finished = 0, False
        # Workers are forked here. Objects the parent holds (decoded frames with FFmpeg
        # thread pools among them) must not be garbage-collected in a child, where their
        # threads do not exist: freezing moves them out of the collector's reach there.
        forking = self.num_workers > 0
        if forking:
            gc.freeze()
        try:
            batches_of_pass = super().__iter__()
        finally:
            if forking:
                gc.unfreeze()
        try:
            for batch in batches_of_pass:
                report = batch.pop(REPORT_KEY, None)
                self.ledger.add(self.split, epoch, report, warn=self.warn_skips)
                if self.counts_in_batch:
                    batch[REPORT_KEY] = dict((report or {}).get("skipped", {}))
                if batch.get(REPORT_ONLY_KEY):
                    if self.yield_report_only:
                        yield batch
                    continue
                batches += 1
                if batches <= drop:
                    continue
                yield batch
            finished = True
        finally:
            if not finished:
                self.ledger.finish_pass(self.split, epoch, None, warn=self.warn_skips)
        self.ledger.finish_pass(self.split, epoch, batches, warn=self.warn_skips)
