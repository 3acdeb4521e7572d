"""Write clips into WebDataset tar shards, resumably.

Shards are ``OUT/{split}-{index:06d}.tar``. Each sample holds ``{key}.json`` (label, class name,
source, fps, frames, height, width and any generator parameters) and ``{key}.mp4`` (re-encoded
H.264) or the original file bytes under their own suffix.

A shard is written under a hidden temporary name and renamed when complete. Tasks are written
in their given order, so a re-run after an interruption finds the finished shards, skips the
keys they hold, deletes the unfinished temporary file and carries on with the same shard
boundaries: nothing is lost and nothing is written twice. ``manifest.json`` in the output
folder records the options, every shard with its counts, and every skipped source.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import re
import sys
import tarfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from adaptok.atomic_write import write_atomic
from adaptok.data.sink import ShardSink
from adaptok.data.verify import is_token_shard
from adaptok.data.video_io import (
    LARGE_FRAME_PIXELS,
    ConstantRate,
    VideoDecodeError,
    VideoEncoder,
    VideoReader,
    decode_video_timed,
    encode_video,
    frames_at_rate,
    note_resampling,
    probe_video,
    resize_frames,
    short_side_shape,
)

__all__ = [
    "MANIFEST_NAME",
    "PER_FRAME_KEYS",
    "ClipTask",
    "RawClip",
    "ShardOptions",
    "ShardWriteError",
    "VideoFileReader",
    "WriteSummary",
    "read_video_file",
    "sanitize_key",
    "shard_name",
    "write_shards",
]

MANIFEST_NAME = "manifest.json"
PER_FRAME_KEYS = ("frame_complexity",)
"""Metadata lists with one value per frame: sliced together with the frames."""

_SHARD_PATTERN = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-(?P<index>\d{6})\.tar$")


@dataclass(frozen=True)
class RawClip:
    """Decoded frames of one clip, before frame selection and encoding.

    Attributes:
        frames: ``uint8`` array ``(T, H, W, 3)``.
        fps: Frame rate of ``frames``.
        metadata: Extra JSON fields (generator parameters; per-frame lists named in
            ``PER_FRAME_KEYS``). ``label`` / ``class_name`` here override the task's.
        times: ``(T,)`` presentation times in seconds (from the first frame) when the source
            has them; frame selection by ``fps`` then goes by time (variable frame rate
            sources). ``None``: frames are evenly spaced at ``fps``.
        source_size: ``(height, width)`` of the source before any resize (checked against
            ``ShardOptions.min_side``); ``None``: the size of ``frames``.
        rotation: Display rotation (degrees counter-clockwise) applied to the source frames.
        properties: The source file's properties
            (:meth:`~adaptok.data.video_io.SourceProperties.as_dict`), stored as
            ``source_video``; ``None`` for generated clips.
        adjustments: What decoding changed (stream choice, alpha, tone mapping,
            deinterlacing, rotation, timestamps), stored as ``adjustments`` and counted.
    """

    frames: np.ndarray
    fps: float
    metadata: dict = field(default_factory=dict)
    times: np.ndarray | None = None
    source_size: tuple[int, int] | None = None
    rotation: int = 0
    properties: dict | None = None
    adjustments: dict = field(default_factory=dict)


ClipReader = Callable[[int | None], RawClip]
"""Picklable callable: ``read(short_side)`` -> :class:`RawClip`, resized when not ``None``."""


@dataclass(frozen=True)
class ClipTask:
    """One sample to write.

    Attributes:
        key: Unique sample key (letters, digits, ``_`` and ``-``; see :func:`sanitize_key`).
        split: Split name (``train``, ``val``, ``test``).
        label: Integer label (-1 when unknown).
        class_name: Human-readable class.
        source: Where the clip comes from (path or description), stored in the JSON.
        read: Produces the frames (run in a worker process, so it must pickle).
        path: The source file, when there is one (needed to keep the original bytes).
        relative_path: The source's path relative to the dataset root, stored in the JSON
            (the key is a safe, possibly hashed, form of it).
    """

    key: str
    split: str
    label: int
    class_name: str
    source: str
    read: ClipReader
    path: Path | None = None
    relative_path: str | None = None


@dataclass(frozen=True)
class ShardOptions:
    """How clips are transformed and grouped into shards.

    Attributes:
        fps: Resample to this frame rate by presentation time: at each output time ``k / fps``
            the source frame shown then is kept, so variable-frame-rate sources come out
            evenly timed (a frame repeats where the source has a longer gap); a source of
            ``D`` seconds gives ``round(D * fps)`` frames. Sources with
            an even rate at or below ``fps`` are kept as they are. Without ``fps``, a source
            whose timestamps are not evenly spaced at its nominal rate (dropped or
            duplicated frames, variable frame rate) is resampled to that rate the same way,
            so it keeps its duration; the clip's JSON records it under
            ``adjustments.irregular_timestamps``.
        frame_stride: Keep every ``frame_stride``-th frame (exclusive with ``fps``).
        size: Resize so the short side is ``size`` (sizes rounded to even numbers).
        shard_samples: Most samples per shard.
        shard_mb: Most megabytes per shard (a single larger sample still gets its own shard).
        keep_original: Store the source file's bytes instead of re-encoding (file sources
            only; excludes ``fps``, ``frame_stride`` and ``size``).
        crf: x264 constant rate factor for re-encoding.
        preset: x264 preset for re-encoding.
        workers: Processes that decode and encode (0 = in this process).
        min_side: Sources whose shorter side is below this many pixels are skipped and
            listed (they would be blown up by the loader).
        stream: Video stream to read from files with several (ordinal among the video
            streams); ``None``: the best one, as ffmpeg picks it. Recorded per clip.
        background: RGB colour transparent pixels of alpha sources are composited over.
    """

    fps: float | None = None
    frame_stride: int = 1
    size: int | None = None
    shard_samples: int = 256
    shard_mb: float = 512.0
    keep_original: bool = False
    crf: int = 23
    preset: str = "medium"
    workers: int = 0
    min_side: int = 16
    stream: int | None = None
    background: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        if self.fps is not None and self.frame_stride != 1:
            raise ValueError("give either fps or frame_stride, not both")
        if self.frame_stride < 1 or self.shard_samples < 1 or self.shard_mb <= 0:
            raise ValueError("frame_stride, shard_samples and shard_mb must be positive")
        if self.min_side < 2:
            raise ValueError(f"min_side must be >= 2 (H.264 needs 2x2), got {self.min_side}")
        if self.keep_original and (self.fps is not None or self.frame_stride != 1 or self.size):
            raise ValueError("keep_original stores the file as is: drop fps, frame_stride and size")

    def encoding_options(self) -> dict:
        """The options that change sample content (must match when resuming a folder)."""
        names = ("fps", "frame_stride", "size", "keep_original", "crf", "preset")
        chosen = {name: getattr(self, name) for name in names}
        if self.stream is not None:
            chosen["stream"] = self.stream
        if tuple(self.background) != (0, 0, 0):
            chosen["background"] = list(self.background)
        return chosen


@dataclass
class WriteSummary:
    """What :func:`write_shards` did.

    Attributes:
        written: New samples per split.
        already_present: Samples per split found in finished shards of an earlier run.
        shards: Shard count per split after the run.
        skipped: ``(source, reason)`` of every task that could not be written.
        adjusted: Written samples per kind of source adjustment (``stream``, ``alpha``,
            ``tone_mapped``, ``gamut_mapped``, ``deinterlaced``, ``rotation``,
            ``timestamps``, ``irregular_timestamps``, ``header_frames``, ``large_frames``),
            so a data set can be audited; each sample's JSON says what was done under
            ``adjustments``.
        warnings: ``(source, text)`` of every warning, one per source and kind.
    """

    written: Counter = field(default_factory=Counter)
    already_present: Counter = field(default_factory=Counter)
    shards: Counter = field(default_factory=Counter)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    adjusted: Counter = field(default_factory=Counter)
    warnings: list[tuple[str, str]] = field(default_factory=list)

    def format(self) -> str:
        """Human-readable report."""
        lines = ["split      written  already  shards"]
        for split in sorted(set(self.written) | set(self.already_present) | set(self.shards)):
            lines.append(
                f"{split:<10} {self.written[split]:>7}  {self.already_present[split]:>7}"
                f"  {self.shards[split]:>6}"
            )
        adjusted = ", ".join(f"{kind}: {n}" for kind, n in sorted(self.adjusted.items()))
        lines.append(f"source adjustments (samples): {adjusted or 'none'}")
        lines.append(f"skipped: {len(self.skipped)}")
        lines.extend(f"  {source}: {reason}" for source, reason in self.skipped)
        return "\n".join(lines)


class ShardWriteError(RuntimeError):
    """Writing a shard failed (disk full, file-size limit...); finished shards are kept."""


_ADJUSTMENT_WARNINGS = {
    "stream": "{of} video streams; stored stream {chosen} ({rule})",
    "alpha": "alpha channel composited over background {background}",
    "tone_mapped": "HDR ({transfer}, {primaries}) tone-mapped to SDR BT.709 with {method}",
    "gamut_mapped": "{primaries} primaries mapped to BT.709 ({method})",
    "deinterlaced": "interlaced (field order {field_order}) deinterlaced with {filter}",
    "timestamps": "timestamps jump backwards {backward_jumps} time(s) / {missing} missing: {rule}",
    "irregular_timestamps": "timestamps uneven at the nominal {nominal_fps:g} fps ({gaps} gap(s) "
    "leaving out {missing_frames} frame(s), {close_frames} frame(s) under half an interval "
    "apart): {rule}",
    "header_frames": "header says {header} frames, decoding gives {decoded}: stored the "
    "decoded count",
    "large_frames": "stored at {height}x{width} (above {limit} pixels per frame); --size "
    "resizes while decoding",
}


def adjustment_warnings(adjustments: dict) -> list[str]:
    """One warning line per kind of adjustment (rotation is routine and not warned about)."""
    lines = []
    for kind, template in _ADJUSTMENT_WARNINGS.items():
        value = adjustments.get(kind)
        if isinstance(value, dict):
            try:
                lines.append(template.format(**value))
            except (KeyError, IndexError):
                lines.append(f"{kind}: {value}")
    return lines


def sanitize_key(text: str) -> str:
    """Make a WebDataset-safe key that stays unique for any distinct ``text``.

    Letters, digits, ``_`` and ``-`` are kept; when anything else had to be replaced by ``_``
    (spaces, dots, slashes, non-ASCII), the first 10 hex digits of the SHA-1 of ``text`` are
    appended (``a b`` -> ``a_b-2b3e...``), so ``a b`` and ``a_b`` stay distinct keys.
    """
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", text)
    if safe == text and text:
        return text
    return f"{safe}-{hashlib.sha1(text.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}"


def shard_name(split: str, index: int) -> str:
    """File name of shard ``index`` of ``split``."""
    return f"{split}-{index:06d}.tar"


def read_video_file(
    path: Path,
    size: int | None,
    stream: int | None = None,
    background: tuple[int, int, int] = (0, 0, 0),
) -> RawClip:
    """Decode a whole video file into memory (short clips; the writer streams files instead).

    Args:
        path: The video file.
        size: Short side after resizing (even sizes), or ``None``.
        stream: Video stream ordinal (``None``: the best stream).
        background: Colour transparent pixels are composited over.

    Returns:
        The decoded :class:`RawClip` with the source properties and adjustments.
    """
    info = probe_video(path, stream)
    shape = short_side_shape(info.height, info.width, size, even=True) if size else None
    decoded = decode_video_timed(path, output_size=shape, stream=stream, background=background)
    return RawClip(
        frames=decoded.frames,
        fps=info.fps,
        times=decoded.times,
        source_size=(info.height, info.width),
        rotation=decoded.rotation,
        properties=decoded.properties.as_dict(),
        adjustments=decoded.adjustments,
    )


@dataclass(frozen=True)
class VideoFileReader:
    """Picklable reader of a video file for :class:`ClipTask`.

    :func:`write_shards` streams such a file (frame by frame: decode, select, resize while
    converting, encode), so memory stays flat whatever its resolution and length; called
    directly it decodes the whole file like :func:`read_video_file`.

    Attributes:
        path: The video file.
    """

    path: Path

    def __call__(self, size: int | None) -> RawClip:
        """The whole file in memory (see :func:`read_video_file`)."""
        return read_video_file(self.path, size)


def _is_even(times: np.ndarray, fps: float) -> bool:
    """Whether frame times follow a constant rate ``fps`` (within a quarter frame)."""
    if len(times) < 2 or fps <= 0:
        return True
    return bool(np.abs(np.diff(times) - 1.0 / fps).max() < 0.25 / fps)


def _select_frames(raw: RawClip, options: ShardOptions) -> tuple[np.ndarray, float]:
    """Indices of the source frames to keep and the resulting frame rate."""
    return _select_indices(len(raw.frames), raw.times, raw.fps, options)


def _select_indices(
    count: int, times: np.ndarray | None, rate: float, options: ShardOptions
) -> tuple[np.ndarray, float]:
    """Indices of the source frames to keep and the resulting frame rate.

    With ``options.fps``, output frame ``k`` is the source frame on screen at time ``k / fps``
    (the last frame whose presentation time is at or before it, half a source frame of
    slack), and a source lasting ``D`` seconds (its last frame's time plus the interval
    before it) gives ``round(D * fps)`` frames (:class:`ConstantRate`: an output frame is
    kept when at least half of its interval lies within the source). Without it, a
    timeline that is not even at the nominal ``rate`` is resampled to ``rate`` by the same
    rule (half a nominal interval of slack) before ``frame_stride`` applies.
    """
    times = times if times is not None and len(times) == count else None
    if not rate > 0:
        rate = (count - 1) / float(times[-1]) if times is not None and times[-1] > 0 else 25.0
    if options.fps is not None:
        even = times is None or _is_even(times, rate)
        if not even or rate > options.fps:
            if times is None:
                times = np.arange(count) / rate
            slack = 0.5 * float(np.median(np.diff(times))) if count > 1 else 0.0
            return frames_at_rate(times, options.fps, slack), options.fps
    elif times is not None and not _is_even(times, rate):
        indices = frames_at_rate(times, rate)[:: options.frame_stride]
        return indices, rate / options.frame_stride
    stride = options.frame_stride
    return np.arange(0, count, stride), rate / stride


def _describe_irregular(
    adjustments: dict, options: ShardOptions, rate: float, repeated: int, dropped: int
) -> None:
    """Say in ``adjustments.irregular_timestamps`` what was done about the timeline."""
    irregular = adjustments.get("irregular_timestamps")
    if options.keep_original:
        if not isinstance(irregular, dict):
            return
        irregular["rule"] = (
            "stored as is (--keep-original): loaders read its frames in order, so gaps are "
            "not filled and it plays shorter than the source; write it without "
            "--keep-original to resample it to its nominal rate"
        )
        return
    note_resampling(adjustments, rate, options.fps, repeated, dropped)


@dataclass(frozen=True)
class _Prepared:
    key: str
    split: str
    files: dict[str, bytes]
    source: str = ""
    adjustments: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Skipped:
    source: str
    reason: str


def _check_min_side(height: int, width: int, options: ShardOptions) -> None:
    if min(height, width) < options.min_side:
        raise ValueError(
            f"frames of {height}x{width} are below min_side={options.min_side} "
            "(the loader would blow them up)"
        )


def _large(adjustments: dict, height: int, width: int) -> None:
    if height * width > LARGE_FRAME_PIXELS:
        adjustments["large_frames"] = {
            "height": height,
            "width": width,
            "limit": LARGE_FRAME_PIXELS,
        }


def _prepare_original(task: ClipTask, options: ShardOptions, meta: dict) -> dict[str, bytes]:
    """The source file as is; its frames, times and properties measured by decoding it.

    One pass over every frame records what the re-encoding path records: the decoded frame
    count and duration, timestamps that jump backwards, an uneven timeline, and for alpha
    sources how many frames are not fully opaque (:meth:`VideoReader.inspect`).
    """
    if task.path is None:
        raise ValueError("keep_original needs a file source")
    data = Path(task.path).read_bytes()
    info = probe_video(data, options.stream)
    _check_min_side(info.height, info.width, options)
    decoded, duration = 0, 0.0
    with VideoReader(data, options.stream, options.background) as reader:
        for time, frame in reader.frames():
            reader.inspect(frame)
            decoded, duration = decoded + 1, time
        adjustments = dict(reader.adjustments)
    if decoded == 0:
        raise VideoDecodeError(f"no decodable frames in {task.path}")
    _describe_irregular(adjustments, options, info.fps, 0, 0)
    if decoded != info.frames:
        adjustments["header_frames"] = {"header": info.frames, "decoded": decoded}
    _large(adjustments, info.height, info.width)
    meta.update(
        fps=info.fps,
        frames=decoded,
        height=info.height,
        width=info.width,
        duration=round(duration, 6),
        source_video=info.properties.as_dict(),
    )
    if info.properties.video_streams > 1:
        meta["stream"] = info.properties.stream
    if info.rotation:
        meta["source_rotation"] = info.rotation
    if adjustments:
        meta["adjustments"] = adjustments
    extension = Path(task.path).suffix.lower().lstrip(".") or "mp4"
    return {extension: data}


def _prepare_streamed(task: ClipTask, options: ShardOptions, meta: dict) -> dict[str, bytes]:
    """Decode, select, resize and encode a video file one frame at a time (flat memory).

    Without ``fps`` the frames go through :class:`ConstantRate` at the source's nominal rate,
    which holds one undecided frame: an even timeline comes out unchanged, gaps repeat the
    frame before them. With ``fps`` a first pass reads the timeline (times only).
    """
    path = task.read.path
    info = probe_video(path, options.stream)
    _check_min_side(info.height, info.width, options)
    shape = (
        short_side_shape(info.height, info.width, options.size, even=True) if options.size else None
    )
    rate = info.fps if info.fps > 0 else 0.0
    repeats: np.ndarray | None = None
    grid: ConstantRate | None = None
    repeated = dropped = 0
    if options.fps is not None:  # selection by time needs the whole timeline first
        with VideoReader(path, options.stream, options.background) as reader:
            times = np.array([time for time, _ in reader.frames()], dtype=np.float64)
        count = len(times)
        if count == 0:
            raise ValueError(f"no decodable frames in {path}")
        indices, fps = _select_indices(count, times, info.fps, options)
        repeats = np.bincount(indices, minlength=count)
        used = int(np.count_nonzero(repeats))
        repeated, dropped = len(indices) - used, count - used
    else:
        fps = (rate or 25.0) / options.frame_stride
        grid = ConstantRate(rate) if rate > 0 else None
    stride = 1 if options.fps is not None else options.frame_stride
    encoder = VideoEncoder(fps, crf=options.crf, preset=options.preset)
    kept_indices: list[int] = []
    kept_times: list[float] = []
    decoded = 0
    slot = 0  # output frames of the resampled timeline so far (before the stride)

    def emit(index: int, time: float, frame: object, copies: int) -> None:
        """Store the output frames of one source frame that the stride keeps."""
        nonlocal slot
        picks = sum(1 for j in range(slot, slot + copies) if j % stride == 0)
        slot += copies
        if not picks:
            return
        rgb = reader.to_rgb(frame, shape)
        for _ in range(picks):
            encoder.add(rgb)
            kept_indices.append(index)
            kept_times.append(time)

    try:
        with VideoReader(path, options.stream, options.background) as reader:
            pending: tuple[int, float, object] | None = None  # the frame ConstantRate holds
            for index, (time, frame) in enumerate(reader.frames()):
                decoded += 1
                if repeats is not None:
                    emit(index, time, frame, int(repeats[index]) if index < len(repeats) else 0)
                elif grid is not None:
                    copies = grid.push(time)
                    if pending is not None:
                        emit(*pending, copies)
                    pending = (index, time, frame)
                else:
                    emit(index, time, frame, 1)
            if grid is not None and pending is not None:
                emit(*pending, grid.finish())
            properties = reader.properties
            adjustments = dict(reader.adjustments)
        if properties is None or not kept_indices:
            raise ValueError(f"no decodable frames in {path}")
        data = encoder.finish()
    finally:
        encoder.close()
    if grid is not None:
        repeated, dropped = grid.repeated, grid.dropped
    _describe_irregular(adjustments, options, rate, repeated, dropped)
    height, width = encoder.size
    _large(adjustments, height, width)
    if kept_indices != list(range(decoded)):
        meta["source_frame_indices"] = kept_indices
        meta["source_frame_times"] = [round(float(t), 6) for t in kept_times]
    meta.update(
        fps=fps,
        frames=len(kept_indices),
        height=height,
        width=width,
        source_fps=info.fps,
        source_frames=decoded,
        source_video=properties.as_dict(),
    )
    if properties.video_streams > 1:
        meta["source_stream"] = properties.stream
    if properties.rotation:
        meta["source_rotation"] = properties.rotation
    if adjustments:
        meta["adjustments"] = adjustments
    return {"mp4": data}


def _prepare_in_memory(task: ClipTask, options: ShardOptions, meta: dict) -> dict[str, bytes]:
    """Frames a reader produced in memory (generated clips, sample windows)."""
    raw = task.read(options.size)
    height, width = raw.source_size or raw.frames.shape[1:3]
    _check_min_side(height, width, options)
    indices, fps = _select_frames(raw, options)
    frames = raw.frames[indices]
    if options.size:
        height, width = short_side_shape(*frames.shape[1:3], options.size, even=True)
        frames = resize_frames(frames, height, width)
    extra = dict(raw.metadata)
    for name in PER_FRAME_KEYS:
        if name in extra:
            extra[name] = [extra[name][i] for i in indices]
    if len(indices) != len(raw.frames) or np.any(indices != np.arange(len(indices))):
        extra["source_frame_indices"] = indices.tolist()
        if raw.times is not None:
            extra["source_frame_times"] = [round(float(raw.times[i]), 6) for i in indices]
    if raw.rotation:
        extra["source_rotation"] = raw.rotation
    if raw.properties is not None:
        extra["source_video"] = raw.properties
    adjustments = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.adjustments.items()}
    timeline = indices
    if options.fps is None and raw.times is not None and raw.fps > 0:
        timeline = frames_at_rate(raw.times, raw.fps)  # the resampling before the stride
    kept = len(np.unique(timeline))
    repeated, dropped = len(timeline) - kept, len(raw.frames) - kept
    _describe_irregular(adjustments, options, raw.fps, repeated, dropped)
    _large(adjustments, frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2)
    if adjustments:
        extra["adjustments"] = adjustments
    meta.update(extra)
    data = encode_video(frames, fps, crf=options.crf, preset=options.preset)
    meta.update(
        fps=fps,
        frames=len(frames),
        height=frames.shape[1] // 2 * 2,
        width=frames.shape[2] // 2 * 2,
        source_fps=raw.fps,
        source_frames=len(raw.frames),
    )
    return {"mp4": data}


def _prepare(task: ClipTask, options: ShardOptions) -> _Prepared | _Skipped:
    """Turn a task into the files of one sample (runs in a worker process)."""
    try:
        meta: dict = {"label": task.label, "class_name": task.class_name, "source": task.source}
        if task.relative_path is not None:
            meta["relative_path"] = task.relative_path
        if options.keep_original:
            video = _prepare_original(task, options, meta)
        elif isinstance(task.read, VideoFileReader):
            video = _prepare_streamed(task, options, meta)
        else:
            video = _prepare_in_memory(task, options, meta)
        files = {"json": json.dumps(meta, sort_keys=True).encode(), **video}
        return _Prepared(
            task.key, task.split, files, task.source, dict(meta.get("adjustments", {}))
        )
    except Exception as error:  # any failure of one source is reported, never fatal
        return _Skipped(task.source, f"{type(error).__name__}: {error}")


def _read_shard_keys(path: Path) -> list[str]:
    """Keys of the samples in a finished shard (from the member names, payloads unread).

    Raises:
        ValueError: The shard cannot be read as a tar archive (named, with what to do).
    """
    try:
        with tarfile.open(path, "r:") as archive:
            return sorted({name.split(".", 1)[0] for name in archive.getnames()})
    except (tarfile.TarError, OSError) as error:
        raise ValueError(
            f"{path} is in the output folder but cannot be read as a shard ({error}): a re-run "
            "resumes from the finished shards there, so move or delete it (adaptok-shards "
            "verify lists the readable ones)"
        ) from error


def _existing_shards(out_dir: Path) -> dict[str, list[Path]]:
    shards: dict[str, list[Path]] = {}
    for path in sorted(out_dir.glob("*.tar")):
        match = _SHARD_PATTERN.match(path.name)
        if match:
            shards.setdefault(match["split"], []).append(path)
    return shards


def _sink(out_dir: Path, split: str, index: int, options: ShardOptions) -> ShardSink:
    """The shard sink of one split, with the options' sample and size limits."""
    return ShardSink(out_dir, split, index, options.shard_samples, options.shard_mb * 1e6)


