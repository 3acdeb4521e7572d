"""The real windows of the generation FVD protocol: non-overlapping windows drawn by a seed.

The official sampler (VisionXLab/AdapTok ``sample.py`` with ``datasets/video_dataset.py``,
``use_all_frames=True``) lists every non-overlapping ``T``-frame window of every video (starts
``0, T, 2T, ...`` while the window fits) and draws ``num_samples`` distinct windows uniformly
with ``random.Random(dataset_split_seed).sample`` (seed 42; 10,000 windows of the UCF-101
train list, 50,000 of the Kinetics-600 validation list). Reading only the first ``T`` frames
of each video instead gives at most one window per video (9,537 on UCF-101 train; K600 val
has fewer videos than 50,000) and a different real distribution.

Here the windows are listed in a canonical order (videos sorted by key, then start), so the
draw depends only on the videos, ``T``, the count and the seed, not on shard order, ranks or
workers. The official list follows its CSV order, so the same seed picks other windows.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

__all__ = ["draw_windows", "nonoverlapping_windows"]


def nonoverlapping_windows(
    frame_counts: Mapping[str, int], num_frames: int
) -> list[tuple[str, int]]:
    """Every non-overlapping window of every video, in canonical order.

    Args:
        frame_counts: Video key -> number of frames.
        num_frames: Frames per window ``T`` (>= 1).

    Returns:
        ``(key, start)`` pairs, keys sorted, starts ``0, T, 2T, ...`` with ``start + T <=
        frames``; videos shorter than ``T`` give none.

    Raises:
        ValueError: ``num_frames < 1``.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    return [
        (key, start)
        for key in sorted(frame_counts)
        for start in range(0, int(frame_counts[key]) - num_frames + 1, num_frames)
    ]


def draw_windows(
    frame_counts: Mapping[str, int], num_frames: int, num_samples: int, seed: int = 42
) -> list[tuple[str, int]]:
    """``num_samples`` distinct non-overlapping windows drawn uniformly with ``seed``.

    Args:
        frame_counts: Video key -> number of frames.
        num_frames: Frames per window ``T``.
        num_samples: Windows to draw (without replacement).
        seed: Seed of ``random.Random(seed).sample`` (official ``dataset_split_seed`` 42).

    Returns:
        ``(key, start)`` pairs in draw order.

    Raises:
        ValueError: ``num_samples < 1`` or more windows asked than the videos hold (the
            message gives both counts).
    """
    windows = nonoverlapping_windows(frame_counts, num_frames)
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if num_samples > len(windows):
        raise ValueError(
            f"asked for {num_samples} windows, but the {len(frame_counts)} videos hold only "
            f"{len(windows)} non-overlapping {num_frames}-frame windows: lower num_samples or "
            "add videos"
        )
    picks = random.Random(seed).sample(range(len(windows)), num_samples)
    return [windows[i] for i in picks]
