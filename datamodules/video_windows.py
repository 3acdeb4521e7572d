"""Every window of every video, in a fixed order: the input of token annotation.

``VideoShardsDataModule`` draws one random (or first) clip per video; the annotation stage
(docs/METHOD.md section 5.4) needs EVERY ``num_frames``-frame window at a given stride. This
datamodule reads the same WebDataset video shards and yields, per window::

    {"video": (C, T, H, W) uint8 (float in [0, 1] once batched), "key": str, "label": int,
     "class_name": str, "window_start": int (frame index in the source video)}

Windows are deterministic (short side resized to ``resolution``, center crop, no flip, as the
reference annotates) and cut by the suite's one window decoding,
:class:`~adaptok.data.windows.WindowDecoder`, which ``adaptok tokenize`` uses too: each video
is decoded once for all its windows, one frame at a time, holding only the frames a later
window still needs, so memory stays bounded whatever the source's resolution and length.
Shards are split between ranks (``rank::world_size``) and then between DataLoader workers, so
every window is produced exactly once over the whole job. Keys handed to
:meth:`VideoWindowsDataModule.exclude_keys` (windows a previous, interrupted run has already
written) are not decoded again. The datamodule sits on
:class:`~datamodules.shard_data.ShardDataModule` (shard resolution, worker clamp, skip totals).

The windows come from the shared :class:`~adaptok.data.shard_stream.ShardStream` (one ordered
pass; tar grouping, shard split and skip reports as for the clip and token streams). Bad data
is skipped and counted by reason (corrupt video, too short, bad metadata); the counts travel
in each batch under ``"skipped"``.
"""

from __future__ import annotations

import json
import tarfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from adaptok.data.clips import NO_LABEL_NOTE
from adaptok.data.shard_stream import Decode, ShardLoader, ShardStream
from adaptok.data.skips import REPORT_KEY, REPORT_ONLY_KEY, SkipSample, SkipTracker, merge_reports
from adaptok.data.tar_samples import PROBLEM_KEY
from adaptok.data.video_io import VIDEO_SUFFIXES, VideoDecodeError, probe_video, stored_stream
from adaptok.data.windows import WindowDecoder, window_span, window_starts
from adaptok.data.writer import sanitize_key
from adaptok.distributed import rank_and_world_size
from datamodules.shard_data import ShardDataModule, Split

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


@dataclass
class _VideoPlan:
    """One source video and the windows to cut from it (nothing decoded yet).

    Attributes:
        video: The encoded video.
        stream: Video stream ordinal to read (``None``: the best one).
        stored: Displayed ``(height, width)`` of the stored frames.
        starts: First frames of every window the metadata's frame count allows.
        excluded: Starts among ``starts`` whose windows are not to be produced.
        last: The last start to produce (frames after its window are not decoded).
        source: The source sample's key.
        label: Class id (-1 when unknown).
        class_name: Class name ("" when unknown).
        url: The shard the sample came from (for skip reports).
        unlabelled: The metadata has no ``label`` (or the sample no JSON): counted as a note.
    """

    video: bytes
    stream: int | None
    stored: tuple[int, int]
    starts: range
    excluded: frozenset[int]
    last: int
    source: str
    label: int
    class_name: str
    url: str | None
    unlabelled: bool = False