def _results(tasks: Sequence[ClipTask], options: ShardOptions) -> Iterator[_Prepared | _Skipped]:
    """Prepared samples in task order, from worker processes when asked."""
    work = partial(_prepare, options=options)
    if options.workers <= 0:
        yield from map(work, tasks)
        return
    with multiprocessing.get_context("spawn").Pool(options.workers) as pool:
        yield from pool.imap(work, tasks, chunksize=1)


def _shard_stats(path: Path) -> dict:
    """Counts of one finished shard for the manifest."""
    samples = frames = 0
    classes: Counter = Counter()
    with tarfile.open(path, "r:") as archive:
        for member in archive.getmembers():
            if member.name.endswith(".json"):
                handle = archive.extractfile(member)
                meta = json.loads(handle.read()) if handle else {}
                samples += 1
                frames += int(meta.get("frames", 0))
                classes[str(meta.get("class_name", ""))] += 1
    return {
        "name": path.name,
        "samples": samples,
        "frames": frames,
        "bytes": path.stat().st_size,
        "classes": dict(sorted(classes.items())),
    }


def _write_manifest(
    out_dir: Path,
    options: ShardOptions,
    class_names: Sequence[str] | None,
    skipped: list[tuple[str, str]],
    complete: bool,
    adjusted: Counter | None = None,
    error: str | None = None,
) -> None:
    splits = {}
    for split, paths in _existing_shards(out_dir).items():
        shards = [_shard_stats(path) for path in paths]
        splits[split] = {
            "samples": sum(s["samples"] for s in shards),
            "frames": sum(s["frames"] for s in shards),
            "shards": shards,
        }
    manifest = {
        "format": "adaptok-webdataset-video",
        "version": 1,
        "complete": complete,
        "options": options.encoding_options(),
        "class_names": list(class_names or []),
        "splits": splits,
        "skipped": [{"source": source, "reason": reason} for source, reason in skipped],
        "adjusted": dict(sorted((adjusted or Counter()).items())),
    }
    if error is not None:
        manifest["error"] = error
    write_atomic(out_dir / MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode())


