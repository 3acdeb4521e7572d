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
import io
import json
import multiprocessing
import re
import tarfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from adaptok.cache import write_atomic
from adaptok.data.video_io import (
    decode_video_timed,
    encode_video,
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
_TAR_BLOCK = 512


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
    """

    frames: np.ndarray
    fps: float
    metadata: dict = field(default_factory=dict)
    times: np.ndarray | None = None
    source_size: tuple[int, int] | None = None
    rotation: int = 0


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
            evenly timed (a frame repeats where the source has a longer gap). Sources with
            an even rate at or below ``fps`` are kept as they are.
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
        return {name: getattr(self, name) for name in names}


@dataclass
class WriteSummary:
    """What :func:`write_shards` did.

    Attributes:
        written: New samples per split.
        already_present: Samples per split found in finished shards of an earlier run.
        shards: Shard count per split after the run.
        skipped: ``(source, reason)`` of every task that could not be written.
    """

    written: Counter = field(default_factory=Counter)
    already_present: Counter = field(default_factory=Counter)
    shards: Counter = field(default_factory=Counter)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def format(self) -> str:
        """Human-readable report."""
        lines = ["split      written  already  shards"]
        for split in sorted(set(self.written) | set(self.already_present) | set(self.shards)):
            lines.append(
                f"{split:<10} {self.written[split]:>7}  {self.already_present[split]:>7}"
                f"  {self.shards[split]:>6}"
            )
        lines.append(f"skipped: {len(self.skipped)}")
        lines.extend(f"  {source}: {reason}" for source, reason in self.skipped)
        return "\n".join(lines)


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


def read_video_file(path: Path, size: int | None) -> RawClip:
    """Reader for a video file: every frame, short side resized to ``size`` when given.

    Args:
        path: The video file.
        size: Short side after resizing (even sizes), or ``None``.

    Returns:
        The decoded :class:`RawClip`.
    """
    info = probe_video(path)
    shape = short_side_shape(info.height, info.width, size, even=True) if size else None
    decoded = decode_video_timed(path, output_size=shape)
    return RawClip(
        frames=decoded.frames,
        fps=info.fps,
        times=decoded.times,
        source_size=(info.height, info.width),
        rotation=decoded.rotation,
    )


def _is_even(times: np.ndarray, fps: float) -> bool:
    """Whether frame times follow a constant rate ``fps`` (within a quarter frame)."""
    if len(times) < 2 or fps <= 0:
        return True
    return bool(np.abs(np.diff(times) - 1.0 / fps).max() < 0.25 / fps)


def _select_frames(raw: RawClip, options: ShardOptions) -> tuple[np.ndarray, float]:
    """Indices of the source frames to keep and the resulting frame rate.

    With ``options.fps``, output frame ``k`` is the source frame on screen at time ``k / fps``
    (the last frame whose presentation time is at or before it, half a source frame of
    slack), for every ``k / fps`` up to the last frame's time.
    """
    count = len(raw.frames)
    times = raw.times if raw.times is not None and len(raw.times) == count else None
    if options.fps is not None:
        even = times is None or _is_even(times, raw.fps)
        if not even or raw.fps > options.fps:
            if times is None:
                times = np.arange(count) / raw.fps
            targets = np.arange(0.0, times[-1] + 1e-9, 1.0 / options.fps)
            slack = 0.5 * float(np.median(np.diff(times))) if count > 1 else 0.0
            indices = np.searchsorted(times, targets + slack, side="right") - 1
            return np.clip(indices, 0, count - 1), options.fps
    stride = options.frame_stride
    return np.arange(0, count, stride), raw.fps / stride


@dataclass(frozen=True)
class _Prepared:
    key: str
    split: str
    files: dict[str, bytes]


@dataclass(frozen=True)
class _Skipped:
    source: str
    reason: str


def _prepare(task: ClipTask, options: ShardOptions) -> _Prepared | _Skipped:
    """Turn a task into the files of one sample (runs in a worker process)."""
    try:
        meta: dict = {"label": task.label, "class_name": task.class_name, "source": task.source}
        if task.relative_path is not None:
            meta["relative_path"] = task.relative_path
        if options.keep_original:
            if task.path is None:
                raise ValueError("keep_original needs a file source")
            data = Path(task.path).read_bytes()
            info = probe_video(data)
            if min(info.height, info.width) < options.min_side:
                raise ValueError(
                    f"frames of {info.height}x{info.width} are below min_side={options.min_side}"
                )
            meta.update(fps=info.fps, frames=info.frames, height=info.height, width=info.width)
            if info.rotation:
                meta["source_rotation"] = info.rotation
            extension = Path(task.path).suffix.lower().lstrip(".") or "mp4"
            video = {extension: data}
        else:
            raw = task.read(options.size)
            height, width = raw.source_size or raw.frames.shape[1:3]
            if min(height, width) < options.min_side:
                raise ValueError(
                    f"frames of {height}x{width} are below min_side={options.min_side} "
                    "(the loader would blow them up)"
                )
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
            video = {"mp4": data}
        files = {"json": json.dumps(meta, sort_keys=True).encode(), **video}
        return _Prepared(task.key, task.split, files)
    except Exception as error:  # any failure of one source is reported, never fatal
        return _Skipped(task.source, f"{type(error).__name__}: {error}")


def _read_shard_keys(path: Path) -> list[str]:
    """Keys of the samples in a finished shard (from the member names, payloads unread)."""
    with tarfile.open(path, "r:") as archive:
        return sorted({name.split(".", 1)[0] for name in archive.getnames()})


def _existing_shards(out_dir: Path) -> dict[str, list[Path]]:
    shards: dict[str, list[Path]] = {}
    for path in sorted(out_dir.glob("*.tar")):
        match = _SHARD_PATTERN.match(path.name)
        if match:
            shards.setdefault(match["split"], []).append(path)
    return shards


class _ShardSink:
    """Appends samples of one split to the current temporary shard; renames it when full."""

    def __init__(self, out_dir: Path, split: str, next_index: int, options: ShardOptions) -> None:
        self.out_dir, self.split, self.index, self.options = out_dir, split, next_index, options
        self.archive: tarfile.TarFile | None = None
        self.count = 0
        self.bytes = 0

    def _temporary(self) -> Path:
        return self.out_dir / f".{shard_name(self.split, self.index)}.tmp"

    def add(self, sample: _Prepared) -> None:
        size = sum(
            _TAR_BLOCK + -(-len(v) // _TAR_BLOCK) * _TAR_BLOCK for v in sample.files.values()
        )
        full = self.count >= self.options.shard_samples
        too_big = self.bytes + size > self.options.shard_mb * 1e6
        if self.archive is not None and (full or too_big):
            self.close()
        if self.archive is None:
            # Stays open across calls; closed by close() or abandon().
            self.archive = tarfile.open(  # noqa: SIM115
                self._temporary(), "w:", format=tarfile.PAX_FORMAT
            )
        for extension in sorted(sample.files):
            payload = sample.files[extension]
            info = tarfile.TarInfo(f"{sample.key}.{extension}")
            info.size, info.mode, info.mtime = len(payload), 0o444, 0
            self.archive.addfile(info, io.BytesIO(payload))
        self.count += 1
        self.bytes += size

    def close(self) -> None:
        """Finish the current shard: close it and give it its final name."""
        if self.archive is None:
            return
        self.archive.close()
        self._temporary().replace(self.out_dir / shard_name(self.split, self.index))
        self.archive, self.count, self.bytes = None, 0, 0
        self.index += 1

    def abandon(self) -> None:
        """Drop an unfinished shard (its samples are written again by the next run)."""
        if self.archive is not None:
            self.archive.close()
            self._temporary().unlink(missing_ok=True)
            self.archive = None


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
    }
    write_atomic(out_dir / MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode())


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
    for stale in out_dir.glob(".*.tar.tmp"):
        stale.unlink()

    summary = WriteSummary(skipped=[*layout_skipped, *collisions])
    sinks: dict[str, _ShardSink] = {}
    done: set[tuple[str, str]] = set()
    for split, paths in _existing_shards(out_dir).items():
        for path in paths:
            done.update((split, key) for key in _read_shard_keys(path))
        last_index = int(_SHARD_PATTERN.match(paths[-1].name)["index"])
        sinks[split] = _ShardSink(out_dir, split, last_index + 1, options)
    pending = [task for task in tasks if (task.split, task.key) not in done]
    for task in tasks:
        if (task.split, task.key) in done:
            summary.already_present[task.split] += 1
    _write_manifest(out_dir, options, class_names, [], complete=False)

    results = _results(pending, options)
    try:
        for result in tqdm(results, total=len(pending), disable=not progress, desc="shards"):
            if isinstance(result, _Skipped):
                summary.skipped.append((result.source, result.reason))
                continue
            if result.split not in sinks:
                sinks[result.split] = _ShardSink(out_dir, result.split, 0, options)
            sinks[result.split].add(result)
            summary.written[result.split] += 1
        for sink in sinks.values():
            sink.close()
    finally:
        results.close()
        for sink in sinks.values():
            sink.abandon()
    for split, paths in _existing_shards(out_dir).items():
        summary.shards[split] = len(paths)
    _write_manifest(out_dir, options, class_names, summary.skipped, complete=True)
    return summary
