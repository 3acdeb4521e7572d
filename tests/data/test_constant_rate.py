"""Resampling to a constant rate: a source of duration D at N fps gives round(D * N) frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adaptok.data.video_io import ConstantRate, frames_at_rate
from tests.data.test_field_inputs_2 import folder, make_video, metas


def _streamed(times: np.ndarray, fps: float) -> list[int]:
    """Output frames per source frame, one frame at a time (as the writer and tokenize)."""
    grid = ConstantRate(fps)
    return [grid.push(t) for t in times][1:] + [grid.finish()]


@pytest.mark.parametrize(
    ("frames", "rate", "fps", "expected"),
    [
        (30, 30.0, 10.0, 10),  # 1 s
        (26, 25.0, 10.0, 10),  # 1.04 s: 10.4 output frames
        (31, 30.0, 10.0, 10),  # 1.033 s
        (32, 30.0, 20.0, 21),  # 1.067 s: 21.3
        (13, 12.0, 10.0, 11),  # 1.083 s: 10.8
        (8, 30.0, 5.0, 1),  # 0.267 s: 1.33
        (25, 25.0, 25.0, 25),  # its own rate: every frame once
        (1, 30.0, 10.0, 1),  # a single frame still gives one
    ],
)
def test_an_even_source_gives_its_duration_in_output_frames(
    frames: int, rate: float, fps: float, expected: int
) -> None:
    times = np.arange(frames) / rate
    # the writer's slack (half a source frame) and the default (half an output interval)
    for slack in (0.5 / rate, None):
        indices = frames_at_rate(times, fps, slack)
        assert len(indices) == expected, (slack, indices)
        assert np.all(np.diff(indices) >= 0)
    assert sum(_streamed(times, fps)) == expected


def test_the_last_frame_lasts_as_long_as_the_interval_before_it() -> None:
    """A variable-rate source ends at 5 fps: it lasts 2.86 s, 14.3 frames at 5 fps."""
    times = np.array([0.033 * i for i in range(20)] + [0.86 + 0.2 * i for i in range(10)])
    assert len(frames_at_rate(times, 5.0, 0.5 * float(np.median(np.diff(times))))) == 14
    grid = ConstantRate(25.0)
    counts = [grid.push(t) for t in np.arange(10) / 25][1:] + [grid.finish()]
    assert counts == [1] * 10 and grid.length == 10 and grid.repeated == grid.dropped == 0


def test_adaptok_shards_fps_gives_no_extra_trailing_frame(tmp_path: Path) -> None:
    """26 frames at 25 fps (1.04 s) written at 10 fps: 10 frames, not 11."""
    frames = np.zeros((26, 32, 32, 3), np.uint8)
    frames[:] = np.arange(26, dtype=np.uint8)[:, None, None, None] * 9
    make_video(tmp_path / "in/train/a/clip.mp4", frames, fps=25)
    assert folder(tmp_path / "in", tmp_path / "out", "--fps", "10") == 0
    (meta,) = metas(tmp_path / "out").values()
    assert meta["fps"] == 10.0 and meta["frames"] == 10
    assert meta["source_frames"] == 26 and meta["source_frame_indices"][-1] == 23  # at 0.92 s