def _refuse_token_shards(out_dir: Path) -> None:
    """Stop before touching a folder that holds token annotation shards.

    Their names (``train-000000.tar``) are those of video shards: they would be taken for
    finished shards of an earlier run, their windows for written clips, and an annotation
    run's temporary files would be deleted as stale.

    Raises:
        ValueError: A shard of ``out_dir`` holds token annotations (names the shard).
    """
    for paths in _existing_shards(out_dir).values():
        for path in paths:
            try:
                tokens = is_token_shard(path)
            except (OSError, tarfile.TarError):
                continue  # an unreadable shard is reported where its keys are read
            if tokens:
                raise ValueError(
                    f"{path} is a token annotation shard (codes.npy / lengths.npy, no video): "
                    f"write video shards to a folder of their own, not {out_dir}"
                )


def _check_resumable(out_dir: Path, options: ShardOptions) -> None:
    manifest_path = out_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        return
    previous = json.loads(manifest_path.read_text()).get("options")
    if previous is not None and previous != options.encoding_options():
        raise ValueError(
            f"{out_dir} holds shards written with other options {previous}; "
            f"use a new output folder or delete it (now: {options.encoding_options()})"
        )


def write_shards(
    tasks: Sequence[ClipTask],
    out_dir: str | Path,
    options: ShardOptions,
    class_names: Sequence[str] | None = None,
    layout_skipped: Sequence[tuple[str, str]] = (),
    progress: bool = True,
) -> WriteSummary:
    """Write ``tasks`` into ``out_dir/{split}-{index:06d}.tar`` shards (resumable).

    Args:
        tasks: Samples in the order they should be written (deterministic: shard boundaries
            follow this order).
        out_dir: Output folder (created). Finished shards from an earlier run are kept and
            their keys skipped.
        options: Frame selection, resizing, encoding, shard limits, worker processes.
        class_names: Class names indexed by label, recorded in the manifest.
        layout_skipped: ``(source, reason)`` left out before writing (e.g. files listed by a
            split file but missing); reported in the summary and the manifest.
        progress: Show a tqdm progress bar.

    Returns:
        A :class:`WriteSummary`; also printed by the CLI.

    Raises:
        ValueError: The folder was written with different options.

    A task whose ``(split, key)`` repeats an earlier task's is not written; it is listed in
    ``skipped`` with the source it collides with.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    first_source: dict[tuple[str, str], str] = {}
    unique: list[ClipTask] = []
    collisions: list[tuple[str, str]] = []
    for task in tasks:
        other = first_source.get((task.split, task.key))
        if other is None:
            first_source[(task.split, task.key)] = task.source
            unique.append(task)
        else:
            collisions.append((task.source, f"duplicate sample key {task.key!r} (as {other})"))
    tasks = unique
    _check_resumable(out_dir, options)
    _refuse_token_shards(out_dir)
    for stale in [*out_dir.glob(".*.tar.tmp"), *out_dir.glob(f".{MANIFEST_NAME}.*")]:
        stale.unlink()

    summary = WriteSummary(skipped=[*layout_skipped, *collisions])
    sinks: dict[str, ShardSink] = {}
    done: set[tuple[str, str]] = set()
    for split, paths in _existing_shards(out_dir).items():
        for path in paths:
            done.update((split, key) for key in _read_shard_keys(path))
        last_index = int(_SHARD_PATTERN.match(paths[-1].name)["index"])
        sinks[split] = _sink(out_dir, split, last_index + 1, options)
    pending = [task for task in tasks if (task.split, task.key) not in done]
    for task in tasks:
        if (task.split, task.key) in done:
            summary.already_present[task.split] += 1
    _write_manifest(out_dir, options, class_names, [], complete=False)

    results = _results(pending, options)
    failure: OSError | None = None
    current: ShardSink | None = None
    try:
        bar = tqdm(results, total=len(pending), disable=not progress, desc="shards")
        for result in bar:
            if isinstance(result, _Skipped):
                summary.skipped.append((result.source, result.reason))
                continue
            for line in adjustment_warnings(result.adjustments):
                summary.warnings.append((result.source, line))
                tqdm.write(f"warning: {result.source}: {line}", file=sys.stderr)
            if result.split not in sinks:
                sinks[result.split] = _sink(out_dir, result.split, 0, options)
            sink = sinks[result.split]
            current = sink
            try:
                sink.add(result.key, result.files)
            except OSError as error:
                failure = error
                break
            summary.written[result.split] += 1
            summary.adjusted.update(result.adjustments.keys())
        if failure is None:
            for sink in sinks.values():
                current = sink
                try:
                    sink.close()
                except OSError as error:
                    failure = error
                    break
    finally:
        results.close()
        for sink in sinks.values():
            sink.abandon()
    if failure is not None:
        raise _write_failed(failure, current, out_dir, options, class_names, summary)
    for split, paths in _existing_shards(out_dir).items():
        summary.shards[split] = len(paths)
    _write_manifest(
        out_dir, options, class_names, summary.skipped, complete=True, adjusted=summary.adjusted
    )
    return summary


def _write_failed(
    error: OSError,
    sink: ShardSink | None,
    out_dir: Path,
    options: ShardOptions,
    class_names: Sequence[str] | None,
    summary: WriteSummary,
) -> ShardWriteError:
    """The one-line error of a failed shard write; the manifest lists what is complete."""
    finished = sum(len(paths) for paths in _existing_shards(out_dir).values())
    reason = error.strerror or str(error)
    where = str(out_dir)
    if sink is not None:
        where = f"{sink.temporary()} after {sink.bytes} bytes ({sink.count} samples) of it"
    message = (
        f"cannot write {where}: {reason} (errno {error.errno}); the unfinished "
        f"shard was removed, {finished} finished shard(s) are kept and listed in "
        f"{out_dir / MANIFEST_NAME}; free space (or raise the file-size limit) and re-run "
        "the same command to resume"
    )
    try:
        _write_manifest(
            out_dir,
            options,
            class_names,
            summary.skipped,
            complete=False,
            adjusted=summary.adjusted,
            error=message,
        )
    except OSError:
        message += " (the manifest could not be updated either)"
    return ShardWriteError(message)