class VideoWindowsDataset(ShardStream):
    """Iterates the windows of the videos in ``shards`` (one pass, fixed order).

    A video is decoded once, one frame at a time: each frame is resized and cropped as it is
    decoded, and only the frames a later window still needs are held (at most one window's
    span), so memory does not grow with the video's length or resolution. Decoding stops
    after the last window's frames.

    Each window dict also carries ``skipped``, a skip report (see :class:`ShardStream`); a
    worker without windows sends its counts in one report-only item. Problems found before
    decoding (metadata, a video too short by its metadata) skip the sample at once; problems
    found while decoding are counted when they appear, after the windows already cut: a
    video that turns out corrupt part-way keeps the windows before the damage, and one that
    ends before its metadata's frame count keeps the windows that fit (counted as a note,
    and as ``too short`` when not one window fits).

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

    @property
    def span(self) -> int:
        """Source frames one window covers, first to last: ``(T - 1) * frame_stride + 1``."""
        return window_span(self.num_frames, self.frame_stride)

    def pass_decoder(self, worker: int) -> Decode:
        """Check a sample's metadata at once, then decode its windows as they are consumed."""

        def decode(sample: dict[str, Any], tracker: SkipTracker) -> Iterator[dict[str, Any]]:
            plan = self._plan(sample)
            if plan is None:
                return iter(())
            if plan.unlabelled:  # loaded, as label -1, but never silently
                tracker.note(NO_LABEL_NOTE)
            return self._windows(plan, tracker)

        return decode

    def _plan(self, sample: dict[str, Any]) -> _VideoPlan | None:
        """What to decode from one sample and which windows to cut (None: all excluded).

        Raises:
            SkipSample: Missing or unreadable video, bad metadata, an unknown class, or too
                short for one window by its metadata's frame count.
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
        except VideoDecodeError as error:
            raise SkipSample("corrupt video") from error
        stored = (int(meta["height"]), int(meta["width"]))
        total = int(meta["frames"])
        starts = range(0, max(0, total - self.span + 1), self.stride)
        if not starts:
            raise SkipSample("too short")
        excluded = (
            frozenset(start for start in starts if window_key(source, start) in self.exclude)
            if self.exclude
            else frozenset()
        )
        last = next((start for start in reversed(starts) if start not in excluded), None)
        if last is None:
            return None
        return _VideoPlan(
            video=video,
            stream=stream,
            stored=stored,
            starts=starts,
            excluded=excluded,
            last=last,
            source=source,
            label=label,
            class_name=class_name,
            url=sample.get("__url__"),
            unlabelled="label" not in meta and self.class_names is None,
        )

    def _windows(self, plan: _VideoPlan, tracker: SkipTracker) -> Iterator[dict[str, Any]]:
        """Decode the video frame by frame and yield each window once its last frame is in.

        The shared window decoding (:class:`~adaptok.data.windows.WindowDecoder`, frames as
        decoded: the shards hold constant-rate clips) converts only the frames of windows to
        produce and stops after the last one. Decoding problems are counted on ``tracker``
        (they end the video, never the pass).
        """
        decoder = WindowDecoder(
            plan.video,
            self.num_frames,
            self.resolution,
            plan.stored,
            self.stride,
            self.frame_stride,
            stream=plan.stream,
        )
        try:
            for start, frames in decoder.windows(skip=plan.excluded, last=plan.last):
                window = self._window(plan, start, frames)
                del frames  # only the decoder's own buffer outlives the window
                yield window
        except VideoDecodeError:
            tracker.count("corrupt video", plan.url)
            return
        except Exception as error:  # bad data must never end the pass
            tracker.count(f"unreadable sample ({type(error).__name__})", plan.url)
            return
        end = plan.last + self.span  # frames the metadata promised up to the last window
        if decoder.decoded == 0:
            tracker.count("corrupt video", plan.url)
        elif decoder.decoded < end:  # the metadata promised more frames than the video has
            tracker.count(
                "metadata frame count above the decoded frames (windows re-planned)", plan.url
            )
            if decoder.decoded < self.span:
                tracker.count("too short", plan.url)

    def _window(self, plan: _VideoPlan, start: int, frames: list[np.ndarray]) -> dict[str, Any]:
        """The window dict for ``frames`` (``T`` cropped frames) starting at ``start``."""
        clip = np.ascontiguousarray(np.stack(frames).transpose(3, 0, 1, 2))
        return {
            "video": torch.from_numpy(clip),
            "key": window_key(plan.source, start),
            "source_key": plan.source,
            "label": plan.label,
            "class_name": plan.class_name,
            "window_start": int(start),
        }


def collate_windows(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch window dicts.

    Gives ``video`` (B, C, T, H, W) float32 in [0, 1], ``label`` (B,) long, ``window_start``
    (B,) long, ``key``/``source_key``/``class_name`` lists and ``skipped``, the items' skip
    reports summed (a :class:`~adaptok.data.shard_stream.ShardLoader` with
    ``counts_in_batch`` leaves their counts there, reason -> n).

    Report-only items (a worker's counts left after its last window) add their counts and
    nothing else; a batch of those only has ``video`` of shape (0,), an empty ``key`` list
    and :data:`~adaptok.data.skips.REPORT_ONLY_KEY`.
    """
    report = merge_reports([s.get(REPORT_KEY) or {} for s in samples])
    real = [s for s in samples if "video" in s]
    if not real:
        return {"video": torch.zeros(0), "key": [], REPORT_KEY: report, REPORT_ONLY_KEY: True}
    video = torch.stack([s["video"] for s in real]).float().div_(255.0)
    return {
        "video": video,
        "key": [s["key"] for s in real],
        "source_key": [s["source_key"] for s in real],
        "label": torch.tensor([s["label"] for s in real], dtype=torch.long),
        "class_name": [s["class_name"] for s in real],
        "window_start": torch.tensor([s["window_start"] for s in real], dtype=torch.long),
        REPORT_KEY: report,
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


class VideoWindowsDataModule(ShardDataModule):
    """Every ``num_frames`` window (at ``stride``) of video shards, for ``adaptok predict``.

    A :class:`~datamodules.shard_data.ShardDataModule` of the ``predict`` split: the base
    resolves the shards and clamps the workers to this rank's shards. Unlike the training
    datamodules, a rank that gets no shard annotates nothing (with a warning) instead of
    failing, and every batch, report-only ones included, reaches the annotating module with
    its skip counts (``skipped``) for the annotation writer's summary, without a warning per
    pass; they are summed in :attr:`skip_counts` as the batches come.

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
        super().__init__(
            {"predict": predict_urls},
            seed=0,  # the windows are read in order: nothing is drawn
            noun="window",
            empty_pass_error=False,
            shard_advice="write smaller shards (adaptok-shards --shard-samples)",
        )
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
        self.pin_memory = False
        self.class_names = class_names
        self.excluded: set[str] = set()

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
        self._shards_of("predict")

    def expected_windows(self) -> int | None:
        """Windows this rank will produce (before skips and exclusions); None if unknown."""
        shards = self._shards_of("predict")
        if self.num_frames is None:
            return None
        rank, world_size = rank_and_world_size(self.trainer)
        total = 0
        for shard in shards[rank::world_size]:
            count = _count_windows(shard, self.num_frames, self.stride, self.frame_stride)
            if count is None:
                return None
            total += count
        return total

    def _workers(self, split: str, shards: list[str], rank: int, world_size: int) -> int:
        """The base's clamp, except that a rank without shards warns and reads nothing."""
        if not shards[rank::world_size]:
            warnings.warn(
                f"rank {rank}: none of the {len(shards)} shard(s) falls to this rank "
                f"of {world_size}; it annotates nothing",
                stacklevel=3,
            )
            return 0
        return super()._workers(split, shards, rank, world_size)

    def _stream(
        self, split: Split, shards: list[str], rank: int, world_size: int, workers: int
    ) -> VideoWindowsDataset:
        """The windows of this rank's shards (:meth:`rank_stream`).

        Raises:
            ValueError: ``num_frames`` or ``resolution`` is unset.
        """
        return self.rank_stream(shards, rank, world_size)

    def rank_stream(self, shards: Sequence[str], rank: int, world_size: int) -> VideoWindowsDataset:
        """The windows of rank ``rank``'s share of ``shards`` (one ordered pass), as set up.

        The one construction of the window stream: :meth:`predict_dataloader` reads it, and
        so do the drawn real windows of a generation evaluation
        (:class:`~datamodules.real_clips.RealClips`). Its workers:
        :func:`~datamodules.shard_data.rank_workers`.

        Args:
            shards: Resolved shard URLs of every rank.
            rank: This process's rank.
            world_size: Number of ranks.

        Raises:
            ValueError: ``num_frames`` or ``resolution`` is unset.
        """
        if self.num_frames is None or self.resolution is None:
            raise ValueError(
                "num_frames and resolution are unset: give them in the data section or use a "
                "module that sets them from its tokenizer (AnnotatorModule does)"
            )
        return VideoWindowsDataset(
            shards,
            num_frames=self.num_frames,
            stride=self.stride,
            frame_stride=self.frame_stride,
            resolution=self.resolution,
            rank=rank,
            world_size=world_size,
            exclude=self.excluded,
            class_names=self.class_names,
        )

    def predict_dataloader(self) -> ShardLoader:
        """Windows of this rank's shards, in order.

        The base's :class:`~adaptok.data.shard_stream.ShardLoader`, set so that every batch,
        report-only ones included, reaches the annotating module with its ``skipped`` counts,
        and that no warning is raised per pass (the annotation writer reports the skips).

        Raises:
            ValueError: ``num_frames`` or ``resolution`` is unset.
        """
        return self._loader(
            "predict",
            collate_windows,
            counts_in_batch=True,
            yield_report_only=True,
            warn_skips=False,
        )

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Leave the batch's skip counts in it for the annotating module (the base drops them).

        Their totals are in :attr:`skip_counts` already: the loader adds them as it yields.
        """
        return batch
