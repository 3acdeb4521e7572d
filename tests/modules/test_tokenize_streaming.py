"""``adaptok tokenize`` streams a video: frames are decoded as the windows need them.

Structural checks (no timings): the frame stream is pulled lazily, a window is encoded before
the rest of the video is decoded, only a window's worth of frames is held between windows,
and the streamed side-by-side video equals the one written from a result holding its frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from adaptok.data import video_io
from adaptok.data.video_io import decode_video, encode_video, sliding_windows
from adaptok.tokenize import SideBySideWriter, tokenize_video, write_side_by_side
from modules.loading import load_frozen_scorer
from modules.tokenize_cli import main

torch.set_num_threads(1)


def _clip(path: Path, frames: int) -> Path:
    """A lossless clip (40x48 at 10 fps) of a square moving over a noise texture."""
    rng = np.random.default_rng(1)
    video = np.repeat(rng.integers(0, 60, (1, 40, 48, 3), dtype=np.uint8), frames, axis=0)
    for t in range(frames):
        left = (3 * t) % 38
        video[t, 12:22, left : left + 10] = (230, 40, 40)
    path.write_bytes(encode_video(video, 10.0, crf=0))
    return path


@pytest.fixture(scope="module")
def scorer(scorer_ckpt: Path):
    return load_frozen_scorer(scorer_ckpt)


def test_sliding_windows_pull_lazily_and_hold_one_window() -> None:
    pulled: list[int] = []

    def stream():
        for index in range(40):
            pulled.append(index)
            yield index

    for stride in (1, 3, 8, 11):
        pulled.clear()
        windows = sliding_windows(stream(), 8, stride)
        for count, (start, items) in enumerate(windows):
            assert start == count * stride and items == list(range(start, start + 8))
            assert len(pulled) == start + 8  # not one item further than this window
        assert len(pulled) == 40  # the tail is read to learn the length, and dropped
    with pytest.raises(ValueError, match="must be >= 1"):
        next(sliding_windows(range(3), 0, 1))


def test_windows_are_encoded_while_the_video_is_still_being_decoded(
    scorer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """96 frames, windows of 8 every 8, batches of 2: 16 frames decoded per encode, not 96."""
    path = _clip(tmp_path / "long.mp4", 96)
    converted: list[int] = []
    original_to_rgb = video_io.VideoReader.to_rgb

    def counting_to_rgb(self, frame, output_size=None):
        converted.append(1)
        return original_to_rgb(self, frame, output_size)

    monkeypatch.setattr(video_io.VideoReader, "to_rgb", counting_to_rgb)
    seen_at_encode: list[int] = []
    original_encode = scorer.tokenizer.encode

    def counting_encode(video):
        seen_at_encode.append(len(converted))
        return original_encode(video)

    monkeypatch.setattr(scorer.tokenizer, "encode", counting_encode)
    result = tokenize_video(
        path,
        scorer.tokenizer,
        scorer.scorer,
        0.5,
        batch_size=2,
        keep_frames=False,
    )
    assert result.num_windows == 12 and result.inputs is None
    # The k-th batch is encoded once its 16 frames (plus the one frame the constant-rate
    # resampler holds) are converted; a whole-video decode would show 96 at every call.
    assert len(seen_at_encode) == 6
    for batch, count in enumerate(seen_at_encode):
        assert 16 * (batch + 1) <= count <= 16 * (batch + 1) + 1, seen_at_encode
    assert len(converted) == 96  # every frame converted exactly once


def test_streamed_side_by_side_equals_the_in_memory_one(
    scorer, scorer_ckpt: Path, tmp_path: Path
) -> None:
    path = _clip(tmp_path / "clip.mp4", 30)
    kwargs = dict(stride=6)
    writer = SideBySideWriter(tmp_path / "streamed.mp4", scale=2, codec="mpeg4")
    streamed = tokenize_video(
        path,
        scorer.tokenizer,
        scorer.scorer,
        0.5,
        keep_frames=False,
        on_window=writer.add,
        **kwargs,
    )
    writer.finish()
    held = tokenize_video(path, scorer.tokenizer, scorer.scorer, 0.5, **kwargs)
    assert np.array_equal(streamed.codes, held.codes)
    assert np.array_equal(streamed.lengths, held.lengths)
    assert streamed.window_starts.tolist() == [0, 6, 12, 18] and streamed.total_frames == 30
    in_memory = write_side_by_side(held, tmp_path / "held.mp4", 2, codec="mpeg4")
    assert (tmp_path / "streamed.mp4").read_bytes() == in_memory.read_bytes()
    video = decode_video(tmp_path / "streamed.mp4")
    assert video.shape == (26, 64, 128, 3)  # 6 + 6 + 6 + 8 frames shown, input | output
    # The CLI streams it the same way.
    out, mp4 = tmp_path / "t.npz", tmp_path / "cli.mp4"
    argv = [str(path), "--ckpt", str(scorer_ckpt), "--budget", "0.5", "--stride", "6"]
    assert main([*argv, "--out", str(out), "--reconstruct", str(mp4), "--quiet"]) == 0
    assert decode_video(mp4).shape == (26, 32, 64, 3)
