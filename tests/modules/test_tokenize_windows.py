"""``adaptok tokenize`` and the annotation loader cut the same windows from the same video.

Both read videos through :class:`adaptok.data.windows.WindowDecoder`; these tests pin that a
file given to ``adaptok tokenize`` and the same bytes in a shard read by
``VideoWindowsDataModule`` give identical windows (starts and pixels), for overlapping and
gapped strides, landscape and portrait sources and a source already at the window size, and
that the side-by-side pictures and 8-bit frames are said once.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from adaptok.data.pictures import SideBySideFrames, video_to_uint8
from adaptok.data.video_io import decode_video, encode_video, short_side_shape
from adaptok.data.windows import SquareCrop, WindowDecoder, window_starts
from adaptok.tokenize import TokenizedVideo, WindowSource, read_windows, side_by_side_frames
from callbacks.media import encode_gif, side_by_side
from datamodules.video_windows import VideoWindowsDataModule, VideoWindowsDataset

NUM_FRAMES, SIZE = 4, 24


def _clip(frames: int, height: int, width: int) -> bytes:
    """A lossless clip of a square moving over a noise texture."""
    rng = np.random.default_rng(height * 1000 + width)
    video = np.repeat(rng.integers(0, 90, (1, height, width, 3), dtype=np.uint8), frames, axis=0)
    for t in range(frames):
        top, left = (3 * t) % (height - 6), (2 * t) % (width - 6)
        video[t, top : top + 6, left : left + 6] = (220, 50, 30 + 5 * t)
    return encode_video(video, 10.0, crf=0)


def _shard(path: Path, key: str, video: bytes, frames: int, height: int, width: int) -> str:
    """A video shard with one sample (as ``adaptok-shards`` writes it: mp4 + json)."""
    meta = {"frames": frames, "height": height, "width": width, "label": 0, "class_name": "c"}
    with tarfile.open(path, "w") as archive:
        for name, data in ((f"{key}.mp4", video), (f"{key}.json", json.dumps(meta).encode())):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return str(path)


@pytest.mark.parametrize(
    ("frames", "height", "width", "stride"),
    [
        (21, 32, 40, 2),  # overlapping windows, landscape, resized
        (23, 40, 30, 6),  # gaps between windows, portrait
        (13, 24, 36, 4),  # short side already at the window size: not resized
    ],
)
def test_tokenize_and_annotation_windows_are_identical(
    tmp_path: Path, frames: int, height: int, width: int, stride: int
) -> None:
    video = _clip(frames, height, width)
    path = tmp_path / "clip.mp4"
    path.write_bytes(video)
    tokenize = [
        (start, window) for start, window in WindowSource(path, NUM_FRAMES, SIZE, stride).windows()
    ]
    shard = _shard(tmp_path / "train-000000.tar", "clip", video, frames, height, width)
    dataset = VideoWindowsDataset(
        [shard], num_frames=NUM_FRAMES, stride=stride, frame_stride=1, resolution=SIZE
    )
    annotate = [(item["window_start"], item["video"].numpy()) for item in dataset]
    expected = window_starts(frames, NUM_FRAMES, stride)
    assert [start for start, _ in tokenize] == [start for start, _ in annotate] == expected
    for (_, ours), (_, theirs) in zip(tokenize, annotate, strict=True):
        assert ours.shape == (NUM_FRAMES, SIZE, SIZE, 3) and ours.dtype == np.uint8
        assert np.array_equal(ours, theirs.transpose(1, 2, 3, 0))
    # Both equal the windows cut from the whole decoded video (short side resized, centre).
    resized = short_side_shape(height, width, SIZE)
    whole = decode_video(video, output_size=resized)
    top, left = (resized[0] - SIZE) // 2, (resized[1] - SIZE) // 2
    whole = whole[:, top : top + SIZE, left : left + SIZE]
    for start, window in tokenize:
        assert np.array_equal(window, whole[start : start + NUM_FRAMES])
    # The in-memory reading takes the same frames.
    held = read_windows(path, NUM_FRAMES, SIZE, stride=stride)
    assert held.starts.tolist() == expected
    assert all(np.array_equal(held.window(i), w) for i, (_, w) in enumerate(tokenize))


def test_the_windows_datamodule_batches_the_same_windows(tmp_path: Path) -> None:
    video = _clip(17, 32, 40)
    path = tmp_path / "clip.mp4"
    path.write_bytes(video)
    shard = _shard(tmp_path / "train-000000.tar", "clip", video, 17, 32, 40)
    data = VideoWindowsDataModule(
        shard, num_frames=NUM_FRAMES, stride=3, resolution=SIZE, batch_size=2, num_workers=0
    )
    data.setup("predict")
    batches = [data.on_before_batch_transfer(b, 0) for b in data.predict_dataloader()]
    starts = [int(s) for b in batches for s in b["window_start"]]
    video_batches = torch.cat([b["video"] for b in batches])
    windows = dict(WindowSource(path, NUM_FRAMES, SIZE, 3).windows())
    assert starts == sorted(windows) == window_starts(17, NUM_FRAMES, 3)
    for start, clip in zip(starts, video_batches, strict=True):
        reference = torch.from_numpy(windows[start]).permute(3, 0, 1, 2).float().div(255.0)
        assert torch.equal(clip, reference)
    assert not data.skip_counts
    assert data.expected_windows() == len(starts)


def test_decoder_skips_windows_and_stops_after_the_last(tmp_path: Path) -> None:
    video = _clip(30, 32, 40)
    decoder = WindowDecoder(video, NUM_FRAMES, SIZE, (32, 40), stride=3, frame_stride=2)
    every = dict(decoder.windows())
    assert list(every) == window_starts(30, NUM_FRAMES, 3, 2) and decoder.decoded == 30
    chosen = dict(decoder.windows(skip={0, 6}, last=12))
    assert list(chosen) == [3, 9, 12]
    assert decoder.decoded == 12 + (NUM_FRAMES - 1) * 2 + 1  # nothing after the last window
    for start, frames in chosen.items():
        assert all(np.array_equal(a, b) for a, b in zip(frames, every[start], strict=True))
    assert SquareCrop.centred(24, 36, SIZE) == SquareCrop(SIZE, None, (0, 6))
    with pytest.raises(ValueError, match="stride must be >= 1"):
        WindowDecoder(video, NUM_FRAMES, SIZE, (32, 40), stride=0)
    with pytest.raises(ValueError, match="constant_rate"):
        WindowDecoder(video, NUM_FRAMES, SIZE, (32, 40), fps=5.0)


def test_side_by_side_pictures_show_each_window_up_to_the_next_start() -> None:
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, 256, (3, 4, 2, 2, 3), dtype=np.uint8)
    recons = rng.integers(0, 256, (3, 4, 2, 2, 3), dtype=np.uint8)
    result = TokenizedVideo(
        codes=np.zeros((3, 1, 1), np.uint16),
        lengths=np.ones((3, 1), np.int16),
        window_starts=np.array([0, 3, 5]),
        budget=1.0,
        mode="per_clip",
        candidate_lengths=np.array([1]),
        source="x",
        fps=10.0,
        checkpoint="",
        threshold=float("nan"),
        solver="fast",
        psnr=np.zeros(3),
        ssim=np.zeros(3),
        tokens_per_block=1,
        num_frames=4,
        image_size=2,
        total_frames=9,
        inputs=inputs,
        reconstruction=recons,
    )
    frames = side_by_side_frames(result, scale=2)
    shown = [(0, t) for t in range(3)] + [(1, t) for t in range(2)] + [(2, t) for t in range(4)]
    assert frames.shape == (9, 4, 8, 3)
    for picture, (window, t) in zip(frames, shown, strict=True):
        pair = np.concatenate([inputs[window, t], recons[window, t]], axis=1)
        assert np.array_equal(picture, pair.repeat(2, axis=0).repeat(2, axis=1))
    layout = SideBySideFrames()
    assert list(layout.add(0, inputs[0], recons[0])) == []  # held until the next start
    assert len(list(layout.add(2, inputs[1], recons[1]))) == 2
    assert len(list(layout.finish())) == 4 and list(layout.finish()) == []


def test_one_uint8_conversion_and_multi_panel_media() -> None:
    video = torch.linspace(-0.2, 1.2, 2 * 3 * 2 * 2 * 5).view(2, 3, 2, 2, 5)
    frames = video_to_uint8(video)
    expected = (video.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 4, 1).numpy()
    assert frames.shape == (2, 2, 2, 5, 3) and np.array_equal(frames, expected)
    gif, height, width = encode_gif(video)
    assert (height, width) == (4, 5) and gif.startswith(b"GIF")
    panels = side_by_side(video, video, video, gap=0)
    assert torch.equal(panels, torch.cat([video] * 3, dim=-1))
    assert side_by_side(video, 1 - video).shape == (2, 3, 2, 2, 12)
    with pytest.raises(ValueError, match="at least two"):
        side_by_side(video)
