"""Clip decoding, collation and the uint8 -> float conversion of the clip stream.

:class:`ClipDecoder` turns one tar sample into one clip (frame choice, resize, crop, flip) or
raises :class:`SkipSample` with the reason it is skipped. :func:`collate_clips` batches clips
and their skip reports; :func:`video_to_float` converts uint8 batches on the device.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from adaptok.data.skips import REPORT_KEY, REPORT_ONLY_KEY, SkipSample, merge_reports
from adaptok.data.tar_samples import PROBLEM_KEY
from adaptok.data.video_io import (
    VIDEO_SUFFIXES,
    VideoDecodeError,
    VideoTruncatedError,
    decode_clip,
    probe_video,
    short_side_shape,
    stored_stream,
)

__all__ = [
    "NO_LABEL_NOTE",
    "NOTED_ADJUSTMENTS",
    "ClipDecoder",
    "SkipSample",
    "collate_clips",
    "video_to_float",
]


NOTED_ADJUSTMENTS = ("stream", "alpha", "tone_mapped", "gamut_mapped", "deinterlaced")
"""Conversions made while decoding a stored video that are counted as notes (a shard written
by ``adaptok-shards`` re-encoded never needs them; original files kept as they are may)."""

NO_LABEL_NOTE = "no label in the metadata (label -1)"
"""The note counted for a clip loaded without a ``label`` (a video with no JSON, or a JSON
without the key): it loads as unlabelled, label -1, but is never silent."""


class ClipDecoder:
    """One raw tar sample -> one clip dict, or :class:`SkipSample`.

    Output: ``video`` ``(C, T, H, W)`` uint8 numpy; ``label`` int (-1 when unknown); ``key``
    str; ``complexity`` ``(T,)`` float (NaN when the shard has none); ``upscale`` float (how
    much the short side was enlarged, 1.0 when not); ``notes`` list of str (conversions
    decoding made, and a metadata frame count the video contradicts), counted by the stream.

    Args:
        num_frames: Frames per clip ``T``.
        frame_stride: Step between sampled frames.
        sampling: ``random`` start, ``first`` frames, or ``uniform`` (``T`` frames evenly
            spread over the whole clip; ``frame_stride`` unused).
        resolution: Short side after resizing, and the side of the square crop.
        crop: ``center`` or ``random`` crop.
        hflip: Flip horizontally with probability 0.5.
    """

    def __init__(
        self,
        num_frames: int,
        frame_stride: int,
        sampling: str,
        resolution: int,
        crop: str,
        hflip: bool,
    ) -> None:
        self.num_frames, self.frame_stride, self.sampling = num_frames, frame_stride, sampling
        self.resolution, self.crop, self.hflip = resolution, crop, hflip

    def indices(self, total: int, rng: np.random.Generator) -> np.ndarray:
        """Frame indices of one clip of a video with ``total`` frames.

        Raises:
            SkipSample: ``too short``.
        """
        if self.sampling == "uniform":
            if total < self.num_frames:
                raise SkipSample("too short")
            return np.linspace(0, total - 1, self.num_frames).round().astype(int)
        span = (self.num_frames - 1) * self.frame_stride + 1
        if total < span:
            raise SkipSample("too short")
        start = int(rng.integers(0, total - span + 1)) if self.sampling == "random" else 0
        return start + self.frame_stride * np.arange(self.num_frames)

    @staticmethod
    def _metadata(sample: dict[str, Any]) -> dict[str, Any]:
        if "json" not in sample:
            return {}
        try:
            meta = json.loads(sample["json"])
        except (ValueError, UnicodeDecodeError) as error:
            raise SkipSample("bad metadata (not JSON)") from error
        if not isinstance(meta, dict):
            raise SkipSample(f"bad metadata (JSON {type(meta).__name__}, not an object)")
        return meta

    def __call__(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """Decode one sample.

        Raises:
            SkipSample: The reason the sample cannot be a clip.
        """
        if PROBLEM_KEY in sample:
            raise SkipSample(str(sample[PROBLEM_KEY]))
        video = next((sample[s] for s in VIDEO_SUFFIXES if s in sample), None)
        if video is None:
            raise SkipSample(
                f"missing video (members: {sorted(k for k in sample if not k.startswith('__'))})"
            )
        meta = self._metadata(sample)
        stream = stored_stream(meta)
        notes: list[str] = []
        try:
            if not {"frames", "height", "width"} <= set(meta):
                info = probe_video(video, stream)
                meta = {"frames": info.frames, "height": info.height, "width": info.width, **meta}
            try:
                total, stored = int(meta["frames"]), (int(meta["height"]), int(meta["width"]))
            except (TypeError, ValueError) as error:
                raise SkipSample("bad metadata (frames/height/width not integers)") from error
            indices = self.indices(total, rng)
            height, width = short_side_shape(*stored, self.resolution)
            resize = (height, width) if (height, width) != stored else None
            try:
                decoded = decode_clip(video, indices, output_size=resize, stream=stream)
            except VideoTruncatedError as error:  # a header count the video contradicts
                notes.append("metadata frame count above the decoded frames")
                indices = self.indices(error.decoded, rng)
                decoded = decode_clip(video, indices, output_size=resize, stream=stream)
            frames = decoded.frames
        except VideoDecodeError as error:
            raise SkipSample("corrupt video") from error
        notes.extend(
            f"{kind} conversion while decoding"
            for kind in NOTED_ADJUSTMENTS
            if kind in decoded.adjustments
        )
        top, left = (height - self.resolution) // 2, (width - self.resolution) // 2
        if self.crop == "random":
            top = int(rng.integers(0, height - self.resolution + 1))
            left = int(rng.integers(0, width - self.resolution + 1))
        frames = frames[:, top : top + self.resolution, left : left + self.resolution]
        if self.hflip and rng.random() < 0.5:
            frames = frames[:, :, ::-1]
        scores = meta.get("frame_complexity")
        complexity = torch.full((self.num_frames,), float("nan"))
        if isinstance(scores, list) and len(scores) > int(indices[-1]):
            complexity = torch.tensor([float(scores[i]) for i in indices])
        label = meta.get("label", -1)
        if not isinstance(label, int | float):
            notes.append(f"label {label!r} is not a number (label -1)")
        elif "label" not in meta:
            notes.append(NO_LABEL_NOTE)
        return {
            "video": np.ascontiguousarray(frames.transpose(3, 0, 1, 2)),
            "label": int(label) if isinstance(label, int | float) else -1,
            "key": str(sample["__key__"]),
            "complexity": complexity,
            "upscale": self.resolution / max(min(stored), 1),
            "notes": notes,
        }


def collate_clips(
    samples: list[dict[str, Any]],
    value_range: tuple[float, float] = (0.0, 1.0),
    video_dtype: str = "float32",
) -> dict[str, Any]:
    """Batch clip dicts (in the worker) and sum their skip reports.

    Args:
        samples: Clip dicts of :class:`ClipDecoder` plus a ``skipped`` report each; report-only
            entries (:data:`~adaptok.data.skips.REPORT_ONLY_KEY`) add their counts only.
        value_range: Pixel range of a ``float32`` ``video``.
        video_dtype: ``float32`` (scaled to ``value_range`` here) or ``uint8`` (raw 0..255,
            converted on the device by :func:`video_to_float`).

    Returns:
        ``video`` (B, C, T, H, W), ``label`` (B,) long, ``key`` list, ``complexity`` (B, T)
        and ``skipped`` (the summed report). When every entry is report-only: just the report
        and ``REPORT_ONLY_KEY``.
    """
    report = merge_reports([s.get(REPORT_KEY, {}) for s in samples])
    clips = [s for s in samples if not s.get(REPORT_ONLY_KEY)]
    if not clips:
        return {REPORT_KEY: report, REPORT_ONLY_KEY: True}
    stacked = np.stack([s["video"] for s in clips])
    if video_dtype == "uint8":
        video = torch.from_numpy(stacked)
    else:
        low, high = value_range
        # numpy, single-threaded: torch's intra-op threads made this 10x slower on a busy 2-core box
        array = stacked.astype(np.float32)
        array *= np.float32((high - low) / 255.0)
        if low:
            array += np.float32(low)
        video = torch.from_numpy(array)
    return {
        "video": video,
        "label": torch.tensor([s["label"] for s in clips], dtype=torch.long),
        "key": [s["key"] for s in clips],
        "complexity": torch.stack([s["complexity"] for s in clips]),
        REPORT_KEY: report,
    }


def video_to_float(
    video: torch.Tensor, value_range: tuple[float, float] = (0.0, 1.0)
) -> torch.Tensor:
    """Convert a uint8 video batch (0..255) to float32 in ``value_range``; floats pass through.

    Meant to run on the device after transfer (4x fewer bytes moved than float32).

    Args:
        video: ``(B, C, T, H, W)`` uint8 (or any floating tensor, returned unchanged).
        value_range: ``(low, high)`` that 0 and 255 map to.

    Returns:
        ``(B, C, T, H, W)`` float32.

    Raises:
        TypeError: ``video`` is neither uint8 nor floating.
    """
    if video.is_floating_point():
        return video
    if video.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 or floating video, got {video.dtype}")
    low, high = value_range
    return video.to(torch.float32).mul_((high - low) / 255.0).add_(low)
