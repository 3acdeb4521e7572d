"""Every window of every video, in a fixed order: the input of token annotation.

``VideoShardsDataModule`` draws one random (or first) clip per video; the annotation stage
(docs/METHOD.md section 5.4) needs EVERY ``num_frames``-frame window at a given stride. This
datamodule reads the same WebDataset video shards and yields, per window::

    {"video": (C, T, H, W) uint8 (float in [0, 1] once batched), "key": str, "label": int,
     "class_name": str, "window_start": int (frame index in the source video)}

Windows are deterministic (short side resized to ``resolution``, center crop, no flip, as the
reference annotates) and each video is decoded once for all its windows. Shards are split
between ranks (``rank::world_size``) and then between DataLoader workers, so every window is
produced exactly once over the whole job. Keys handed to :meth:`VideoWindowsDataModule.exclude_keys`
(windows a previous, interrupted run has already written) are not decoded again.

The windows come from the shared :class:`~adaptok.data.shard_stream.ShardStream` (one ordered
pass; tar grouping, shard split and skip reports as for the clip and token streams). Bad data
is skipped and counted by reason (corrupt video, too short, bad metadata); the counts travel
in each batch under ``"skipped"``.
"""

from __future__ import annotations

import json
import tarfile
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from adaptok.data.shard_stream import Decode, ShardStream
from adaptok.data.shards import resolve_shards
from adaptok.data.skips import REPORT_KEY, SkipSample, SkipTracker, merge_reports
from adaptok.data.tar_samples import PROBLEM_KEY
from adaptok.data.video_io import (
    VIDEO_SUFFIXES,
    VideoDecodeError,
    VideoTruncatedError,
    decode_video,
    probe_video,
    short_side_shape,
    stored_stream,
)
from adaptok.data.writer import sanitize_key
from adaptok.distributed import rank_and_world_size

__all__ = [
    "VideoWindowsDataModule",
    "VideoWindowsDataset",
    "collate_windows",
    "window_key",
    "window_starts",
]


def window_key(source_key: str, start: int) -> str:
    """Key of the window starting at frame ``start`` of ``source_key``: ``<key>_w<start:05d>``.

    The source key is sanitised like the video shards' keys (letters, digits, ``_``, ``-``).
    """
    return f"{sanitize_key(source_key)}_w{int(start):05d}"


def window_starts(
    total_frames: int, num_frames: int, stride: int, frame_stride: int = 1
) -> list[int]:
    """First frame of every window ``start, start + frame_stride, ...`` that fits the video.

    Args:
        total_frames: Frames in the source video.
        num_frames: Frames per window ``T``.
        stride: Frames between consecutive window starts (>= 1).
        frame_stride: Step between the frames of one window (>= 1).

    Returns:
        ``[0, stride, 2 * stride, ...]`` up to the last start whose window fits; empty when
        the video is shorter than one window.
    """
    span = (num_frames - 1) * frame_stride + 1
    if total_frames < span:
        return []
    return list(range(0, total_frames - span + 1, stride))


@dataclass
class _DecodedVideo:
    """The decoded, resized and cropped frames of one source video and its windows to cut.

    Attributes:
        frames: ``(N, H, W, 3)`` uint8, the frames any remaining window needs.
        row: Source frame index -> row of ``frames``.
        starts: First frames of the windows still to produce.
        source: The source sample's key.
        label: Class id (-1 when unknown).
        class_name: Class name ("" when unknown).
    """

    frames: np.ndarray
    row: dict[int, int]
    starts: list[int]
    source: str
    label: int
    class_name: str


