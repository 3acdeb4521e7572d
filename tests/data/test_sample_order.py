"""Pinned sample order of the video datamodules for a fixed seed.

Every pass below (train epochs, resampled epochs, evaluation, two ranks, two workers, a
resumed run, damaged shards) is compared with ``sample_order.json``: keys, the pixel sum of
every clip (it follows the clip start, crop and flip) and the skip counts and warnings. A
change of the shard pipeline that reorders or alters one sample fails here.

Regenerate the pins (only for an intended change of the data stream) with
``ADAPTOK_WRITE_PINS=1 pytest tests/data/test_sample_order.py``.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adaptok.data.skips import SkippedSamplesWarning
from datamodules.video_shards import VideoShardsDataModule
from datamodules.video_windows import VideoWindowsDataModule

PINS = Path(__file__).with_name("sample_order.json")
WRITE = os.environ.get("ADAPTOK_WRITE_PINS") == "1"


def _check(name: str, value: Any) -> None:
    """Compare ``value`` (JSON-able) with the pin ``name``; write it instead under WRITE."""
    value = json.loads(json.dumps(value))
    pins = json.loads(PINS.read_text()) if PINS.exists() else {}
    if WRITE:
        pins[name] = value
        PINS.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
        return
    assert name in pins, f"no pin {name!r}: run with ADAPTOK_WRITE_PINS=1"
    assert value == pins[name]


def _clips(datamodule: Any, loader: Any) -> list[list[list[Any]]]:
    """``[[key, pixel sum], ...]`` per batch of one pass (uint8 video)."""
    batches = []
    for batch in loader:
        batch = datamodule.on_before_batch_transfer(batch, 0)
        sums = batch["video"].long().sum(dim=(1, 2, 3, 4)).tolist()
        batches.append([[k, s] for k, s in zip(batch["key"], sums, strict=True)])
    return batches


def _video(shards: Path, **overrides: Any) -> VideoShardsDataModule:
    settings: dict[str, Any] = {
        "train_urls": str(shards / "train-*.tar"),
        "val_urls": str(shards / "val-*.tar"),
        "num_frames": 6,
        "resolution": 24,
        "crop": "random",
        "hflip": True,
        "batch_size": 3,
        "num_workers": 0,
        "shuffle_buffer": 5,
        "seed": 7,
        "video_dtype": "uint8",
        **overrides,
    }
    datamodule = VideoShardsDataModule(**settings)
    datamodule.setup("fit")
    return datamodule


def _epochs(datamodule: Any, split: str, count: int) -> list[Any]:
    loader = getattr(datamodule, f"{split}_dataloader")()
    return [_clips(datamodule, loader) for _ in range(count)]


VIDEO_CASES: dict[str, tuple[dict[str, Any], str, int]] = {
    "train_shuffled_w0": ({}, "train", 2),
    "train_shuffled_w2": ({"num_workers": 2}, "train", 2),
    "train_first_uniform": ({"clip_sampling": "uniform", "shuffle_buffer": 0}, "train", 1),
    "train_resampled_w0": ({"epoch_length": 8}, "train", 2),
    "train_resampled_w2": ({"epoch_length": 8, "num_workers": 2}, "train", 2),
    "val_ordered_w2": ({"num_workers": 2}, "val", 2),
    "val_eval_shuffle": ({"eval_shuffle": True}, "val", 2),
}


@pytest.mark.filterwarnings("ignore:val. num_workers=2 > 1 shard")
@pytest.mark.parametrize("case", sorted(VIDEO_CASES))
def test_video_shards_order_is_pinned(synthetic_shards: Path, case: str) -> None:
    overrides, split, epochs = VIDEO_CASES[case]
    _check(f"video/{case}", _epochs(_video(synthetic_shards, **overrides), split, epochs))


@pytest.mark.filterwarnings("ignore:val. num_workers=2 > 1 shard")
def test_video_shards_order_of_two_ranks_is_pinned(
    synthetic_shards: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = {}
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        datamodule = _video(synthetic_shards, num_workers=2)
        seen[rank] = {
            "train": _epochs(datamodule, "train", 2),
            "resampled": _epochs(_video(synthetic_shards, epoch_length=8), "train", 1),
            "val": _epochs(datamodule, "val", 1),
        }
    _check("video/two_ranks", seen)


def test_video_shards_resumed_stream_is_pinned(synthetic_shards: Path) -> None:
    datamodule = _video(synthetic_shards, num_workers=1)
    datamodule.load_state_dict({"version": 1, "epoch": 1, "batches": 2, "seed": 7})
    _check("video/resumed_epoch1_after2", _epochs(datamodule, "train", 2))


def _damaged(shards: Path, target: Path) -> Path:
    """A copy of the train shards with a truncated video, bad metadata and a cut shard."""
    target.mkdir()
    for shard in sorted(shards.glob("train-*.tar")):
        (target / shard.name).write_bytes(shard.read_bytes())
    first = target / "train-000001.tar"
    with tarfile.open(first) as source:
        members = [(m, source.extractfile(m).read()) for m in source.getmembers()]
    videos = [m.name for m, _ in members if m.name.endswith(".mp4")]
    metas = [m.name for m, _ in members if m.name.endswith(".json")]
    with tarfile.open(first, "w") as out:
        for member, data in members:
            if member.name == videos[0]:
                data = data[: len(data) // 3]
            if member.name == metas[1]:
                data = b"{not json"
            member.size = len(data)
            out.addfile(member, io.BytesIO(data))
    cut = target / "train-000003.tar"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    return target


def _with_warnings(run: Callable[[], Any]) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run()
    reports = [str(w.message) for w in caught if issubclass(w.category, SkippedSamplesWarning)]
    return result, reports


@pytest.mark.parametrize("workers", [0, 2])
def test_video_shards_skips_are_pinned(
    synthetic_shards: Path, tmp_path: Path, workers: int
) -> None:
    shards = _damaged(synthetic_shards, tmp_path / "damaged")
    datamodule = _video(shards, val_urls=None, num_workers=workers)

    def run() -> Any:
        passes = _epochs(datamodule, "train", 2)
        datamodule.teardown("fit")
        return passes

    passes, reports = _with_warnings(run)
    _check(
        f"video/damaged_w{workers}",
        {"passes": passes, "warnings": reports, "counts": dict(datamodule.skip_counts)},
    )


# ------------------------------------------------------------------------------- windows


def _windows(datamodule: VideoWindowsDataModule) -> tuple[list[Any], dict[str, int]]:
    """``[[key, start, label, pixel sum], ...]`` per batch and the summed skip counts."""
    batches, skipped = [], {}
    for batch in datamodule.predict_dataloader():
        batch = datamodule.on_before_batch_transfer(batch, 0)
        for reason, count in (batch.get("skipped") or {}).items():
            skipped[reason] = skipped.get(reason, 0) + count
        if batch["video"].numel() == 0:
            batches.append([])
            continue
        sums = (batch["video"] * 255).round().long().sum(dim=(1, 2, 3, 4)).tolist()
        rows = zip(
            batch["key"], batch["window_start"].tolist(), batch["label"].tolist(), sums, strict=True
        )
        batches.append([list(row) for row in rows])
    return batches, skipped


def _window_module(urls: str, **overrides: Any) -> VideoWindowsDataModule:
    settings: dict[str, Any] = {
        "predict_urls": urls,
        "num_frames": 6,
        "stride": 4,
        "frame_stride": 2,
        "resolution": 24,
        "batch_size": 4,
        "num_workers": 0,
        **overrides,
    }
    return VideoWindowsDataModule(**settings)


@pytest.mark.parametrize("workers", [0, 2])
def test_video_windows_order_is_pinned(
    synthetic_shards: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    urls = str(synthetic_shards / "train-*.tar")
    seen: dict[str, Any] = {"single": _windows(_window_module(urls, num_workers=workers))}
    excluded = _window_module(urls, num_workers=workers)
    excluded.exclude_keys(
        [row[0] for batch in seen["single"][0] for row in batch if row[1] in (0, 8)][:7]
    )
    seen["excluded"] = _windows(excluded)
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        seen[f"rank{rank}"] = _windows(_window_module(urls, num_workers=workers))
    _check(f"windows/w{workers}", seen)


@pytest.mark.parametrize("workers", [0, 2])
def test_video_windows_skips_are_pinned(
    synthetic_shards: Path, tmp_path: Path, workers: int
) -> None:
    shards = _damaged(synthetic_shards, tmp_path / "damaged")
    datamodule = _window_module(str(shards / "train-*.tar"), num_workers=workers)
    (batches, skipped), reports = _with_warnings(lambda: _windows(datamodule))
    _check(
        f"windows/damaged_w{workers}",
        {
            "batches": batches,
            "skipped": skipped,
            "warnings": reports,
            "counts": dict(datamodule.skip_counts),
        },
    )


def test_pins_cover_every_case() -> None:
    if WRITE:
        pytest.skip("writing pins")
    pins = json.loads(PINS.read_text())
    assert {f"video/{case}" for case in VIDEO_CASES} <= set(pins)
