"""PyAV video decoding, encoding and resizing.

Frames are ``uint8`` numpy arrays of shape ``(T, H, W, 3)`` (RGB), upright: the display
matrix of phone recordings (``VideoFrame.rotation``) is applied on decode, and sizes reported
by :func:`probe_video` are display sizes. Every codec context runs
single-threaded: data-loading parallelism comes from DataLoader workers or writer processes,
and FFmpeg's own threads on top of those made throughput swing widely on small machines.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = [
    "VIDEO_SUFFIXES",
    "VideoDecodeError",
    "VideoInfo",
    "VideoSource",
    "DecodedVideo",
    "decode_video",
    "decode_video_timed",
    "encode_video",
    "probe_video",
    "resize_frames",
    "short_side_shape",
]

VideoSource = bytes | str | Path
"""Encoded video bytes, or the path of a video file."""

VIDEO_SUFFIXES = ("mp4", "avi", "mkv", "mov", "webm", "m4v", "mpg", "mpeg")
"""File suffixes (without the dot) read as video, in order of preference within a sample."""

_INTERPOLATION = "BILINEAR"
_SCALE_THREADS = 1
"""swscale threads per conversion. FFmpeg's default (one slice thread per core) is not
fork-safe: a DataLoader worker forked from a process holding such a frame hung for ever in
``sws_freeContext`` when its garbage collector freed the inherited frame."""
_X264_PARAMS = "mbtree=0"
"""x264's macroblock tree made identical input encode to different bytes from run to run here
(so shards were not reproducible); without it the output is deterministic."""


class VideoDecodeError(RuntimeError):
    """Raised when a video cannot be opened or decoded (corrupt, truncated, no video stream)."""


@dataclass(frozen=True)
class VideoInfo:
    """Container-level facts about a video.

    Attributes:
        frames: Number of frames (counted from packets when the container does not say).
        fps: Average frame rate.
        height: Displayed frame height in pixels (after rotation).
        width: Displayed frame width in pixels (after rotation).
        rotation: Display rotation in degrees counter-clockwise (0, 90, 180 or 270) that
            decoding applies.
    """

    frames: int
    fps: float
    height: int
    width: int
    rotation: int = 0


@dataclass(frozen=True)
class DecodedVideo:
    """Every frame of a video with its presentation time.

    Attributes:
        frames: ``uint8`` array ``(T, H, W, 3)``, upright.
        times: ``(T,)`` float64 presentation times in seconds from the first frame.
        rotation: Display rotation that was applied (degrees counter-clockwise).
    """

    frames: np.ndarray
    times: np.ndarray
    rotation: int


def _describe(source: VideoSource) -> str:
    return f"<{len(source)} bytes>" if isinstance(source, bytes) else str(source)


def _open(source: VideoSource) -> av.container.InputContainer:
    if isinstance(source, bytes):
        handle: str | io.BytesIO = io.BytesIO(source)
    else:
        if not Path(source).is_file():
            raise FileNotFoundError(f"video file not found: {source}")
        handle = str(source)
    try:
        container = av.open(handle, mode="r")
    except av.FFmpegError as error:
        raise VideoDecodeError(f"cannot open video {_describe(source)}: {error}") from error
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"no video stream in {_describe(source)}")
    stream = container.streams.video[0]
    stream.thread_type = "NONE"
    stream.codec_context.thread_count = 1
    return container


def probe_video(source: VideoSource) -> VideoInfo:
    """Read frame count, frame rate and size without decoding pictures.

    Args:
        source: Encoded bytes or a file path.

    Returns:
        The video's :class:`VideoInfo`.

    Raises:
        VideoDecodeError: The container cannot be opened or holds no video stream.
        FileNotFoundError: ``source`` is a path that does not exist.
    """
    with _open(source) as container:
        stream = container.streams.video[0]
        frames = stream.frames
        try:
            if frames <= 0:
                frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
        except av.FFmpegError as error:
            raise VideoDecodeError(f"cannot demux {_describe(source)}: {error}") from error
        rate = stream.average_rate or stream.guessed_rate or 0
        height, width = stream.codec_context.height, stream.codec_context.width
    rotation = _first_frame_rotation(source)
    if rotation in (90, 270):
        height, width = width, height
    return VideoInfo(
        frames=int(frames), fps=float(rate), height=height, width=width, rotation=rotation
    )


def _normal_rotation(degrees: float | None) -> int:
    """Display rotation rounded to a quarter turn, in [0, 360)."""
    return int(round((degrees or 0) / 90.0)) % 4 * 90


def _first_frame_rotation(source: VideoSource) -> int:
    """Display rotation of the first frame (0 when the video has no decodable frame)."""
    with _open(source) as container:
        try:
            for frame in container.decode(container.streams.video[0]):
                return _normal_rotation(frame.rotation)
        except av.FFmpegError:
            return 0
    return 0


def _upright(array: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display rotation (degrees counter-clockwise) to an ``(H, W, 3)`` frame."""
    return np.ascontiguousarray(np.rot90(array, k=rotation // 90)) if rotation else array


def decode_video(
    source: VideoSource,
    frame_indices: Sequence[int] | None = None,
    output_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode frames of a video to RGB.

    Decoding stops after the last requested frame, so reading the start of a long clip is cheap.

    Args:
        source: Encoded bytes or a file path.
        frame_indices: Non-decreasing frame indices to keep (repeats allowed); ``None`` keeps
            every frame.
        output_size: Displayed ``(height, width)`` to resize each frame to (bilinear, in
            FFmpeg's swscale); ``None`` keeps the size.

    Returns:
        ``uint8`` array of shape ``(T, H, W, 3)``, upright (display rotation applied);
        ``T == len(frame_indices)`` when given.

    Raises:
        VideoDecodeError: The video is corrupt, truncated before a requested frame, or empty.
        ValueError: ``frame_indices`` is empty, negative or decreasing.
        FileNotFoundError: ``source`` is a path that does not exist.
    """
    frames, _, _ = _decode(source, frame_indices, output_size)
    return frames


def decode_video_timed(
    source: VideoSource, output_size: tuple[int, int] | None = None
) -> DecodedVideo:
    """Decode every frame with its presentation time (for selection by time, e.g. VFR input).

    Args:
        source: Encoded bytes or a file path.
        output_size: Displayed ``(height, width)`` to resize to; ``None`` keeps the size.

    Returns:
        The upright frames, their times in seconds from the first frame, and the rotation.

    Raises:
        VideoDecodeError: The video is corrupt, truncated or empty.
        FileNotFoundError: ``source`` is a path that does not exist.
    """
    frames, times, rotation = _decode(source, None, output_size)
    return DecodedVideo(frames=frames, times=times, rotation=rotation)


def _decode(
    source: VideoSource,
    frame_indices: Sequence[int] | None,
    output_size: tuple[int, int] | None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Frames (upright), presentation times (s, from the first frame) and rotation."""
    wanted: list[int] | None = None
    if frame_indices is not None:
        wanted = [int(i) for i in frame_indices]
        if not wanted or wanted[0] < 0 or any(b < a for a, b in zip(wanted, wanted[1:])):
            raise ValueError(f"frame_indices must be non-empty, >= 0 and sorted: {wanted[:8]}")

    frames: list[np.ndarray] = []
    times: list[float] = []
    decoded = 0
    rotation = 0
    reformat: dict | None = None
    with _open(source) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        try:
            position = 0
            for frame in container.decode(stream):
                index = decoded
                decoded += 1
                if reformat is None:
                    rotation = _normal_rotation(frame.rotation)
                    reformat = {"format": "rgb24", "threads": _SCALE_THREADS}
                    if output_size is not None:
                        height, width = output_size
                        if rotation in (90, 270):
                            height, width = width, height
                        reformat.update(height=height, width=width, interpolation=_INTERPOLATION)
                if wanted is not None and wanted[position] != index:
                    continue
                array = _upright(frame.to_ndarray(**reformat), rotation)
                time = frame.time if frame.time is not None else index / rate
                if wanted is None:
                    frames.append(array)
                    times.append(time)
                    continue
                while position < len(wanted) and wanted[position] == index:
                    frames.append(array)
                    times.append(time)
                    position += 1
                if position == len(wanted):
                    break
        except av.FFmpegError as error:
            raise VideoDecodeError(
                f"corrupt video {_describe(source)} after {decoded} frames: {error}"
            ) from error
    if decoded == 0:
        raise VideoDecodeError(f"no decodable frames in {_describe(source)}")
    if wanted is not None and len(frames) < len(wanted):
        raise VideoDecodeError(
            f"video {_describe(source)} ends after {decoded} frames; frame {wanted[-1]} requested"
        )
    stamps = np.asarray(times, dtype=np.float64)
    return np.stack(frames), stamps - stamps[0], rotation


def short_side_shape(
    height: int, width: int, short_side: int, even: bool = False
) -> tuple[int, int]:
    """Size that scales the shorter side to ``short_side`` and keeps the aspect ratio.

    Args:
        height: Input height.
        width: Input width.
        short_side: Target length of the shorter side.
        even: Round both sides to even numbers (needed by yuv420p encoding).

    Returns:
        ``(new_height, new_width)``.
    """
    scale = short_side / min(height, width)
    new_h, new_w = round(height * scale), round(width * scale)
    if height <= width:
        new_h = short_side
    else:
        new_w = short_side
    if even:
        new_h, new_w = max(2, 2 * round(new_h / 2)), max(2, 2 * round(new_w / 2))
    return new_h, new_w


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize every frame with FFmpeg's bilinear swscale.

    Args:
        frames: ``uint8`` array ``(T, H, W, 3)``.
        height: Output height.
        width: Output width.

    Returns:
        ``uint8`` array ``(T, height, width, 3)``.
    """
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack(
        [
            av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24").to_ndarray(
                format="rgb24",
                height=height,
                width=width,
                interpolation=_INTERPOLATION,
                threads=_SCALE_THREADS,
            )
            for frame in frames
        ]
    )


def encode_video(frames: np.ndarray, fps: float, crf: int = 23, preset: str = "medium") -> bytes:
    """Encode frames as an H.264 (libx264, yuv420p) MP4 in memory.

    yuv420p needs even sizes: an odd last row or column is cropped away. The output is
    deterministic (single thread, x264 macroblock tree off).

    Args:
        frames: ``uint8`` array ``(T, H, W, 3)`` with ``T >= 1`` and ``H, W >= 2``.
        fps: Frame rate stored in the container.
        crf: x264 constant rate factor (lower is better quality and larger files).
        preset: x264 speed/compression preset.

    Returns:
        The MP4 file as bytes.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    if height == 0 or width == 0:
        raise ValueError(f"frames too small to encode: {frames.shape}")
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        rate = Fraction(fps).limit_denominator(1001)
        options = {"crf": str(crf), "preset": preset, "x264-params": _X264_PARAMS}
        stream = container.add_stream("libx264", rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        for index, frame in enumerate(frames[:, :height, :width]):
            rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            picture = rgb.reformat(format="yuv420p", threads=_SCALE_THREADS)
            picture.pts = index
            container.mux(stream.encode(picture))
        container.mux(stream.encode(None))
    return buffer.getvalue()
