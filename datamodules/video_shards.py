"""The one LightningDataModule of every stage: video clips from WebDataset tar shards.

Pipeline per split (each box runs in the DataLoader workers)::

    shard list -> [rank split -> worker split] -> tar samples -> [shuffle buffer] -> ClipDecoder
      train with ``epoch_length``: resampled shards (with replacement) + ``with_epoch``

Bad data never stops a run: unreadable shards, corrupt or truncated videos and clips shorter
than ``num_frames`` are skipped and counted by reason. Each sample carries the counts of what
was skipped since the previous sample; the counts travel through the batch (``"skipped"``), are
taken out in :meth:`VideoShardsDataModule.on_before_batch_transfer` and reported once per pass
as a single warning in the main process. Totals are in ``datamodule.skip_counts``.
"""

from __future__ import annotations

import glob
import json
import math
import os
import random
import tarfile
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import webdataset as wds
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from adaptok.data.video_io import (
    VIDEO_SUFFIXES,
    VideoDecodeError,
    decode_video,
    probe_video,
    short_side_shape,
)

__all__ = [
    "ClipDecoder",
    "SkippedSamplesWarning",
    "VideoShardsDataModule",
    "collate_clips",
    "resolve_shards",
]

Split = Literal["train", "val", "test", "predict"]
_REMOTE_PREFIXES = ("pipe:", "http://", "https://", "s3://", "gs://", "gcs://", "ais://")


class SkippedSamplesWarning(UserWarning):
    """Samples were skipped during a pass over the data (corrupt, truncated, too short)."""


def _is_remote(url: str) -> bool:
    return url.startswith(_REMOTE_PREFIXES) or ("://" in url and not url.startswith("file://"))


def _local_matches(pattern: str, origin: str) -> list[str]:
    """Local tar files for one expanded pattern; raises a clear error when there are none."""
    path = Path(pattern.removeprefix("file://")).expanduser()
    if path.is_dir():
        found = sorted(str(p) for p in path.rglob("*.tar"))
        if not found:
            raise FileNotFoundError(f"no .tar shards under folder {str(path)!r} (from {origin!r})")
        return found
    if glob.has_magic(str(path)):
        found = sorted(glob.glob(str(path), recursive=True))
        if not found:
            folder = next((p for p in path.parents if not glob.has_magic(str(p))), Path("."))
            where = "" if folder.is_dir() else f"; folder {str(folder)!r} does not exist"
            raise FileNotFoundError(f"no shards match {origin!r}{where}")
        return found
    if not path.exists():
        where = "" if path.parent.is_dir() else f"; folder {str(path.parent)!r} does not exist"
        raise FileNotFoundError(f"shard {str(path)!r} not found (from {origin!r}){where}")
    return [str(path)]


def resolve_shards(urls: str | Sequence[str]) -> list[str]:
    """Expand shard specifications into a list of shard URLs, checking local files now.

    Brace patterns (``train-{000000..000009}.tar``) are expanded everywhere; local globs and
    folders (searched recursively for ``*.tar``) are expanded and every local file must be a
    tar archive. Remote URLs (``pipe:``, ``http(s)://``, ...) are passed through unchecked.

    Args:
        urls: One specification or a list of them.

    Returns:
        Shard URLs, each pattern's matches sorted, in the given pattern order.

    Raises:
        FileNotFoundError: A pattern matches nothing, or its folder does not exist.
        ValueError: A local file is not a tar archive.
    """
    specs = [urls] if isinstance(urls, str) else list(urls)
    if not specs:
        raise ValueError("empty list of shard URLs")
    shards: list[str] = []
    for spec in specs:
        for url in wds.shardlists.expand_urls(spec):
            if _is_remote(url):
                shards.append(url)
                continue
            for path in _local_matches(url, spec):
                if not tarfile.is_tarfile(path):
                    raise ValueError(f"{path!r} (from {spec!r}) is not a tar archive")
                shards.append(path)
    return shards


class _SkipTracker:
    """Counts skipped items by reason; also the WebDataset exception handler for bad shards."""

    def __init__(self) -> None:
        self.pending: Counter = Counter()

    def count(self, reason: str) -> None:
        """Record one skipped item."""
        self.pending[reason] += 1

    def __call__(self, error: Exception) -> bool:
        """WebDataset handler: count the error and carry on with the next shard."""
        self.count(f"unreadable shard ({type(error).__name__})")
        return True

    def drain(self) -> dict[str, int]:
        """Counts since the last drain (then reset)."""
        counts, self.pending = dict(self.pending), Counter()
        return counts


