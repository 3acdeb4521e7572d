"""Decoded clips per second: VideoShardsDataModule vs a bare PyAV decode loop.

Writes synthetic 16x128x128 clips into a few shards in a temporary folder, then times

* ``bare PyAV``: ``av.open`` + decode + ``to_ndarray("rgb24")`` of the same MP4 bytes, held in
  memory, in this process (the floor any loader pays);
* the datamodule's training loader (``epoch_length`` = all clips, persistent workers, first
  frames, center crop) with 0, 1 and 2 workers, after one warm-up epoch.

Repeats are interleaved (bare, 0, 1, 2 workers, bare, ...) so that load from other processes
hits every row alike; prints medians. Usage: ``python benchmarks/dataloader.py [--clips 64 --repeats 5]``.
"""

from __future__ import annotations

import argparse
import io
import itertools
import statistics
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from adaptok.data.synthetic import synthetic_tasks
from adaptok.data.writer import ShardOptions, write_shards
from datamodules import VideoShardsDataModule

NUM_FRAMES, SIZE = 16, 128
BARE = "bare PyAV decode (1 process)"


def write_benchmark_shards(folder: Path, clips: int) -> list[bytes]:
    """Write the clips into 4 shards; returns their MP4 bytes for the bare baseline."""
    tasks = synthetic_tasks(clips, seed=0, num_frames=NUM_FRAMES, val_fraction=0.0)
    options = ShardOptions(size=SIZE, shard_samples=max(1, clips // 4))
    write_shards(tasks, folder, options, progress=False)
    videos = []
    for shard in sorted(folder.glob("train-*.tar")):
        with tarfile.open(shard) as archive:
            for member in archive.getmembers():
                if member.name.endswith(".mp4"):
                    videos.append(archive.extractfile(member).read())
    return videos


def bare_decode_rate(videos: list[bytes]) -> float:
    """Clips per second of a plain single-threaded PyAV decode to RGB arrays."""
    start = time.perf_counter()
    for data in videos:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "NONE"
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        np.stack(frames[:NUM_FRAMES])
    return len(videos) / (time.perf_counter() - start)


def timed_epochs(folder: Path, clips: int, workers: int) -> Iterator[float]:
    """Clips per second of successive training epochs (the first one, a warm-up, is dropped)."""
    datamodule = VideoShardsDataModule(
        train_urls=str(folder / "train-*.tar"),
        num_frames=NUM_FRAMES,
        resolution=SIZE,
        clip_sampling="first",
        crop="center",
        batch_size=8,
        num_workers=workers,
        epoch_length=clips,
        shuffle_buffer=0,
    )
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    for epoch in itertools.count():
        start = time.perf_counter()
        count = sum(batch["video"].shape[0] for batch in loader)
        if epoch > 0:
            yield count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=64, help="clips per epoch")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median shown)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        videos = write_benchmark_shards(folder, args.clips)
        loaders = {workers: timed_epochs(folder, args.clips, workers) for workers in args.workers}
        rates: dict[str, list[float]] = {BARE: []}
        for _ in range(args.repeats):  # interleaved, so load changes hit every row alike
            rates[BARE].append(bare_decode_rate(videos))
            for workers, epochs in loaders.items():
                rates.setdefault(f"VideoShardsDataModule, {workers} workers", []).append(
                    next(epochs)
                )
        for epochs in loaders.values():
            epochs.close()
    bare = statistics.median(rates[BARE])
    print(f"{NUM_FRAMES}x{SIZE}x{SIZE} clips, {args.clips} per epoch, median of {args.repeats}")
    print(f"{'loader':<36} {'clips/s':>8} {'vs bare':>8}  runs")
    for name, runs in rates.items():
        rate = statistics.median(runs)
        spread = " ".join(f"{r:.0f}" for r in runs)
        print(f"{name:<36} {rate:>8.1f} {rate / bare:>7.0%}  {spread}")


if __name__ == "__main__":
    main()
