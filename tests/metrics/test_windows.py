"""The gFVD real-window draw: non-overlapping windows, a fixed seed, exact counts."""

from __future__ import annotations

import random

import pytest

from adaptok.metrics.windows import draw_windows, nonoverlapping_windows


def test_windows_do_not_overlap_and_fit_the_video() -> None:
    counts = {"b": 40, "a": 16, "c": 15, "d": 32}
    assert nonoverlapping_windows(counts, 16) == [
        ("a", 0),
        ("b", 0),
        ("b", 16),  # 32..39 does not fit a third window
        ("d", 0),
        ("d", 16),
    ]


def test_draw_is_seeded_distinct_and_independent_of_listing_order() -> None:
    counts = {f"video{i:03d}": 16 * (1 + i % 7) + i % 5 for i in range(100)}
    shuffled = dict(random.Random(3).sample(sorted(counts.items()), len(counts)))
    drawn = draw_windows(counts, 16, 150, seed=42)
    assert drawn == draw_windows(shuffled, 16, 150, seed=42)  # same seed, same windows
    assert len(set(drawn)) == 150  # without replacement
    assert drawn != draw_windows(counts, 16, 150, seed=43)
    # the official draw: random.Random(seed).sample over the window list
    every = nonoverlapping_windows(counts, 16)
    expected = [every[i] for i in random.Random(42).sample(range(len(every)), 150)]
    assert drawn == expected
    # far more windows than videos: the first-16-frames protocol could give at most 100
    assert len(every) > 300 and len({key for key, _ in drawn}) < 100


def test_more_windows_than_the_videos_hold_is_refused() -> None:
    with pytest.raises(ValueError, match="hold only 3 non-overlapping 16-frame windows"):
        draw_windows({"a": 48, "b": 10}, 16, 4)
    with pytest.raises(ValueError, match="num_samples"):
        draw_windows({"a": 48}, 16, 0)