class _ShuffledShards(IterableDataset):
    """Shard URLs in a fresh seeded order each pass (the same order on every rank/worker)."""

    def __init__(self, urls: list[str], seed: int) -> None:
        super().__init__()
        self.urls, self.seed, self.epoch = urls, seed, 0

    def __iter__(self) -> Iterator[dict[str, str]]:
        urls = list(self.urls)
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(urls)
        self.epoch += 1
        for url in urls:
            yield {"url": url}


def _split_by_rank(src: Iterator[Any], rank: int, world_size: int) -> Iterator[Any]:
    """Every ``world_size``-th item starting at ``rank``."""
    yield from islice(src, rank, None, world_size)


def _resample_seed(rank: int) -> int:
    info = get_worker_info()
    return rank * 1000 + (info.id if info is not None else 0)


class _SkipSample(Exception):
    """A sample that is skipped, with the reason it is counted under."""


class ClipDecoder:
    """Pipeline stage: raw WebDataset samples -> clip dicts (skips bad samples, counts them).

    Output samples: ``video`` ``(C, T, H, W)`` uint8 numpy (made float once per batch by
    :func:`collate_clips`); ``label`` int; ``key`` str; ``complexity`` ``(T,)`` float (NaN when
    the source has none); ``skipped`` dict of reason -> count since the previous output sample. Each output is held back until
    the next one is decoded (or the stream ends), so skips at the end of a stream still reach
    the main process.

    Args:
        num_frames: Frames per clip ``T``.
        frame_stride: Step between sampled frames.
        sampling: ``random`` start, ``first`` frames, or ``uniform`` (``T`` frames evenly
            spread over the whole clip; ``frame_stride`` unused).
        resolution: Short side after resizing, and the side of the square crop.
        crop: ``center`` or ``random`` crop.
        hflip: Flip horizontally with probability 0.5.
        tracker: Shared skip counter.
        seed: Base seed of the random choices.
        rank: Process rank (part of the seed).
    """

    def __init__(
        self,
        num_frames: int,
        frame_stride: int,
        sampling: str,
        resolution: int,
        crop: str,
        hflip: bool,
        tracker: _SkipTracker,
        seed: int,
        rank: int,
    ) -> None:
        self.num_frames, self.frame_stride, self.sampling = num_frames, frame_stride, sampling
        self.resolution, self.crop, self.hflip = resolution, crop, hflip
        self.tracker = tracker
        self.seed, self.rank, self.epoch = seed, rank, 0

    def _indices(self, total: int, rng: np.random.Generator) -> np.ndarray:
        if self.sampling == "uniform":
            if total < self.num_frames:
                raise _SkipSample("too short")
            return np.linspace(0, total - 1, self.num_frames).round().astype(int)
        span = (self.num_frames - 1) * self.frame_stride + 1
        if total < span:
            raise _SkipSample("too short")
        start = int(rng.integers(0, total - span + 1)) if self.sampling == "random" else 0
        return start + self.frame_stride * np.arange(self.num_frames)

    def _decode(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        video = next((sample[s] for s in VIDEO_SUFFIXES if s in sample), None)
        if video is None:
            raise _SkipSample("missing video")
        try:
            meta = json.loads(sample["json"]) if "json" in sample else {}
        except (ValueError, UnicodeDecodeError) as error:
            raise _SkipSample("bad metadata") from error
        try:
            if not {"frames", "height", "width"} <= set(meta):
                info = probe_video(video)
                meta = {"frames": info.frames, "height": info.height, "width": info.width, **meta}
            indices = self._indices(int(meta["frames"]), rng)
            stored = (int(meta["height"]), int(meta["width"]))
            height, width = short_side_shape(*stored, self.resolution)
            resize = (height, width) if (height, width) != stored else None
            frames = decode_video(video, indices, output_size=resize)
        except VideoDecodeError as error:
            raise _SkipSample("corrupt video") from error
        top, left = (height - self.resolution) // 2, (width - self.resolution) // 2
        if self.crop == "random":
            top = int(rng.integers(0, height - self.resolution + 1))
            left = int(rng.integers(0, width - self.resolution + 1))
        frames = frames[:, top : top + self.resolution, left : left + self.resolution]
        if self.hflip and rng.random() < 0.5:
            frames = frames[:, :, ::-1]
        video = np.ascontiguousarray(frames.transpose(3, 0, 1, 2))
        scores = meta.get("frame_complexity")
        complexity = torch.full((self.num_frames,), float("nan"))
        if isinstance(scores, list) and len(scores) > int(indices[-1]):
            complexity = torch.tensor([float(scores[i]) for i in indices])
        return {
            "video": video,
            "label": int(meta.get("label", -1)),
            "key": str(sample["__key__"]),
            "complexity": complexity,
        }

    def __call__(self, samples: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, self.rank, worker, self.epoch])
        self.epoch += 1
        held: dict[str, Any] | None = None
        for sample in samples:
            try:
                clip = self._decode(sample, rng)
            except _SkipSample as skip:
                self.tracker.count(str(skip))
                continue
            except Exception as error:  # bad data must never kill a worker
                self.tracker.count(f"unreadable sample ({type(error).__name__})")
                continue
            if held is not None:
                held["skipped"] = self.tracker.drain()
                yield held
            held = clip
        if held is not None:
            held["skipped"] = self.tracker.drain()
            yield held


