"""The annotation loader streams each video: windows are cut while it is decoded.

Structural checks (no timings, no memory readings): every converted frame is tracked, and
while a video is decoded no more than one window's span plus the stride of them is alive;
the first window comes out before the video's last frame is decoded; the windows equal
those cut from the whole decoded video; and problems found while decoding (a video shorter
than its metadata says, damage part-way) are counted without ending the pass.
"""

from __future__ import annotations

import io
import json
import tarfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from adaptok.data import video_io, windows
from adaptok.data.shard_stream import ShardLoader
from adaptok.data.skips import REPORT_KEY, merge_reports
from adaptok.data.video_io import decode_video, encode_video, short_side_shape
from datamodules import video_windows
from datamodules.video_windows import (
    VideoWindowsDataModule,
    VideoWindowsDataset,
    collate_windows,
    window_starts,
)

FRAMES, HEIGHT, WIDTH = 60, 32, 40
NUM_FRAMES, STRIDE, FRAME_STRIDE, RESOLUTION = 4, 3, 2, 24
SPAN = (NUM_FRAMES - 1) * FRAME_STRIDE + 1


def _video(frames: int = FRAMES) -> bytes:
    """A lossless clip (32x40) of a square moving over a noise texture."""
    rng = np.random.default_rng(3)
    video = np.repeat(rng.integers(0, 90, (1, HEIGHT, WIDTH, 3), dtype=np.uint8), frames, axis=0)
    for t in range(frames):
        left = (2 * t) % (WIDTH - 8)
        video[t, 10:18, left : left + 8] = (220, 50, 30 + 3 * t)
    return encode_video(video, 10.0, crf=0)


@pytest.fixture(scope="module")
def clip() -> bytes:
    return _video()


def _shard(path: Path, samples: dict[str, tuple[bytes, dict[str, Any]]]) -> str:
    """A video shard holding ``key -> (video, metadata)`` in that order."""
    with tarfile.open(path, "w") as archive:
        for key, (video, meta) in samples.items():
            for name, data in ((f"{key}.mp4", video), (f"{key}.json", json.dumps(meta).encode())):
                member = tarfile.TarInfo(name)
                member.size = len(data)
                archive.addfile(member, io.BytesIO(data))
    return str(path)


def _meta(frames: int = FRAMES) -> dict[str, Any]:
    return {"frames": frames, "height": HEIGHT, "width": WIDTH, "label": 1, "class_name": "c"}


def _dataset(shard: str, **overrides: Any) -> VideoWindowsDataset:
    settings: dict[str, Any] = {
        "num_frames": NUM_FRAMES,
        "stride": STRIDE,
        "frame_stride": FRAME_STRIDE,
        "resolution": RESOLUTION,
        **overrides,
    }
    return VideoWindowsDataset([shard], **settings)


class _Tracked(np.ndarray):
    """A converted frame; ``alive`` counts the instances (views and copies included) alive."""

    alive = 0

    def __array_finalize__(self, obj: Any) -> None:
        type(self).alive += 1

    def __del__(self) -> None:
        type(self).alive -= 1


class _TrackingReader(video_io.VideoReader):
    """A reader that counts decoded frames and notes the converted frames alive at each."""

    decoded = 0
    alive_at_decode: list[int] = []
    fail_after: int | None = None

    def frames(self) -> Iterator[tuple[float, av.VideoFrame]]:
        for index, (time, frame) in enumerate(super().frames()):
            type(self).alive_at_decode.append(_Tracked.alive)
            if index == self.fail_after:
                raise video_io.VideoDecodeError("damaged part-way (simulated)")
            type(self).decoded += 1
            yield time, frame

    def to_rgb(self, frame: av.VideoFrame, output_size: tuple[int, int] | None = None):
        return super().to_rgb(frame, output_size).view(_Tracked)


@pytest.fixture
def tracking(monkeypatch: pytest.MonkeyPatch) -> type[_TrackingReader]:
    """Every reader the loader opens (through the shared window decoding or ``video_io``)
    is a tracking one."""
    monkeypatch.setattr(_Tracked, "alive", 0)
    monkeypatch.setattr(_TrackingReader, "decoded", 0)
    monkeypatch.setattr(_TrackingReader, "alive_at_decode", [])
    monkeypatch.setattr(_TrackingReader, "fail_after", None)
    monkeypatch.setattr(video_io, "VideoReader", _TrackingReader)
    monkeypatch.setattr(windows, "VideoReader", _TrackingReader)
    monkeypatch.setattr(video_windows, "VideoReader", _TrackingReader, raising=False)
    return _TrackingReader


