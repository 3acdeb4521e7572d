"""The clip stream of one split: shards -> tar samples -> shuffle buffer -> clips, per epoch.

:class:`ClipStream` is the ``IterableDataset`` run in each DataLoader worker; every random
choice (shard order, shuffle buffer, clip start, crop, flip) is seeded by ``(seed, epoch,
rank, worker)``, so a pass is a pure function of its epoch number. :class:`ClipLoader` is the
DataLoader that sets that epoch before each pass, takes the skip reports out of the batches,
skips the batches a resumed run already trained on, and refuses a pass without batches.
"""

from __future__ import annotations

import gc
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from adaptok.data.clips import ClipDecoder, SkipSample
from adaptok.data.shards import ShardOrder, shards_for_pass
from adaptok.data.skips import REPORT_KEY, REPORT_ONLY_KEY, SkipLedger, SkipTracker
from adaptok.data.tar_samples import tar_samples

__all__ = ["ClipLoader", "ClipStream", "shuffled"]


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


class ClipStream(IterableDataset):
    """Clips of one split for the current epoch (see :meth:`set_epoch`).

    Each output is a :class:`~adaptok.data.clips.ClipDecoder` clip plus ``skipped``: the skip
    report since the previous output. When skips are left after the last clip of a worker,
    a report-only item ends the stream so the counts still reach the main process.

    Args:
        urls: Resolved shard URLs.
        order: Shard order (``ordered`` for evaluation, ``shuffled`` or ``resampled``).
        decoder: Turns samples into clips.
        seed: Base seed.
        rank: Process rank.
        world_size: Number of processes.
        shuffle_buffer: Samples mixed in the shuffle buffer (0 or 1: none).
        samples_per_worker: Clips per worker and pass (required for ``resampled``, which is
            endless otherwise); ``None``: until the shards are exhausted.
        max_consecutive_skips: Failed samples in a row after which a worker stops with
            :class:`~adaptok.data.skips.NoUsableSamplesError` (``None``: never).
        max_upscale: Clips whose short side is enlarged more than this factor are counted
            as a warning (``upscaled more than ...``).
        split: Split name (for messages).
    """

    def __init__(
        self,
        urls: Sequence[str],
        order: ShardOrder,
        decoder: ClipDecoder,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = 0,
        samples_per_worker: int | None = None,
        max_consecutive_skips: int | None = 100,
        max_upscale: float = 2.0,
        split: str = "train",
    ) -> None:
        super().__init__()
        if order == "resampled" and samples_per_worker is None:
            raise ValueError("a resampled stream needs samples_per_worker (it is endless)")
        self.urls, self.order, self.decoder = list(urls), order, decoder
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.shuffle_buffer, self.samples_per_worker = shuffle_buffer, samples_per_worker
        self.max_consecutive_skips, self.max_upscale = max_consecutive_skips, max_upscale
        self.split = split
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the pass the next iteration produces (set before workers start)."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        tracker = SkipTracker(self.max_consecutive_skips, self.split)
        shards = shards_for_pass(
            self.urls,
            self.order,
            self.seed,
            self.epoch,
            self.rank,
            self.world_size,
            worker,
            workers,
        )
        samples: Iterator[dict[str, Any]] = tar_samples(shards, tracker)
        if self.shuffle_buffer > 1:
            rng = random.Random(f"shuffle/{self.seed}/{self.epoch}/{self.rank}/{worker}")
            samples = shuffled(samples, self.shuffle_buffer, rng)
        clip_rng = np.random.default_rng([self.seed, self.rank, worker, self.epoch])
        produced = 0
        for sample in samples:
            url = sample.get("__url__")
            try:
                clip = self.decoder(sample, clip_rng)
            except SkipSample as skip:
                tracker.count(str(skip), url)
                continue
            except Exception as error:  # bad data must never kill a worker
                tracker.count(f"unreadable sample ({type(error).__name__})", url)
                continue
            tracker.success()
            if clip.pop("upscale") > self.max_upscale:
                tracker.note(f"upscaled more than {self.max_upscale:g}x")
            for note in clip.pop("notes", ()):
                tracker.note(note)
            clip[REPORT_KEY] = tracker.drain()
            yield clip
            produced += 1
            if self.samples_per_worker is not None and produced >= self.samples_per_worker:
                break
        if tracker.has_pending():
            yield {REPORT_ONLY_KEY: True, REPORT_KEY: tracker.drain()}


class ClipLoader(DataLoader):
    """DataLoader over a :class:`ClipStream` that accounts for each pass.

    Before a pass it sets the stream's epoch: ``epoch_fn()`` when that returns a number (the
    trainer's current epoch), else one more than the previous pass. Batches are yielded
    without their skip report, which goes to ``ledger``; report-only batches are swallowed.
    A pass that ends without a batch raises
    :class:`~adaptok.data.skips.NoUsableSamplesError`.

    Args:
        dataset: The stream.
        ledger: Main-process skip accounting.
        split: Split name (for messages).
        epoch_fn: Returns the epoch of the pass about to start, or ``None``.
        resume_at: ``(epoch, batches)``: in the first pass of that epoch, the first
            ``batches`` batches are produced and dropped (they were trained on before a
            restart).
        **kwargs: DataLoader arguments.
    """

    def __init__(
        self,
        dataset: ClipStream,
        ledger: SkipLedger,
        split: str = "train",
        epoch_fn: Callable[[], int | None] | None = None,
        resume_at: tuple[int, int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(dataset, **kwargs)
        self.ledger, self.split, self.epoch_fn, self.resume_at = ledger, split, epoch_fn, resume_at
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
                self.ledger.add(self.split, epoch, batch.pop(REPORT_KEY, None))
                if batch.get(REPORT_ONLY_KEY):
                    continue
                batches += 1
                if batches <= drop:
                    continue
                yield batch
            finished = True
        finally:
            if not finished:
                self.ledger.finish_pass(self.split, epoch, None)
        self.ledger.finish_pass(self.split, epoch, batches)
