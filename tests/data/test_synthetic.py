"""Synthetic clips: deterministic per seed, and the metadata says exactly what was drawn."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from scipy.stats import spearmanr

from adaptok.data.synthetic import (
    CALM_TEXTURE_RANGE,
    COMPLEXITY_CLASSES,
    MAX_OBJECTS,
    MAX_TEXTURE_CYCLES,
    SyntheticSegment,
    complexity_label,
    frame_complexity,
    generate_clip,
    max_motion_speed,
    periodic_texture,
    synthetic_tasks,
)

SEEDS = range(24)


def _segments(metadata: dict) -> list[SyntheticSegment]:
    return [SyntheticSegment(**segment) for segment in metadata["segments"]]


def _frame_differences(frames: np.ndarray) -> np.ndarray:
    """Mean absolute change between consecutive frames, shape (T - 1,)."""
    return np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))


def test_same_seed_same_clip_other_seed_other_clip() -> None:
    first, again, other = (
        generate_clip(7, 16, 32, 32),
        generate_clip(7, 16, 32, 32),
        generate_clip(8, 16, 32, 32),
    )
    np.testing.assert_array_equal(first.frames, again.frames)
    assert first.metadata == again.metadata
    assert not np.array_equal(first.frames, other.frames)
    assert first.frames.shape == (16, 32, 32, 3) and first.frames.dtype == np.uint8


@pytest.mark.parametrize("seed", SEEDS)
def test_metadata_matches_the_drawn_parameters(seed: int) -> None:
    clip = generate_clip(seed, num_frames=32, height=48, width=40)
    meta = clip.metadata
    segments = _segments(meta)
    assert segments[0].start == 0 and segments[-1].end == 32
    assert all(a.end == b.start for a, b in zip(segments, segments[1:]))
    new_scene_starts = [b.start for a, b in zip(segments, segments[1:]) if b.scene != a.scene]
    assert meta["cut_positions"] == new_scene_starts
    assert [s.scene for s in segments] == sorted(s.scene for s in segments)
    for segment in segments:
        assert 0.0 <= segment.texture_level <= 1.0 and 0 <= segment.num_objects <= MAX_OBJECTS
        assert 0.0 <= segment.motion_speed <= max_motion_speed(48, 40)
    expected = frame_complexity(segments, meta["cut_positions"], max_motion_speed(48, 40))
    assert meta["frame_complexity"] == expected
    assert len(expected) == 32 and all(0.0 <= c <= 1.0 for c in expected)
    assert meta["label"] == complexity_label(expected)
    assert meta["class_name"] == COMPLEXITY_CLASSES[meta["label"]]


@pytest.mark.parametrize("seed", SEEDS)
def test_pixels_follow_the_drawn_motion_and_cuts(seed: int) -> None:
    clip = generate_clip(seed, num_frames=32, height=32, width=32)
    diffs = _frame_differences(clip.frames)
    cuts = set(clip.metadata["cut_positions"])
    for segment in _segments(clip.metadata):
        steps = [t for t in range(max(segment.start, 1), segment.end) if t not in cuts]
        if segment.motion_speed == 0.0:
            assert all(diffs[t - 1] == 0.0 for t in steps), "static segment changed"
        visible = segment.texture_level > 0.2 or segment.num_objects > 0
        if segment.motion_speed >= 1.5 and visible and len(steps) >= 2:
            assert np.mean([diffs[t - 1] for t in steps]) > 0.5, "moving segment looks static"
    for cut in cuts:
        assert diffs[cut - 1] > 3.0, "a scene cut changed too little"


def test_complexity_tracks_measured_change() -> None:
    scores, changes = [], []
    for seed in SEEDS:
        clip = generate_clip(seed, num_frames=32, height=32, width=32)
        scores.extend(clip.metadata["frame_complexity"][1:])
        changes.extend(_frame_differences(clip.frames))
    assert spearmanr(scores, changes).statistic > 0.6


def test_complexity_varies_within_and_across_clips() -> None:
    metas = [generate_clip(seed, num_frames=32, height=32, width=32).metadata for seed in range(48)]
    assert Counter(m["label"] for m in metas).keys() == set(range(len(COMPLEXITY_CLASSES)))
    varying = [m for m in metas if max(m["frame_complexity"]) - min(m["frame_complexity"]) > 0.2]
    assert len(varying) > len(metas) // 2
    speeds = [s["motion_speed"] for m in metas for s in m["segments"]]
    assert 0.0 in speeds and max(speeds) > 0.5 * max_motion_speed(32, 32)
    assert any(len(m["cut_positions"]) >= 2 for m in metas)
    assert any(max(s["num_objects"] for s in m["segments"]) >= 3 for m in metas)


def test_tasks_split_and_seed_deterministically() -> None:
    tasks = synthetic_tasks(8, seed=1, num_frames=8, val_fraction=0.25)
    assert [t.split for t in tasks].count("val") == 2
    assert [t.key for t in tasks] == [t.key for t in synthetic_tasks(8, seed=1, num_frames=8)]
    first = tasks[0].read(32)
    np.testing.assert_array_equal(
        first.frames, synthetic_tasks(8, seed=1, num_frames=8)[0].read(32).frames
    )
    assert first.frames.shape == (8, 32, 32, 3)
    assert tasks[0].source != synthetic_tasks(8, seed=2, num_frames=8)[0].source


def test_calm_and_busy_scenes() -> None:
    """Calm scenes are faint (not flat), hold at most one object and never move; busy ones are
    textured more."""
    calm_seen = busy_seen = mixed_clips = 0
    for seed in range(48):
        meta = generate_clip(seed, num_frames=32, height=32, width=32).metadata
        kinds = set()
        for segment in _segments(meta):
            calm = segment.texture_level < 0.2
            kinds.add(calm)
            if calm:
                calm_seen += 1
                low, high = CALM_TEXTURE_RANGE
                assert low <= segment.texture_level <= high
                assert segment.num_objects <= 1 and segment.motion_speed == 0.0
            else:
                busy_seen += 1
                assert segment.texture_level >= 0.2 and segment.num_objects >= 1
        mixed_clips += len(kinds) == 2
    assert calm_seen and busy_seen and mixed_clips >= 12


def test_complexity_varies_between_blocks_of_the_first_frames() -> None:
    """Evaluation reads the first 16 frames: their four 4-frame blocks must differ often."""
    spreads = []
    for seed in range(100):
        scores = np.array(generate_clip(seed, 32, 32, 32).metadata["frame_complexity"][:16])
        blocks = scores.reshape(4, 4).mean(1)
        spreads.append(blocks.max() - blocks.min())
    assert np.mean(np.array(spreads) > 0.2) > 0.3


def test_textures_are_band_limited() -> None:
    """No pixel noise: nearly all texture energy lies at <= MAX_TEXTURE_CYCLES cycles/frame."""
    for seed in range(6):
        texture = periodic_texture(np.random.default_rng(seed), 64, 64, 1.0).mean(-1)
        spectrum = np.abs(np.fft.fft2(texture - texture.mean())) ** 2
        freq = np.abs(np.fft.fftfreq(64, d=1 / 64))
        low = (freq[:, None] <= MAX_TEXTURE_CYCLES) & (freq[None, :] <= MAX_TEXTURE_CYCLES)
        assert spectrum[low].sum() > 0.95 * spectrum.sum()