def _reference(video: bytes, starts: list[int]) -> dict[int, np.ndarray]:
    """Windows cut from the whole decoded video: ``start -> (C, T, H, W)`` uint8."""
    height, width = short_side_shape(HEIGHT, WIDTH, RESOLUTION)
    frames = decode_video(video, output_size=(height, width))
    top, left = (height - RESOLUTION) // 2, (width - RESOLUTION) // 2
    frames = frames[:, top : top + RESOLUTION, left : left + RESOLUTION]
    span = FRAME_STRIDE * NUM_FRAMES
    return {s: frames[s : s + span : FRAME_STRIDE].transpose(3, 0, 1, 2) for s in starts}


def test_frames_held_stay_within_a_window_whatever_the_length(
    tmp_path: Path, clip: bytes, tracking: type[_TrackingReader]
) -> None:
    shard = _shard(tmp_path / "train-000000.tar", {"long": (clip, _meta())})
    items = iter(_dataset(shard))
    first = next(items)
    decoded_at_first = tracking.decoded
    windows = [first, *items]
    starts = window_starts(FRAMES, NUM_FRAMES, STRIDE, FRAME_STRIDE)
    assert [w["window_start"] for w in windows] == starts
    assert tracking.decoded == starts[-1] + SPAN  # nothing after the last window is decoded
    # The first window is out long before the video is decoded (the stream holds one item
    # back, so the second window is cut by then).
    assert decoded_at_first <= STRIDE + SPAN < FRAMES
    # Never more than one window's span plus a stride of converted frames alive.
    assert len(tracking.alive_at_decode) == tracking.decoded
    assert max(tracking.alive_at_decode) <= SPAN + STRIDE
    reference = _reference(clip, starts)
    for window in windows:
        assert window["key"] == f"long_w{window['window_start']:05d}"
        assert window["label"] == 1 and window["class_name"] == "c"
        assert np.array_equal(window["video"].numpy(), reference[window["window_start"]])
        assert type(window["video"].numpy()) is np.ndarray  # no tracked frame is kept


def test_excluded_windows_are_neither_cut_nor_decoded_past(
    tmp_path: Path, clip: bytes, tracking: type[_TrackingReader]
) -> None:
    shard = _shard(tmp_path / "train-000000.tar", {"long": (clip, _meta())})
    starts = window_starts(FRAMES, NUM_FRAMES, STRIDE, FRAME_STRIDE)
    keep = starts[2:5]
    exclude = [f"long_w{s:05d}" for s in starts if s not in keep]
    windows = list(_dataset(shard, exclude=exclude))
    assert [w["window_start"] for w in windows] == keep
    assert tracking.decoded == keep[-1] + SPAN
    reference = _reference(clip, keep)
    for window in windows:
        assert np.array_equal(window["video"].numpy(), reference[window["window_start"]])


def test_a_video_shorter_than_its_metadata_keeps_the_windows_that_fit(
    tmp_path: Path, clip: bytes, tracking: type[_TrackingReader]
) -> None:
    samples = {
        "long": (clip, _meta(FRAMES + 20)),
        "short": (_video(SPAN - 1), _meta(FRAMES)),  # not one window fits after all
        "next": (clip, _meta()),
    }
    items = list(_dataset(_shard(tmp_path / "train-000000.tar", samples)))
    counts = merge_reports([item.get(REPORT_KEY) or {} for item in items])["skipped"]
    note = "metadata frame count above the decoded frames (windows re-planned)"
    assert counts == {note: 2, "too short": 1}
    starts = window_starts(FRAMES, NUM_FRAMES, STRIDE, FRAME_STRIDE)
    assert [(w["source_key"], w["window_start"]) for w in items] == [
        (key, s) for key in ("long", "next") for s in starts
    ]