def collate_clips(
    samples: list[dict[str, Any]], value_range: tuple[float, float] = (0.0, 1.0)
) -> dict[str, Any]:
    """Batch clip dicts (in the worker): ``video`` (B, C, T, H, W) float in ``value_range``,
    ``label`` (B,) long, ``key`` list, ``complexity`` (B, T) and the summed ``skipped`` counts.
    """
    skipped: Counter = Counter()
    for sample in samples:
        skipped.update(sample["skipped"])
    low, high = value_range
    # numpy, single-threaded: torch's intra-op threads made this 10x slower on a busy 2-core box
    video = np.stack([s["video"] for s in samples]).astype(np.float32)
    video *= np.float32((high - low) / 255.0)
    if low:
        video += np.float32(low)
    return {
        "video": torch.from_numpy(video),
        "label": torch.tensor([s["label"] for s in samples], dtype=torch.long),
        "key": [s["key"] for s in samples],
        "complexity": torch.stack([s["complexity"] for s in samples]),
        "skipped": dict(skipped),
    }


class VideoShardsDataModule(LightningDataModule):
    """Video clips from WebDataset shards for training, validation, test and prediction.

    Batches are dicts: ``video`` (B, C, T, H, W) float in ``value_range``; ``label`` (B,) long
    (-1 when unknown); ``key`` list[str]; ``complexity`` (B, T) float per-frame content
    complexity of the sampled frames (NaN when the shards carry none).

    Args:
        train_urls: Training shards: glob, brace pattern, folder, local path or any URL
            WebDataset opens (``pipe:``, ``http://``), or a list of those.
        val_urls: Validation shards (same forms); ``None`` trains without validation.
        test_urls: Test shards.
        predict_urls: Prediction shards.
        num_frames: Frames per clip ``T``.
        frame_stride: Step between sampled frames.
        clip_sampling: Training clip choice: ``random`` start, ``first`` frames, or
            ``uniform`` over the whole clip. Evaluation always takes the first frames.
        resolution: Short side after resizing and side of the square crop ``H = W``.
        crop: Training crop, ``center`` or ``random``; evaluation always crops the center.
        hflip: Random horizontal flips in training.
        value_range: Pixel value range of ``video``.
        batch_size: Clips per batch.
        num_workers: DataLoader workers (clamped to the number of shards of a rank when the
            shards are split between workers).
        pin_memory: Pin batches in page-locked memory.
        epoch_length: Training samples per epoch over all ranks: shards are then drawn with
            replacement (an endless stream cut into epochs; every rank gets the same number of
            batches, which DDP needs). ``None``: one pass over the shuffled shards per epoch.
        shuffle_buffer: Training samples mixed in a shuffle buffer (0 or 1: no shuffling).
        seed: Seed of shard order, shuffle buffer, clip starts, crops and flips.
    """

    def __init__(
        self,
        train_urls: str | list[str] | None = None,
        val_urls: str | list[str] | None = None,
        test_urls: str | list[str] | None = None,
        predict_urls: str | list[str] | None = None,
        num_frames: int = 16,
        frame_stride: int = 1,
        clip_sampling: Literal["random", "first", "uniform"] = "random",
        resolution: int = 128,
        crop: Literal["center", "random"] = "random",
        hflip: bool = False,
        value_range: tuple[float, float] = (0.0, 1.0),
        batch_size: int = 8,
        num_workers: int = 2,
        pin_memory: bool = False,
        epoch_length: int | None = None,
        shuffle_buffer: int = 256,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_frames < 1 or frame_stride < 1 or resolution < 1 or batch_size < 1:
            raise ValueError("num_frames, frame_stride, resolution and batch_size must be >= 1")
        if epoch_length is not None and epoch_length < 1:
            raise ValueError(f"epoch_length must be >= 1 or None, got {epoch_length}")
        self.save_hyperparameters()
        self.urls: dict[str, str | list[str] | None] = {
            "train": train_urls,
            "val": val_urls,
            "test": test_urls,
            "predict": predict_urls,
        }
        self.num_frames = num_frames
        self.frame_stride = frame_stride
        self.clip_sampling = clip_sampling
        self.resolution = resolution
        self.crop = crop
        self.hflip = hflip
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.epoch_length = epoch_length
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.shards: dict[str, list[str]] = {}
        self.skip_counts: Counter = Counter()
        self._pending_skips: dict[tuple[str, int], Counter] = {}

    # ----------------------------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        """Resolve and check the shards the stage needs (errors name the pattern or file)."""
        needed = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("predict",),
        }.get(stage or "", ("train", "val", "test", "predict"))
        for split in needed:
            if self.urls[split] is not None and split not in self.shards:
                self.shards[split] = resolve_shards(self.urls[split])

    def _rank_and_world_size(self) -> tuple[int, int]:
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))

    def _shards_of(self, split: Split) -> list[str]:
        if self.urls[split] is None:
            raise ValueError(f"{split}_urls is not set: no {split} data")
        if split not in self.shards:
            self.shards[split] = resolve_shards(self.urls[split])
        return self.shards[split]

    def _dataloader(self, split: Split) -> DataLoader:
        shards = self._shards_of(split)
        rank, world_size = self._rank_and_world_size()
        train = split == "train"
        resampled = train and self.epoch_length is not None
        workers = self.num_workers
        if not resampled:
            own = len(shards[rank::world_size])
            if own == 0:
                raise ValueError(
                    f"{split}: {len(shards)} shard(s) cannot be split over {world_size} ranks; "
                    "write smaller shards (adaptok-shards --shard-samples)"
                )
            if workers > own:
                warnings.warn(
                    f"{split}: num_workers={workers} > {own} shard(s) on this rank; "
                    f"using {own} worker(s) (extra workers would get no shard)",
                    stacklevel=2,
                )
                workers = own

        tracker = _SkipTracker()
        stages: list[Any]
        if resampled:
            stages = [
                wds.ResampledShards(
                    shards,
                    seed=self.seed,
                    worker_seed=partial(_resample_seed, rank),
                    deterministic=True,
                )
            ]
        else:
            first = _ShuffledShards(shards, self.seed) if train else wds.SimpleShardList(shards)
            stages = [
                first,
                partial(_split_by_rank, rank=rank, world_size=world_size),
                wds.split_by_worker,
            ]
        stages.append(wds.tarfile_to_samples(handler=tracker))
        if train and self.shuffle_buffer > 1:
            rng = random.Random(self.seed * 7919 + rank)
            stages.append(wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng))
        stages.append(
            ClipDecoder(
                num_frames=self.num_frames,
                frame_stride=self.frame_stride,
                sampling=self.clip_sampling if train else "first",
                resolution=self.resolution,
                crop=self.crop if train else "center",
                hflip=self.hflip and train,
                tracker=tracker,
                seed=self.seed,
                rank=rank,
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
            collate_fn=partial(collate_clips, value_range=self.value_range),
            persistent_workers=train and workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Training clips: random (or configured) sampling, crops and flips."""
        return self._dataloader("train")

    def val_dataloader(self) -> DataLoader | list:
        """Validation clips in a fixed order: first frames, center crop (none: no ``val_urls``)."""
        return self._dataloader("val") if self.urls["val"] is not None else []

    def test_dataloader(self) -> DataLoader:
        """Test clips in a fixed order: first frames, center crop."""
        return self._dataloader("test")

    def predict_dataloader(self) -> DataLoader:
        """Prediction clips in a fixed order: first frames, center crop."""
        return self._dataloader("predict")

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
            same_train_epoch = other[0] == "train" and other[1] == current[1]
            if other != current and not same_train_epoch:
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
            f"skipped {sum(counts.values())} sample(s) in {stage} epoch {epoch} ({reasons})",
            SkippedSamplesWarning,
            stacklevel=2,
        )

    def teardown(self, stage: str) -> None:
        """Report skips of passes not yet reported."""
        for pass_key in list(self._pending_skips):
            self._report_skips(pass_key)