class VideoWindowsDataset(ShardStream):
    """Iterates the windows of the videos in ``shards`` (one pass, fixed order).

    Each window dict also carries ``skipped``, a skip report (see :class:`ShardStream`); a
    worker without windows sends its counts in one report-only item.

    Args:
        shards: Shard URLs (already resolved).
        num_frames: Frames per window ``T``.
        stride: Frames between window starts.
        frame_stride: Step between the frames of a window.
        resolution: Short side after resizing and side of the center crop.
        rank: This process's rank; it reads shards ``rank::world_size``.
        world_size: Number of ranks.
        exclude: Window keys not to produce (already written by an earlier run).
        class_names: Joint label space: a window's label becomes the index of its class name
            here (other names are counted skips); ``None`` keeps the shards' labels.
    """

    def __init__(
        self,
        shards: Sequence[str],
        num_frames: int,
        stride: int,
        frame_stride: int,
        resolution: int,
        rank: int = 0,
        world_size: int = 1,
        exclude: Iterable[str] = (),
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(
            shards,
            "ordered",
            rank=rank,
            world_size=world_size,
            max_consecutive_skips=None,
            split="predict",
        )
        self.class_names = None if class_names is None else [str(n) for n in class_names]
        self.shards = list(shards)
        self.num_frames, self.stride, self.frame_stride = num_frames, stride, frame_stride
        self.resolution = resolution
        self.exclude = frozenset(exclude)

    def pass_decoder(self, worker: int) -> Decode:
        """Decode a video once (eagerly, so its errors are counted), then cut its windows."""

        def decode(sample: dict[str, Any], tracker: SkipTracker) -> Iterator[dict[str, Any]]:
            decoded = self._decode(sample, tracker)
            if decoded is None:
                return iter(())
            # Windows are cut one at a time: with stride 1 a video has ~T_video of them.
            return (self._window(decoded, start) for start in decoded.starts)

        return decode

    def _decode(self, sample: dict[str, Any], tracker: SkipTracker) -> _DecodedVideo | None:
        """Decode the frames every remaining window of one source video needs (None: all done).

        Raises:
            SkipSample: Missing or corrupt video, bad metadata, too short for one window, or a
                key repeated in its shard.
        """
        video = next((sample[s] for s in VIDEO_SUFFIXES if s in sample), None)
        if video is None:
            raise SkipSample("missing video")
        if PROBLEM_KEY in sample:
            raise SkipSample(str(sample[PROBLEM_KEY]))
        try:
            meta = json.loads(sample["json"]) if "json" in sample else {}
            if not isinstance(meta, dict):
                raise ValueError("metadata is not a JSON object")
            label, class_name = int(meta.get("label", -1)), str(meta.get("class_name", ""))
        except (ValueError, TypeError, UnicodeDecodeError) as error:
            raise SkipSample("bad metadata") from error
        if self.class_names is not None:
            if class_name not in self.class_names:
                raise SkipSample("unknown class")
            label = self.class_names.index(class_name)
        source = str(sample["__key__"])
        stream = stored_stream(meta)
        try:
            if not {"frames", "height", "width"} <= set(meta):
                info = probe_video(video, stream)
                meta = {"frames": info.frames, "height": info.height, "width": info.width, **meta}
            stored = (int(meta["height"]), int(meta["width"]))
            height, width = short_side_shape(*stored, self.resolution)
            resize = (height, width) if (height, width) != stored else None
            try:
                starts, needed = self._plan(source, int(meta["frames"]))
                if not starts:
                    return None
                frames = decode_video(video, needed, output_size=resize, stream=stream)
            except VideoTruncatedError as error:  # a header count the video contradicts
                tracker.count(
                    "metadata frame count above the decoded frames (windows re-planned)",
                    sample.get("__url__"),
                )
                starts, needed = self._plan(source, error.decoded)
                if not starts:
                    return None
                frames = decode_video(video, needed, output_size=resize, stream=stream)
        except VideoDecodeError as error:
            raise SkipSample("corrupt video") from error
        top, left = (height - self.resolution) // 2, (width - self.resolution) // 2
        frames = frames[:, top : top + self.resolution, left : left + self.resolution]
        return _DecodedVideo(
            frames=frames,
            row={frame: i for i, frame in enumerate(needed)},
            starts=starts,
            source=source,
            label=label,
            class_name=class_name,
        )

    def _plan(self, source: str, total: int) -> tuple[list[int], list[int]]:
        """Window starts still to produce and the frames they need.

        Raises:
            SkipSample: ``too short`` for one window.
        """
        starts = window_starts(total, self.num_frames, self.stride, self.frame_stride)
        if not starts:
            raise SkipSample("too short")
        starts = [s for s in starts if window_key(source, s) not in self.exclude]
        offsets = self.frame_stride * np.arange(self.num_frames)
        return starts, sorted({int(s + o) for s in starts for o in offsets})

    def _window(self, decoded: _DecodedVideo, start: int) -> dict[str, Any]:
        """The window at ``start``, cut from the decoded frames (a fresh uint8 copy)."""
        rows = [decoded.row[int(start + self.frame_stride * i)] for i in range(self.num_frames)]
        clip = np.ascontiguousarray(decoded.frames[rows].transpose(3, 0, 1, 2))
        return {
            "video": torch.from_numpy(clip),
            "key": window_key(decoded.source, start),
            "source_key": decoded.source,
            "label": decoded.label,
            "class_name": decoded.class_name,
            "window_start": int(start),
        }


def collate_windows(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch window dicts.

    Gives ``video`` (B, C, T, H, W) float32 in [0, 1], ``label`` (B,) long, ``window_start``
    (B,) long, ``key``/``source_key``/``class_name`` lists and ``skipped``, the skip counts
    (reason -> n) of the items' reports.

    Report-only items (a worker's counts left after its last window) add their counts and
    nothing else; a batch of those only has ``video`` of shape (0,).
    """
    skipped = merge_reports([s.get(REPORT_KEY) or {} for s in samples])["skipped"]
    real = [s for s in samples if "video" in s]
    if not real:
        return {"video": torch.zeros(0), "key": [], "skipped": skipped}
    video = torch.stack([s["video"] for s in real]).float().div_(255.0)
    return {
        "video": video,
        "key": [s["key"] for s in real],
        "source_key": [s["source_key"] for s in real],
        "label": torch.tensor([s["label"] for s in real], dtype=torch.long),
        "class_name": [s["class_name"] for s in real],
        "window_start": torch.tensor([s["window_start"] for s in real], dtype=torch.long),
        "skipped": skipped,
    }


def _count_windows(shard: str, num_frames: int, stride: int, frame_stride: int) -> int | None:
    """Windows in a local shard from its metadata (None if it cannot be told cheaply)."""
    total = 0
    try:
        with tarfile.open(shard, "r:") as archive:
            for member in archive:
                if not member.name.endswith(".json"):
                    continue
                handle = archive.extractfile(member)
                meta = json.loads(handle.read()) if handle is not None else {}
                if "frames" not in meta:
                    return None
                total += len(window_starts(int(meta["frames"]), num_frames, stride, frame_stride))
    except (OSError, tarfile.TarError, ValueError):
        return None
    return total


class VideoWindowsDataModule(LightningDataModule):
    """Every ``num_frames`` window (at ``stride``) of video shards, for ``adaptok predict``.

    Args:
        predict_urls: Video shards: glob, brace pattern, folder, local path or URL, or a list.
        num_frames: Frames per window; ``None``: the annotating module sets it to its
            tokenizer's clip length (see :meth:`configure_clip`).
        stride: Frames between consecutive window starts (reference: 1 on UCF-101 train,
            2 on Kinetics-600 train, 100 on validation lists).
        frame_stride: Step between the frames of one window.
        resolution: Short side after resizing and side of the center crop; ``None``: set by
            the annotating module from its tokenizer.
        batch_size: Windows per batch.
        num_workers: DataLoader workers (at most the number of shards of a rank).
        class_names: One label space for shards written with different ones (e.g. the demo's
            synthetic classes 0..3 and real sample videos 0..1): each window's label is the
            index of its ``class_name`` in this list, and windows of other classes are
            counted skips. ``None`` keeps the labels stored in the shards.
    """

    def __init__(
        self,
        predict_urls: str | list[str],
        num_frames: int | None = None,
        stride: int = 1,
        frame_stride: int = 1,
        resolution: int | None = None,
        batch_size: int = 8,
        num_workers: int = 1,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        if class_names is not None and len(set(class_names)) != len(class_names):
            raise ValueError(f"class_names must be distinct, got {class_names}")
        if stride < 1 or frame_stride < 1 or batch_size < 1 or num_workers < 0:
            raise ValueError(
                "stride, frame_stride and batch_size must be >= 1 and num_workers >= 0, got "
                f"{stride}, {frame_stride}, {batch_size}, {num_workers}"
            )
        self.predict_urls = predict_urls
        self.num_frames = num_frames
        self.stride = stride
        self.frame_stride = frame_stride
        self.resolution = resolution
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.class_names = class_names
        self.shards: list[str] = []
        self.excluded: set[str] = set()
        self.skip_counts: Counter = Counter()

    def configure_clip(self, num_frames: int, resolution: int) -> None:
        """Adopt the tokenizer's clip size where unset; refuse a contradicting one.

        Raises:
            ValueError: ``num_frames`` or ``resolution`` was set to another value.
        """
        for name, value in (("num_frames", num_frames), ("resolution", resolution)):
            current = getattr(self, name)
            if current is None:
                setattr(self, name, int(value))
            elif int(current) != int(value):
                raise ValueError(
                    f"data {name}={current} but the tokenizer's clip needs {name}={value}; "
                    f"remove {name} from the data section (it is taken from the tokenizer)"
                )

    def window_info(self) -> dict[str, Any]:
        """Settings that define the annotated window set (stored with every annotation)."""
        return {
            "window_stride": self.stride,
            "frame_stride": self.frame_stride,
            "class_names": None if self.class_names is None else list(self.class_names),
        }

    def exclude_keys(self, keys: Iterable[str]) -> None:
        """Window keys that must not be produced (written by an earlier, interrupted run)."""
        self.excluded.update(keys)

    def setup(self, stage: str | None = None) -> None:
        """Resolve and check the shards (errors name the pattern or file)."""
        if not self.shards:
            self.shards = resolve_shards(self.predict_urls, "predict_urls")

    def expected_windows(self) -> int | None:
        """Windows this rank will produce (before skips and exclusions); None if unknown."""
        self.setup()
        if self.num_frames is None:
            return None
        rank, world_size = rank_and_world_size(self.trainer)
        total = 0
        for shard in self.shards[rank::world_size]:
            count = _count_windows(shard, self.num_frames, self.stride, self.frame_stride)
            if count is None:
                return None
            total += count
        return total

    def predict_dataloader(self) -> DataLoader:
        """Windows of this rank's shards, in order."""
        self.setup()
        if self.num_frames is None or self.resolution is None:
            raise ValueError(
                "num_frames and resolution are unset: give them in the data section or use a "
                "module that sets them from its tokenizer (AnnotatorModule does)"
            )
        rank, world_size = rank_and_world_size(self.trainer)
        own = len(self.shards[rank::world_size])
        workers = self.num_workers
        if own == 0:
            warnings.warn(
                f"rank {rank}: none of the {len(self.shards)} shard(s) falls to this rank "
                f"of {world_size}; it annotates nothing",
                stacklevel=2,
            )
            workers = 0
        elif workers > own:
            warnings.warn(
                f"num_workers={workers} > {own} shard(s) on this rank; using {own} worker(s)",
                stacklevel=2,
            )
            workers = own
        dataset = VideoWindowsDataset(
            self.shards,
            num_frames=self.num_frames,
            stride=self.stride,
            frame_stride=self.frame_stride,
            resolution=self.resolution,
            rank=rank,
            world_size=world_size,
            exclude=self.excluded,
            class_names=self.class_names,
        )
        return DataLoader(
            dataset, batch_size=self.batch_size, num_workers=workers, collate_fn=collate_windows
        )

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Accumulate the batch's skip counts in :attr:`skip_counts` (kept in the batch)."""
        if isinstance(batch, dict):
            self.skip_counts.update(batch.get("skipped") or {})
        return batch
