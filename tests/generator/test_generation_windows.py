"""The official real-window protocol of generation evaluations: drawn windows, split over ranks.

``datamodules.real_clips.RealClips`` sets up the real data that ``GenerationEvaluator`` reads.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader

from adaptok.data.cli import main as shards
from adaptok.data.shard_stream import ShardLoader
from adaptok.data.shards import resolve_shards
from adaptok.data.skips import REPORT_ONLY_KEY, SkippedSamplesWarning
from adaptok.metrics.windows import draw_windows
from callbacks import GenerationEvaluator
from datamodules.real_clips import RealClips, shard_frame_counts
from datamodules.video_windows import (
    VideoWindowsDataModule,
    VideoWindowsDataset,
    collate_windows,
)


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory: pytest.TempPathFactory) -> str:
    """6 synthetic 40-frame videos (two non-overlapping 16-frame windows each), 3 shards."""
    out = tmp_path_factory.mktemp("long_videos")
    args = ["synthetic", "--out", str(out), "--num-clips", "6", "--seed", "0", "--size", "32"]
    args += ["--num-frames", "40", "--val-fraction", "0", "--shard-samples", "2", "--quiet"]
    assert shards(args) in (0, None)
    return str(out / "*.tar")


def _read(real: RealClips, rank: int, world: int, count: int) -> list[tuple]:
    trainer = SimpleNamespace(global_rank=rank, world_size=world)
    read = []
    for batch in real.batches(16, 32, count, trainer):
        if batch.get(REPORT_ONLY_KEY):
            continue
        assert batch["video"].shape[1:] == (3, 16, 32, 32) and batch["video"].max() <= 1
        read += zip(batch["source_key"], batch["window_start"].tolist(), strict=True)
    return read


def test_the_drawn_windows_are_read_exactly_once_over_ranks(long_videos: str) -> None:
    evaluator = GenerationEvaluator(
        real_urls=long_videos, real_windows="nonoverlapping", window_seed=42, batch_size=2
    )
    real = evaluator.real_clips  # the evaluator's YAML settings build its data set-up
    kept_once = ("batch_size", "num_workers", "real_windows", "window_seed", "real_urls")
    assert not [name for name in kept_once if hasattr(evaluator, name)]  # one copy: RealClips
    assert (real.urls, real.windows, real.window_seed, real.batch_size) == (
        long_videos,
        "nonoverlapping",
        42,
        2,
    )
    counts = shard_frame_counts(resolve_shards(long_videos))
    assert len(counts) == 6 and set(counts.values()) == {40}
    drawn = set(draw_windows(counts, 16, 5, seed=42))
    assert {start for _, start in drawn} <= {0, 16}
    assert set(_read(real, 0, 1, 5)) == drawn
    assert real.counts is not None
    assert real.counts.as_dict() == {"drawn": 5, "windows": 12, "videos": 6}
    rank0, rank1 = _read(real, 0, 2, 5), _read(real, 1, 2, 5)
    assert len(rank0) + len(rank1) == 5 and set(rank0) | set(rank1) == drawn
    # later windows of a video are drawn too (the first-16-frames protocol never reads them)
    assert any(start == 16 for _, start in drawn)
    with pytest.raises(ValueError, match="hold only 12"):
        _read(real, 0, 1, 13)


def _corrupt_shard(path: Path) -> None:
    """A shard of one 40-frame video (by its metadata) whose bytes are not a video."""
    meta = {"frames": 40, "height": 32, "width": 32, "label": 0, "class_name": "calm"}
    with tarfile.open(path, "w") as archive:
        for name, data in (("broken.json", json.dumps(meta).encode()), ("broken.mp4", b"junk")):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))


def test_the_window_loader_gives_the_plain_loader_batches(long_videos: str, tmp_path: Path) -> None:
    """The shared loader: the windows and report-only batches of a plain one, skips warned once."""
    shutil.copy(resolve_shards(long_videos)[0], tmp_path / "train-000000.tar")  # 4 windows
    _corrupt_shard(tmp_path / "train-000001.tar")  # the second worker's only shard
    urls = str(tmp_path / "*.tar")
    real = RealClips(urls=urls, windows="nonoverlapping", batch_size=2, num_workers=2)
    loader = real._window_loader(16, 32, 6, 0, 1)
    assert isinstance(loader, ShardLoader) and loader.num_workers == 2
    plain = list(
        DataLoader(loader.dataset, batch_size=2, num_workers=2, collate_fn=collate_windows)
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(real.batches(16, 32, 6, SimpleNamespace(global_rank=0, world_size=1)))
    assert len(batches) == len(plain) == 3
    for batch, reference in zip(batches, plain, strict=True):
        assert batch["key"] == reference["key"]
        assert torch.equal(batch["video"], reference["video"])
        assert "skipped" not in batch
    assert batches[1].get(REPORT_ONLY_KEY)  # the second worker's counts, in their place
    assert batches[1]["key"] == []
    skips = [str(w.message) for w in caught if w.category is SkippedSamplesWarning]
    assert len(skips) == 1 and "corrupt video: 1" in skips[0]


def test_the_window_loader_shares_the_windows_datamodule_stream_and_clamp(
    long_videos: str,
) -> None:
    """The drawn windows are the annotation stream at a stride of whole windows, read by at
    most one worker per shard of the rank, as the datamodule does (without its warnings)."""
    real = RealClips(urls=long_videos, windows="nonoverlapping", batch_size=2, num_workers=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaders = [real._window_loader(16, 32, 5, rank, 2) for rank in (0, 1)]
    assert [str(w.message) for w in caught if issubclass(w.category, UserWarning)] == []
    assert [loader.num_workers for loader in loaders] == [2, 1]  # 3 shards over 2 ranks
    shards = resolve_shards(long_videos)
    windows = VideoWindowsDataModule(
        shards, num_frames=16, stride=16, resolution=32, batch_size=2, num_workers=3
    )
    with pytest.warns(UserWarning, match="num_workers=3 > 1 shard"):
        assert windows._workers("predict", shards, 1, 2) == loaders[1].num_workers
    for rank, loader in enumerate(loaders):
        stream = loader.dataset
        assert isinstance(stream, VideoWindowsDataset)
        assert (stream.rank, stream.world_size, stream.urls) == (rank, 2, shards)
        assert (stream.num_frames, stream.stride, stream.frame_stride) == (16, 16, 1)
        assert len(stream.exclude) == 12 - 5  # every window not drawn


def test_unknown_protocol_is_refused() -> None:
    with pytest.raises(ValueError, match="real_windows"):
        GenerationEvaluator(real_urls="x", real_windows="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="real_windows"):
        RealClips(urls="x", windows="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        GenerationEvaluator(real_urls="x", batch_size=0)


def test_first_frames_protocol_reads_one_window_per_video(long_videos: str) -> None:
    real = RealClips(urls=long_videos, windows="first", batch_size=4)
    assert real.per_rank_share
    trainer = SimpleNamespace(global_rank=0, world_size=1)
    batches = list(real.batches(16, 32, 6, trainer))
    keys = [key for batch in batches for key in batch["key"]]
    assert len(keys) == len(set(keys)) == 6
    assert all("skipped" not in batch for batch in batches)
    assert all(batch["video"].shape[1:] == (3, 16, 32, 32) for batch in batches)
