"""Real windows for a generation evaluation: which clips, read how (docs/METHOD.md section 5.7).

``callbacks.GenerationEvaluator`` compares generated clips with real windows of video shards;
this module holds that data set-up, so the callback only asks for batches. Two protocols
(``windows``):

- ``"nonoverlapping"`` (the official protocol, ``sample.py``): ``count`` distinct windows drawn
  with ``window_seed`` among every non-overlapping ``T``-frame window of every video
  (``adaptok.metrics.windows``; needs local shards whose metadata gives ``frames``). Each rank
  reads the drawn windows of its shards, so all ranks together read exactly ``count``;
- ``"first"``: the first ``T`` frames of each video, in order, through
  :class:`~datamodules.video_shards.VideoShardsDataModule`'s test loader (one window per video,
  as that datamodule evaluates), NOT the paper's protocol.

Windows are resized on the short side to the tokenizer's size and center-cropped.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from adaptok.data.shard_stream import ShardLoader
from adaptok.data.shards import resolve_shards
from adaptok.data.skips import SkipLedger
from adaptok.data.tar_samples import read_tar_json
from adaptok.distributed import rank_and_world_size
from adaptok.metrics.windows import draw_windows, nonoverlapping_windows

__all__ = ["RealClips", "RealWindows", "WindowCounts", "shard_frame_counts"]

RealWindows = Literal["first", "nonoverlapping"]


def shard_frame_counts(shards: list[str]) -> dict[str, int]:
    """Frame count of every video in local WebDataset shards, from their ``.json`` metadata.

    Keys are the samples' ``__key__`` as the clip readers group them
    (:func:`~adaptok.data.tar_samples.member_key`). Only the metadata members are read
    (:func:`~adaptok.data.tar_samples.read_tar_json`).

    Args:
        shards: Local shard paths.

    Returns:
        Video key -> ``frames`` of its metadata.

    Raises:
        ValueError: A remote shard, an unreadable shard, or a video whose metadata has no
            ``frames`` (naming the shard and key).
    """
    counts: dict[str, int] = {}
    for shard in shards:
        if not Path(shard).is_file():
            raise ValueError(
                f"real_windows: nonoverlapping reads the frame counts from local shards; "
                f"{shard} is not a local file"
            )
        try:
            for key, meta in read_tar_json(shard):
                if meta is None or "frames" not in meta:
                    raise ValueError(
                        f"{shard}: video {key!r} has no 'frames' in its metadata; rewrite "
                        "the shards with adaptok-shards"
                    )
                counts[key] = int(meta["frames"])
        except (OSError, tarfile.TarError) as error:
            raise ValueError(f"cannot read the metadata of {shard}: {error}") from error
    return counts


@dataclass
class WindowCounts:
    """How the non-overlapping windows were drawn (for the report).

    Attributes:
        drawn: Windows asked for (over all ranks).
        windows: Non-overlapping windows the shards hold.
        videos: Videos in the shards.
    """

    drawn: int
    windows: int
    videos: int

    def as_dict(self) -> dict[str, int]:
        """``{"drawn", "windows", "videos"}``."""
        return {"drawn": self.drawn, "windows": self.windows, "videos": self.videos}


@dataclass
class RealClips:
    """Where the real windows come from and how they are read.

    Args:
        urls: Video shards (glob, brace pattern, list, URL), e.g. the UCF-101 train list.
        windows: ``"first"`` or ``"nonoverlapping"`` (see the module docstring).
        window_seed: Seed of the non-overlapping window draw (official 42).
        batch_size: Windows per batch.
        num_workers: Loader workers (clamped to this rank's shards for ``nonoverlapping``).

    Raises:
        ValueError: An unknown ``windows`` or a batch size below 1.
    """

    urls: str | list[str]
    windows: RealWindows = "first"
    window_seed: int = 42
    batch_size: int = 16
    num_workers: int = 0
    counts: WindowCounts | None = field(default=None, init=False)
    """Set by :meth:`batches` for ``nonoverlapping``: the last draw's counts."""

    def __post_init__(self) -> None:
        if self.windows not in ("first", "nonoverlapping"):
            raise ValueError(
                f"real_windows must be 'first' or 'nonoverlapping', got {self.windows!r}"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def per_rank_share(self) -> bool:
        """True when each rank reads its own share of ``count`` windows (``first``).

        Under ``nonoverlapping`` each rank reads the drawn windows of its shards instead, and
        the ranks together read exactly ``count``.
        """
        return self.windows == "first"

    def batches(
        self, num_frames: int, resolution: int, count: int, ranks: Any | None = None
    ) -> Iterator[dict[str, Any]]:
        """This rank's batches of real windows.

        Args:
            num_frames: Frames per window (the tokenizer's clip length ``T``).
            resolution: Side of the square crop (the tokenizer's image size).
            count: Windows wanted over all ranks (``nonoverlapping``: drawn exactly; ``first``:
                the caller stops after its share).
            ranks: Anything with ``global_rank`` and ``world_size`` (the trainer); None: the
                process group's.

        Yields:
            Dicts with ``video`` ``(B, C, T, H, W)`` float in [0, 1], ``label`` ``(B,)`` long
            and ``key``, in the loader's order; the skip counts are not in them (the loader
            warns about the skipped samples once per pass). Under ``nonoverlapping`` a worker
            left without windows sends one report-only batch (marked with
            :data:`~adaptok.data.skips.REPORT_ONLY_KEY`, no windows in it): it is passed on,
            so that batch positions (which seed the caller's sampling) stay those of the
            loader.

        Raises:
            ValueError: Unreadable metadata, or fewer windows than ``count``
                (``nonoverlapping``).
        """
        rank, world_size = rank_and_world_size(ranks)
        if self.windows == "nonoverlapping":
            loader = self._window_loader(num_frames, resolution, count, rank, world_size)
        else:
            loader = self._first_frames_loader(num_frames, resolution, ranks)
        yield from loader

    def _first_frames_loader(self, num_frames: int, resolution: int, ranks: Any) -> Any:
        from datamodules.video_shards import VideoShardsDataModule

        data = VideoShardsDataModule(
            test_urls=self.urls,
            num_frames=num_frames,
            resolution=resolution,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
        )
        data.trainer = ranks  # rank and world size for the shard split
        return data.test_dataloader()

    def _window_loader(
        self, num_frames: int, resolution: int, count: int, rank: int, world_size: int
    ) -> ShardLoader:
        """This rank's share of ``count`` non-overlapping windows drawn with ``window_seed``.

        A :class:`~adaptok.data.shard_stream.ShardLoader` that yields the report-only batches
        too (they keep the batch positions) and warns once per pass about the skipped
        samples; a rank whose shards give no window reads an empty pass instead of failing.
        The stream and its workers are those of the annotation datamodule
        (:meth:`~datamodules.video_windows.VideoWindowsDataModule.rank_stream`,
        :func:`~datamodules.shard_data.rank_workers`), without its warnings about them.
        """
        from datamodules.shard_data import rank_workers
        from datamodules.video_windows import VideoWindowsDataModule, collate_windows, window_key

        shards = resolve_shards(self.urls, "real_urls")
        frames = shard_frame_counts(shards)
        every = nonoverlapping_windows(frames, num_frames)
        chosen = set(draw_windows(frames, num_frames, count, self.window_seed))
        self.counts = WindowCounts(drawn=count, windows=len(every), videos=len(frames))
        # the windows datamodule's stream and worker clamp, at a stride of whole windows; it
        # leaves out the windows not drawn without decoding their frames
        windows = VideoWindowsDataModule(
            shards,
            num_frames=num_frames,
            stride=num_frames,
            frame_stride=1,
            resolution=resolution,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
        )
        windows.exclude_keys(
            window_key(key, start) for key, start in every if (key, start) not in chosen
        )
        return ShardLoader(
            windows.rank_stream(shards, rank, world_size),
            ledger=SkipLedger(noun="window", empty_pass_error=False),
            split="real_urls",
            yield_report_only=True,
            batch_size=self.batch_size,
            num_workers=rank_workers(self.num_workers, shards, rank, world_size),
            collate_fn=collate_windows,
        )