def test_damage_part_way_keeps_earlier_windows_and_the_pass_goes_on(
    tmp_path: Path, clip: bytes, tracking: type[_TrackingReader]
) -> None:
    samples = {"first": (clip, _meta()), "second": (clip, _meta())}
    dataset = _dataset(_shard(tmp_path / "train-000000.tar", samples))
    tracking.fail_after = 20  # every video breaks at its 21st frame
    items = list(dataset)
    counts = merge_reports([item.get(REPORT_KEY) or {} for item in items])["skipped"]
    assert counts == {"corrupt video": 2}
    before = window_starts(20, NUM_FRAMES, STRIDE, FRAME_STRIDE)
    assert [(w["source_key"], w["window_start"]) for w in items] == [
        (key, s) for key in ("first", "second") for s in before
    ]


def _predict_batches(shard: str, batch_size: int) -> tuple[VideoWindowsDataModule, list[Any]]:
    """The windows datamodule of ``shard`` and its predict batches as the module gets them.

    Checks that the loader is the shared one and that the pass raises no warning.
    """
    data = VideoWindowsDataModule(
        shard,
        num_frames=NUM_FRAMES,
        stride=STRIDE,
        frame_stride=FRAME_STRIDE,
        resolution=RESOLUTION,
        batch_size=batch_size,
        num_workers=0,
    )
    loader = data.predict_dataloader()
    assert isinstance(loader, ShardLoader)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = [data.on_before_batch_transfer(batch, 0) for batch in loader]
    assert [str(w.message) for w in caught if issubclass(w.category, UserWarning)] == []
    return data, batches


def test_the_predict_loader_hands_on_every_batch_with_its_counts(
    tmp_path: Path, clip: bytes
) -> None:
    """The shared loader gives the plain DataLoader's batches, report-only ones included."""
    corrupt = (b"not a video at all", {"label": 0})
    mixed = _shard(tmp_path / "mixed-000000.tar", {"long": (clip, _meta()), "bad": corrupt})
    data, batches = _predict_batches(mixed, batch_size=4)
    reference = list(DataLoader(_dataset(mixed), batch_size=4, collate_fn=collate_windows))
    assert len(batches) == len(reference) > 1
    for batch, plain in zip(batches, reference, strict=True):
        assert batch["key"] == plain["key"]
        assert torch.equal(batch["window_start"], plain["window_start"])
        assert torch.equal(batch["video"], plain["video"])
        assert batch["skipped"] == plain["skipped"]["skipped"]
    assert batches[-1]["skipped"] == {"corrupt video": 1}
    assert data.skip_counts == {"corrupt video": 1}

    short = (clip, _meta(SPAN - 1))
    only_bad = _shard(tmp_path / "bad-000000.tar", {"bad": corrupt, "short": short})
    data, batches = _predict_batches(only_bad, batch_size=4)
    assert len(batches) == 1  # report-only: no window, the counts alone
    assert batches[0]["video"].numel() == 0 and batches[0]["key"] == []
    assert batches[0]["skipped"] == {"corrupt video": 1, "too short": 1}
    assert data.skip_counts == {"corrupt video": 1, "too short": 1}


def test_a_predict_pass_cut_short_adds_its_counts_without_a_warning(
    tmp_path: Path, clip: bytes
) -> None:
    """A consumer that stops early and keeps the iterator (``limit_predict_batches``): the
    counts so far are in ``skip_counts``, and neither teardown (the ledger's flush) nor
    closing the pass later warns, as the loader does not (``warn_skips=False``)."""
    corrupt = (b"not a video at all", {"label": 0})
    shard = _shard(tmp_path / "mixed-000000.tar", {"bad": corrupt, "long": (clip, _meta())})
    data = VideoWindowsDataModule(
        shard,
        num_frames=NUM_FRAMES,
        stride=STRIDE,
        frame_stride=FRAME_STRIDE,
        resolution=RESOLUTION,
        batch_size=1,
        num_workers=0,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = iter(data.predict_dataloader())
        first = [next(batches) for _ in range(2)]  # of the video's 18 windows
        data.teardown("predict")
        batches.close()  # the pass ends cut short after the flush
    assert [str(w.message) for w in caught if issubclass(w.category, UserWarning)] == []
    assert [batch["skipped"] for batch in first] == [{"corrupt video": 1}, {}]
    assert data.skip_counts == {"corrupt video": 1}
