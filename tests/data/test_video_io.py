"""PyAV helpers: round trips, frame selection, resizing and clear errors on bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adaptok.data.synthetic import generate_clip
from adaptok.data.video_io import (
    VideoDecodeError,
    decode_video,
    encode_video,
    probe_video,
    resize_frames,
    short_side_shape,
)


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return generate_clip(seed=5, num_frames=16, height=32, width=32).frames


@pytest.fixture(scope="module")
def encoded(clip: np.ndarray) -> bytes:
    return encode_video(clip, fps=12.0, crf=18)


def test_round_trip_keeps_shape_rate_and_content(clip: np.ndarray, encoded: bytes) -> None:
    decoded = decode_video(encoded)
    assert decoded.shape == (16, 32, 32, 3) and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(float) - clip).mean() < 12.0
    info = probe_video(encoded)
    assert (info.frames, info.height, info.width) == (16, 32, 32)
    assert info.fps == pytest.approx(12.0)


def test_decode_from_path_equals_decode_from_bytes(encoded: bytes, tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(encoded)
    np.testing.assert_array_equal(decode_video(path), decode_video(encoded))
    assert probe_video(path) == probe_video(encoded)


def test_frame_indices_select_and_repeat(encoded: bytes) -> None:
    full = decode_video(encoded)
    picked = decode_video(encoded, [0, 0, 5, 15])
    np.testing.assert_array_equal(picked, full[[0, 0, 5, 15]])


def test_output_size_resizes(encoded: bytes) -> None:
    assert decode_video(encoded, [1, 2], output_size=(20, 30)).shape == (2, 20, 30, 3)


def test_encode_crops_odd_sizes(clip: np.ndarray) -> None:
    odd = np.ascontiguousarray(clip[:4, :31, :29])
    assert decode_video(encode_video(odd, fps=25.0)).shape == (4, 30, 28, 3)


def test_lower_crf_gives_larger_files(clip: np.ndarray) -> None:
    assert len(encode_video(clip, 25.0, crf=15)) > len(encode_video(clip, 25.0, crf=35))


def test_short_side_shape() -> None:
    assert short_side_shape(144, 176, 64) == (64, 78)
    assert short_side_shape(272, 640, 64, even=True) == (64, 152)
    assert short_side_shape(640, 272, 63) == (148, 63)
    assert short_side_shape(99, 101, 51, even=True) == (52, 52)


def test_resize_frames(clip: np.ndarray) -> None:
    assert resize_frames(clip[:3], 16, 24).shape == (3, 16, 24, 3)
    assert resize_frames(clip, 32, 32) is clip


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[: len(b) // 2], id="truncated-half"),
        pytest.param(lambda b: b[: len(b) - len(b) // 8], id="truncated-tail"),
        pytest.param(lambda b: b"not a video" * 50, id="garbage"),
        pytest.param(lambda b: b"", id="empty"),
    ],
)
def test_corrupt_input_raises_video_decode_error(encoded: bytes, damage) -> None:
    with pytest.raises(VideoDecodeError):
        decode_video(damage(encoded))


def test_frame_past_the_end_is_a_decode_error(encoded: bytes) -> None:
    with pytest.raises(VideoDecodeError, match="ends after 16 frames"):
        decode_video(encoded, [3, 16])


def test_bad_indices_and_missing_file(encoded: bytes, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        decode_video(encoded, [4, 2])
    with pytest.raises(FileNotFoundError):
        decode_video(tmp_path / "missing.mp4")
