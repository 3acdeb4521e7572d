"""PyAV video decoding, encoding and resizing.

Frames are ``uint8`` numpy arrays of shape ``(T, H, W, 3)`` (RGB, 8-bit SDR, BT.709
primaries), upright. Every source is read through :class:`VideoReader`, which makes the
properties of a real-world file explicit instead of losing them silently:

* **stream**: the video stream FFmpeg's command line would pick (largest picture, the
  default-disposition stream first, cover art never), or the one asked for;
* **alpha**: RGBA / YUVA pictures (VP9 alpha is decoded with libvpx) are composited over a
  stated background (:func:`~adaptok.data.colour.composite_alpha`);
* **HDR and wide gamut**: PQ / HLG and BT.2020 sources are tone- and gamut-mapped to SDR
  BT.709 (:func:`~adaptok.data.colour.hdr_to_sdr`); full-range sources are read as such;
* **field order**: interlaced pictures are deinterlaced with FFmpeg's ``bwdif``;
* **rotation**: the display matrix of phone recordings (``VideoFrame.rotation``) is applied;
* **timestamps**: presentation times that jump backwards or repeat (concatenated MPEG
  streams) or are missing are rebased so time keeps running, and counted; gaps (dropped
  frames of AVI captures, variable frame rate) and frames closer than one interval at the
  nominal rate are counted as ``irregular_timestamps``, and :class:`ConstantRate` resamples
  such a timeline to a constant rate one frame at a time.

:attr:`VideoReader.adjustments` lists what was done, for the writer's metadata and counts.
Frames are produced one at a time (:meth:`VideoReader.frames`), so memory does not grow with
a video's length, and resizing happens in swscale while converting, so it does not grow with
the source resolution either. Every codec context runs single-threaded: data-loading
parallelism comes from DataLoader workers or writer processes, and FFmpeg's own threads on
top of those made throughput swing widely on small machines.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import av
import numpy as np

from adaptok.data.colour import (
    HDR_TRANSFERS,
    TONE_MAPPING,
    composite_alpha,
    hdr_to_sdr,
    matrix_name,
    primaries_name,
    range_name,
    transfer_name,
)

__all__ = [
    "DEINTERLACER",
    "ConstantRate",
    "LARGE_FRAME_PIXELS",
    "VIDEO_SUFFIXES",
    "DecodedVideo",
    "SourceProperties",
    "VideoDecodeError",
    "VideoEncoder",
    "VideoInfo",
    "VideoReader",
    "VideoSource",
    "VideoTruncatedError",
    "count_frames",
    "decode_clip",
    "decode_video",
    "decode_video_timed",
    "encode_video",
    "frames_at_rate",
    "note_resampling",
    "probe_video",
    "resize_frames",
    "short_side_shape",
    "sliding_windows",
    "stored_stream",
]

VideoSource = bytes | str | Path
"""Encoded video bytes, or the path of a video file."""

VIDEO_SUFFIXES = ("mp4", "avi", "mkv", "mov", "webm", "m4v", "mpg", "mpeg")
"""File suffixes (without the dot) read as video, in order of preference within a sample."""

DEINTERLACER = "bwdif(send_frame,interlaced frames only)"
"""FFmpeg filter (and settings) that deinterlaces interlaced sources."""

LARGE_FRAME_PIXELS = 1920 * 1080
"""Frames above this many pixels are stored only with a warning (use a resize)."""

_INTERPOLATION = "BILINEAR"
_SCALE_THREADS = 1
"""swscale threads per conversion. FFmpeg's default (one slice thread per core) is not
fork-safe: a DataLoader worker forked from a process holding such a frame hung for ever in
``sws_freeContext`` when its garbage collector freed the inherited frame."""
_X264_PARAMS = "mbtree=0"
"""x264's macroblock tree made identical input encode to different bytes from run to run here
(so shards were not reproducible); without it the output is deterministic."""
_FIELD_ORDERS = {0: "unknown", 1: "progressive", 2: "tt", 3: "bb", 4: "tb", 5: "bt"}
_DEFAULT_SCORE = 5_000_000
"""ffmpeg's stream-selection weight of the default disposition (added to width * height)."""


class VideoDecodeError(RuntimeError):
    """Raised when a video cannot be opened or decoded (corrupt, truncated, no video stream)."""


class VideoTruncatedError(VideoDecodeError):
    """The video ends before a requested frame.

    Attributes:
        decoded: Frames the video actually has.
    """

    def __init__(self, message: str, decoded: int) -> None:
        super().__init__(message)
        self.decoded = decoded


@dataclass(frozen=True)
class SourceProperties:
    """What a source file is, as far as it changes the stored frames.

    Attributes:
        stream: Ordinal of the chosen stream among the video streams (``v:N``).
        video_streams: Number of video streams in the file.
        stream_rule: Why this stream: ``only``, ``asked`` or ``best`` (ffmpeg's rule).
        codec: Decoder name.
        pix_fmt: Decoded pixel format.
        bit_depth: Bits per sample of the luma / first component.
        alpha: Whether the pictures carry an alpha channel.
        color_primaries: FFmpeg name of the primaries.
        color_transfer: FFmpeg name of the transfer characteristic.
        color_matrix: FFmpeg name of the YUV matrix.
        color_range: ``tv`` (limited), ``pc`` (full) or ``unspecified``.
        field_order: ``progressive``, ``tt``, ``bb``, ``tb``, ``bt`` or ``unknown``.
        interlaced: Whether the first picture is flagged interlaced.
        rotation: Display rotation in degrees counter-clockwise (0, 90, 180 or 270).
    """

    stream: int = 0
    video_streams: int = 1
    stream_rule: str = "only"
    codec: str = ""
    pix_fmt: str = ""
    bit_depth: int = 8
    alpha: bool = False
    color_primaries: str = "unspecified"
    color_transfer: str = "unspecified"
    color_matrix: str = "unspecified"
    color_range: str = "unspecified"
    field_order: str = "unknown"
    interlaced: bool = False
    rotation: int = 0

    @property
    def hdr(self) -> bool:
        """PQ or HLG transfer."""
        return self.color_transfer in HDR_TRANSFERS.values()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class VideoInfo:
    """Container-level facts about a video.

    Attributes:
        frames: Number of frames (the container's count; counted from packets when it has
            none; :func:`count_frames` decodes to be sure).
        fps: Average frame rate.
        height: Displayed frame height in pixels (after rotation).
        width: Displayed frame width in pixels (after rotation).
        rotation: Display rotation in degrees counter-clockwise (0, 90, 180 or 270) that
            decoding applies.
        properties: The chosen stream's :class:`SourceProperties`.
    """

    frames: int
    fps: float
    height: int
    width: int
    rotation: int = 0
    properties: SourceProperties = field(default_factory=SourceProperties)


@dataclass(frozen=True)
class DecodedVideo:
    """Every frame of a video with its presentation time.

    Attributes:
        frames: ``uint8`` array ``(T, H, W, 3)``, upright.
        times: ``(T,)`` float64 presentation times in seconds from the first frame (rebased
            where the source's jump backwards, see ``adjustments``).
        rotation: Display rotation that was applied (degrees counter-clockwise).
        properties: The source's :class:`SourceProperties`.
        adjustments: What decoding changed (see :attr:`VideoReader.adjustments`).
    """

    frames: np.ndarray
    times: np.ndarray
    rotation: int
    properties: SourceProperties = field(default_factory=SourceProperties)
    adjustments: dict[str, Any] = field(default_factory=dict)


def stored_stream(meta: dict[str, Any]) -> int | None:
    """The video stream a sample's metadata names (``stream``), or ``None`` for the best."""
    value = meta.get("stream")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _describe(source: VideoSource) -> str:
    return f"<{len(source)} bytes>" if isinstance(source, bytes) else str(source)


def _choose_stream(
    streams: Sequence[av.video.stream.VideoStream], asked: int | None, source: VideoSource
) -> tuple[int, str]:
    """Ordinal of the video stream to read and the rule that chose it.

    ffmpeg's rule for a command line without ``-map``: the stream with the largest picture,
    the default disposition adding 5,000,000 pixels; attached pictures (cover art) and
    still images only when nothing else exists; ties go to the lower index.
    """
    if asked is not None:
        if not 0 <= asked < len(streams):
            raise VideoDecodeError(
                f"{_describe(source)} has {len(streams)} video stream(s); stream {asked} "
                f"does not exist (choose 0..{len(streams) - 1})"
            )
        return asked, "asked"
    if len(streams) == 1:
        return 0, "only"
    still = int(av.stream.Disposition.attached_pic) | int(av.stream.Disposition.still_image)
    moving = [i for i, s in enumerate(streams) if not int(s.disposition) & still] or list(
        range(len(streams))
    )

    def score(i: int) -> tuple[int, int]:
        s = streams[i]
        default = int(s.disposition) & int(av.stream.Disposition.default)
        area = (s.codec_context.width or 0) * (s.codec_context.height or 0)
        return area + (_DEFAULT_SCORE if default else 0), -i

    return max(moving, key=score), "best"


class VideoReader:
    """One video source, opened: its properties and its frames, converted one at a time.

    Use as a context manager. :meth:`frames` decodes the chosen stream in presentation order
    and yields ``(time, frame)``; :meth:`to_rgb` turns one of those frames into upright
    8-bit SDR RGB at a requested size. Both may be used on one pass only; open a new reader
    for another pass.

    Args:
        source: Encoded bytes or a file path.
        stream: Ordinal of the video stream to read (``None``: ffmpeg's best-stream rule).
        background: RGB colour transparent pixels are composited over.

    Raises:
        FileNotFoundError: ``source`` is a path that does not exist.
        VideoDecodeError: The container cannot be opened, holds no video stream, or has no
            stream ``stream``.
    """

    def __init__(
        self,
        source: VideoSource,
        stream: int | None = None,
        background: tuple[int, int, int] = (0, 0, 0),
    ) -> None:
        self.source, self.background = source, tuple(int(v) for v in background)
        if isinstance(source, bytes):
            handle: str | io.BytesIO = io.BytesIO(source)
        else:
            if not Path(source).is_file():
                raise FileNotFoundError(f"video file not found: {source}")
            handle = str(source)
        try:
            self.container = av.open(handle, mode="r")
        except av.FFmpegError as error:
            raise VideoDecodeError(f"cannot open video {_describe(source)}: {error}") from error
        try:
            videos = list(self.container.streams.video)
            if not videos:
                raise VideoDecodeError(f"no video stream in {_describe(source)}")
            self.ordinal, self.rule = _choose_stream(videos, stream, source)
        except BaseException:
            self.container.close()
            raise
        self.video_streams = len(videos)
        self.stream = videos[self.ordinal]
        self.stream.thread_type = "NONE"
        self.stream.codec_context.thread_count = 1
        self.time_base = self.stream.time_base or Fraction(1, 90000)
        self.rate = float(self.stream.average_rate or self.stream.guessed_rate or 0)
        self._alpha_codec = (
            self.stream.codec_context.name == "vp9"
            and str(self.stream.metadata.get("alpha_mode", "0")) == "1"
            and "libvpx-vp9" in av.codecs_available
        )
        self.properties: SourceProperties | None = None
        self.adjustments: dict[str, Any] = {}
        self._graph: av.filter.Graph | None = None
        self._rotation = 0
        self._transparent_frames = 0

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the container."""
        self.container.close()

    # ------------------------------------------------------------------ decoding
    def _decoded(self) -> Iterator[av.VideoFrame]:
        """Decoded pictures of the chosen stream (libvpx for VP9 with alpha)."""
        if not self._alpha_codec:
            yield from self.container.decode(self.stream)
            return
        codec = av.CodecContext.create("libvpx-vp9", "r")
        codec.thread_count = 1
        for packet in self.container.demux(self.stream):
            yield from codec.decode(packet if packet.size else None)

    def _describe_first(self, frame: av.VideoFrame) -> None:
        context = self.stream.codec_context
        components = frame.format.components
        field_code = getattr(context, "field_order", 0) or 0
        interlaced = bool(frame.interlaced_frame) or field_code >= 2
        self._rotation = int(round((frame.rotation or 0) / 90.0)) % 4 * 90
        self.properties = SourceProperties(
            stream=self.ordinal,
            video_streams=self.video_streams,
            stream_rule=self.rule,
            codec=str(context.name),
            pix_fmt=str(frame.format.name),
            bit_depth=int(components[0].bits) if components else 8,
            alpha=any(c.is_alpha for c in components),
            color_primaries=primaries_name(frame.color_primaries),
            color_transfer=transfer_name(frame.color_trc),
            color_matrix=matrix_name(frame.colorspace),
            color_range=range_name(frame.color_range),
            field_order=_FIELD_ORDERS.get(int(field_code), "unknown"),
            interlaced=interlaced,
            rotation=self._rotation,
        )
        if self.video_streams > 1:
            self.adjustments["stream"] = {
                "chosen": self.ordinal,
                "of": self.video_streams,
                "rule": self.rule,
            }
        if interlaced:
            graph = av.filter.Graph()
            buffer = graph.add_buffer(
                width=frame.width,
                height=frame.height,
                format=frame.format,
                time_base=self.time_base,
            )
            deinterlace = graph.add("bwdif", "mode=send_frame:parity=auto:deint=interlaced")
            sink = graph.add("buffersink")
            buffer.link_to(deinterlace)
            deinterlace.link_to(sink)
            graph.configure()
            self._graph = graph
            self.adjustments["deinterlaced"] = {
                "filter": DEINTERLACER,
                "field_order": self.properties.field_order,
            }
        if self._rotation:
            self.adjustments["rotation"] = self._rotation

    def _pictures(self) -> Iterator[av.VideoFrame]:
        """Decoded pictures, deinterlaced when the source is interlaced."""
        for frame in self._decoded():
            if self.properties is None:
                self._describe_first(frame)
            if self._graph is None:
                yield frame
                continue
            self._graph.push(frame)
            yield from self._drain_graph()
        if self._graph is not None:
            self._graph.push(None)
            yield from self._drain_graph()

    def _drain_graph(self) -> Iterator[av.VideoFrame]:
        while True:
            try:
                yield self._graph.pull()
            except (av.BlockingIOError, av.EOFError):
                return

    def frames(self) -> Iterator[tuple[float, av.VideoFrame]]:
        """Pictures in presentation order with their time in seconds from the first one.

        Times that jump backwards or repeat are rebased to continue one frame interval after
        the previous picture, and missing times are filled in the same way; both are counted
        in :attr:`adjustments` (``timestamps``). After a full pass, a timeline that is not
        evenly spaced at the nominal rate (:attr:`rate`) is described under
        ``irregular_timestamps``: ``gaps`` (intervals over 1.5 frames), ``missing_frames``
        (frames those gaps leave out), ``close_frames`` (intervals under half a frame) and
        ``nominal_fps``. The reader changes nothing there; the caller decides what to do (and
        adds a ``rule`` saying what it did).

        Raises:
            VideoDecodeError: The stream is corrupt (message names the source and position).
        """
        first: float | None = None
        previous: float | None = None
        offset = 0.0
        step = 1.0 / self.rate if self.rate > 0 else 0.04
        jumps = missing = decoded = 0
        gaps = gap_frames = close = 0
        try:
            for frame in self._pictures():
                decoded += 1
                base = frame.time_base or self.time_base
                raw = None if frame.pts is None else float(frame.pts * base)
                if raw is None:
                    missing += 1
                    time = (previous + step) if previous is not None else 0.0
                else:
                    if first is None:
                        first = raw
                    time = raw - first + offset
                    if previous is not None and time <= previous + 1e-6:
                        jumps += 1
                        offset += previous + step - time
                        time = previous + step
                    elif previous is not None and self.rate <= 0:
                        step = max(time - previous, 1e-4)
                    elif previous is not None:
                        frames_apart = (time - previous) * self.rate
                        if frames_apart > 1.5:
                            gaps += 1
                            gap_frames += int(round(frames_apart)) - 1
                        elif frames_apart < 0.5:
                            close += 1
                yield time, frame
                previous = time
        except av.FFmpegError as error:
            raise VideoDecodeError(
                f"corrupt video {_describe(self.source)} after {decoded} frames: {error}"
            ) from error
        if jumps or missing:
            self.adjustments["timestamps"] = {
                "backward_jumps": jumps,
                "missing": missing,
                "rule": "rebased: time continues one frame interval after the previous frame",
            }
        if gaps or close:
            self.adjustments["irregular_timestamps"] = {
                "nominal_fps": round(self.rate, 6),
                "gaps": gaps,
                "missing_frames": gap_frames,
                "close_frames": close,
            }

    # ------------------------------------------------------------------ conversion
    def decoded_size(self, output_size: tuple[int, int] | None) -> tuple[int, int] | None:
        """Stored (pre-rotation) size that yields the displayed ``output_size``."""
        if output_size is None:
            return None
        height, width = output_size
        return (width, height) if self._rotation in (90, 270) else (height, width)

    def to_rgb(
        self, frame: av.VideoFrame, output_size: tuple[int, int] | None = None
    ) -> np.ndarray:
        """One picture as upright 8-bit SDR BT.709 RGB, resized in swscale.

        Args:
            frame: A picture from :meth:`frames`.
            output_size: Displayed ``(height, width)``; ``None`` keeps the size.

        Returns:
            ``(H, W, 3)`` uint8.
        """
        assert self.properties is not None, "to_rgb needs a frame from frames()"
        options: dict[str, Any] = {"threads": _SCALE_THREADS}
        size = self.decoded_size(output_size)
        if size is not None:
            options.update(height=size[0], width=size[1], interpolation=_INTERPOLATION)
        if int(frame.color_range) == 2:
            options["src_color_range"] = "JPEG"
        props = self.properties
        if self._wide_colour():
            rgb = hdr_to_sdr(
                frame.to_ndarray(format="rgb48le", **options),
                int(frame.color_trc),
                int(frame.color_primaries),
            )
            self._note_colour()
        elif props.alpha:
            rgb, transparent = composite_alpha(
                frame.to_ndarray(format="rgba", **options), self.background
            )
            self._note_alpha(transparent)
        else:
            rgb = frame.to_ndarray(format="rgb24", **options)
        if self._rotation:
            rgb = np.ascontiguousarray(np.rot90(rgb, k=self._rotation // 90))
        return rgb

    def inspect(self, frame: av.VideoFrame) -> None:
        """Record in :attr:`adjustments` what :meth:`to_rgb` would record for ``frame``.

        For sources stored as they are (``--keep-original``): the same notes as converting
        every frame (tone mapping, alpha compositing with its count of frames that are not
        fully opaque), without producing the pixels. Alpha is checked at the source size.

        Args:
            frame: A picture from :meth:`frames`.
        """
        assert self.properties is not None, "inspect needs a frame from frames()"
        if self._wide_colour():
            self._note_colour()
        elif self.properties.alpha:
            alpha = frame.to_ndarray(format="rgba", threads=_SCALE_THREADS)[..., 3]
            self._note_alpha(bool(alpha.min() < 255))

    def _wide_colour(self) -> bool:
        props = self.properties
        return props is not None and (props.hdr or props.color_primaries == "bt2020")

    def _note_colour(self) -> None:
        props = self.properties
        key = "tone_mapped" if props.hdr else "gamut_mapped"
        self.adjustments.setdefault(
            key,
            {
                "method": TONE_MAPPING if props.hdr else "bt2020->bt709 linear, clipped",
                "transfer": props.color_transfer,
                "primaries": props.color_primaries,
            },
        )

    def _note_alpha(self, transparent: bool) -> None:
        self._transparent_frames += int(transparent)
        self.adjustments["alpha"] = {
            "background": list(self.background),
            "transparent_frames": self._transparent_frames,
        }

    def describe(self) -> SourceProperties:
        """The source's properties (decodes the first picture when none was decoded yet)."""
        if self.properties is None:
            for _ in self._pictures():
                break
            if self.properties is None:
                raise VideoDecodeError(f"no decodable frames in {_describe(self.source)}")
        return self.properties


def probe_video(source: VideoSource, stream: int | None = None) -> VideoInfo:
    """Read frame count, frame rate, size and source properties without decoding the video.

    Only the first picture is decoded (for rotation, pixel format and colour properties).

    Args:
        source: Encoded bytes or a file path.
        stream: Video stream ordinal (``None``: the best stream, as ffmpeg picks it).

    Returns:
        The video's :class:`VideoInfo`.

    Raises:
        VideoDecodeError: The container cannot be opened or holds no video stream.
        FileNotFoundError: ``source`` is a path that does not exist.
    """
    with VideoReader(source, stream) as reader:
        chosen = reader.stream
        frames = chosen.frames
        try:
            if frames <= 0:
                frames = sum(1 for packet in reader.container.demux(chosen) if packet.size > 0)
        except av.FFmpegError as error:
            raise VideoDecodeError(f"cannot demux {_describe(source)}: {error}") from error
        height, width = chosen.codec_context.height, chosen.codec_context.width
    with VideoReader(source, stream) as reader:
        try:
            properties = reader.describe()
        except (VideoDecodeError, av.FFmpegError):
            properties = SourceProperties(
                stream=reader.ordinal, video_streams=reader.video_streams, stream_rule=reader.rule
            )
    rotation = properties.rotation
    if rotation in (90, 270):
        height, width = width, height
    return VideoInfo(
        frames=int(frames),
        fps=float(reader.rate),
        height=height,
        width=width,
        rotation=rotation,
        properties=properties,
    )


def count_frames(source: VideoSource, stream: int | None = None) -> tuple[int, float]:
    """Decode every picture (without converting it) and count them; memory stays flat.

    Returns:
        ``(frames, seconds from the first to the last frame)``.

    Raises:
        VideoDecodeError: The video is corrupt or has no decodable frame.
    """
    count, last = 0, 0.0
    with VideoReader(source, stream) as reader:
        for time, _ in reader.frames():
            count, last = count + 1, time
    if count == 0:
        raise VideoDecodeError(f"no decodable frames in {_describe(source)}")
    return count, last


def decode_video(
    source: VideoSource,
    frame_indices: Sequence[int] | None = None,
    output_size: tuple[int, int] | None = None,
    stream: int | None = None,
) -> np.ndarray:
    """Decode frames of a video to RGB.

    Decoding stops after the last requested frame, so reading the start of a long clip is
    cheap, and only the requested frames are converted and kept.

    Args:
        source: Encoded bytes or a file path.
        frame_indices: Non-decreasing frame indices to keep (repeats allowed); ``None`` keeps
            every frame.
        output_size: Displayed ``(height, width)`` to resize each frame to (bilinear, in
            FFmpeg's swscale); ``None`` keeps the size.
        stream: Video stream ordinal (``None``: the best stream).

    Returns:
        ``uint8`` array of shape ``(T, H, W, 3)``, upright (display rotation applied);
        ``T == len(frame_indices)`` when given.

    Raises:
        VideoDecodeError: The video is corrupt or empty; :class:`VideoTruncatedError` when it
            ends before a requested frame.
        ValueError: ``frame_indices`` is empty, negative or decreasing.
        FileNotFoundError: ``source`` is a path that does not exist.
    """
    return _decode(source, frame_indices, output_size, stream).frames


def decode_video_timed(
    source: VideoSource,
    output_size: tuple[int, int] | None = None,
    stream: int | None = None,
    background: tuple[int, int, int] = (0, 0, 0),
) -> DecodedVideo:
    """Decode every frame with its presentation time (for selection by time, e.g. VFR input).

    Args:
        source: Encoded bytes or a file path.
        output_size: Displayed ``(height, width)`` to resize to; ``None`` keeps the size.
        stream: Video stream ordinal (``None``: the best stream).
        background: Colour transparent pixels are composited over.

    Returns:
        The upright frames, their (rebased) times in seconds from the first frame, the
        rotation, the source properties and the adjustments made.

    Raises:
        VideoDecodeError: The video is corrupt, truncated or empty.
        FileNotFoundError: ``source`` is a path that does not exist.
    """
    return _decode(source, None, output_size, stream, background)


def decode_clip(
    source: VideoSource,
    frame_indices: Sequence[int] | None,
    output_size: tuple[int, int] | None = None,
    stream: int | None = None,
    background: tuple[int, int, int] = (0, 0, 0),
) -> DecodedVideo:
    """:func:`decode_video` that also returns times, source properties and adjustments.

    Raises:
        VideoDecodeError: As :func:`decode_video`.
    """
    return _decode(source, frame_indices, output_size, stream, background)


def _decode(
    source: VideoSource,
    frame_indices: Sequence[int] | None,
    output_size: tuple[int, int] | None,
    stream: int | None = None,
    background: tuple[int, int, int] = (0, 0, 0),
) -> DecodedVideo:
    """Frames (upright), presentation times (s, from the first frame) and properties."""
    wanted: list[int] | None = None
    if frame_indices is not None:
        wanted = [int(i) for i in frame_indices]
        if not wanted or wanted[0] < 0 or any(b < a for a, b in zip(wanted, wanted[1:])):
            raise ValueError(f"frame_indices must be non-empty, >= 0 and sorted: {wanted[:8]}")
    frames: list[np.ndarray] = []
    times: list[float] = []
    decoded = 0
    with VideoReader(source, stream, background) as reader:
        position = 0
        for time, frame in reader.frames():
            index = decoded
            decoded += 1
            if wanted is not None and wanted[position] != index:
                continue
            array = reader.to_rgb(frame, output_size)
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
        properties = reader.properties
        adjustments = dict(reader.adjustments)
    if decoded == 0 or properties is None:
        raise VideoDecodeError(f"no decodable frames in {_describe(source)}")
    if wanted is not None and len(frames) < len(wanted):
        raise VideoTruncatedError(
            f"video {_describe(source)} ends after {decoded} frames; frame {wanted[-1]} requested",
            decoded,
        )
    stamps = np.asarray(times, dtype=np.float64)
    return DecodedVideo(
        frames=np.stack(frames),
        times=stamps - stamps[0],
        rotation=properties.rotation,
        properties=properties,
        adjustments=adjustments,
    )


class ConstantRate:
    """Resample a stream of presentation times to a constant rate, one frame at a time.

    Output frame ``k`` (at ``k / fps`` seconds) is the source frame on screen then: the last
    one whose time is at or before ``k / fps + slack``. A gap in the source repeats the frame
    before it; a frame that another replaces before its output time comes is dropped.

    Length: the source lasts ``D`` = the last frame's time plus its duration (the interval
    before it, the source's rate where it ends; one output interval when there is a single
    frame), and the output has ``round(D * fps)`` frames (a half rounds up; at least one):
    an output frame is kept when at least half of its interval ``[k, k + 1) / fps`` lies
    within the source, so the output's duration is the nearest one to the source's on the
    output grid. An even source of ``n`` frames at rate ``r`` gives ``round(n * fps / r)``
    frames (``n`` at its own rate).

    Only the times are seen here, so the caller holds at most one frame: :meth:`push` the
    next frame's time and get how many output frames the previous one fills; :meth:`finish`
    gives the last frame's count. With a ``slack`` below half an output interval (less than
    a source frame's tolerance when downsampling more than threefold), :meth:`push` can have
    given out more frames than the length allows before the last frame is seen:
    :attr:`length` is then below :attr:`slots`, and :func:`frames_at_rate`, which sees the
    whole timeline, keeps only the first :attr:`length`.

    Args:
        fps: Output rate (> 0).
        slack: Tolerance for early timestamps in seconds; default half an output interval
            (the right value at the source's own nominal rate).

    Attributes:
        repeated: Output frames that repeat a source frame (filled gaps).
        dropped: Source frames that fill no output frame.
        slots: Output frames given out so far.
        length: Output frames the source's duration gives (``round(D * fps)``), set by
            :meth:`finish`; ``None`` before.
    """

    def __init__(self, fps: float, slack: float | None = None) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.fps = float(fps)
        self.slack = 0.5 / self.fps if slack is None else float(slack)
        self.slots = 0
        self.repeated = 0
        self.dropped = 0
        self.length: int | None = None
        self._last: float | None = None
        self._interval: float | None = None

    def _count(self, end: int) -> int:
        copies = max(0, end - self.slots)
        self.slots += copies
        if copies == 0:
            self.dropped += 1
        self.repeated += max(0, copies - 1)
        return copies

    def push(self, time: float) -> int:
        """Take the next source frame's time (seconds, non-decreasing).

        Returns:
            How many output frames the previous source frame fills (0 for the first call).
        """
        previous, self._last = self._last, float(time)
        if previous is None:
            return 0
        self._interval = self._last - previous
        # slots k with k / fps + slack < time belong to the previous frame
        return self._count(max(0, math.ceil((time - self.slack) * self.fps - 1e-9)))

    def finish(self) -> int:
        """How many output frames the last source frame fills (0 when none was pushed).

        Sets :attr:`length`, the output frames of the whole source (see the class docstring).
        """
        if self._last is None:
            return 0
        last, self._last = self._last, None
        interval = self._interval if self._interval is not None and self._interval > 0 else 0.0
        duration = interval or 1.0 / self.fps
        self.length = max(1, math.floor((last + duration) * self.fps + 0.5 + 1e-9))
        return self._count(self.length)


def frames_at_rate(
    times: Sequence[float] | np.ndarray, fps: float, slack: float | None = None
) -> np.ndarray:
    """Source frame of every output frame at a constant ``fps`` (see :class:`ConstantRate`).

    Args:
        times: Presentation times in seconds, non-decreasing, from the first frame.
        fps: Output rate.
        slack: Tolerance for early timestamps (default half an output interval).

    Returns:
        ``(N,)`` int64 non-decreasing indices into ``times`` (repeats fill gaps), ``N =
        round(D * fps)`` for a source of duration ``D`` (:attr:`ConstantRate.length`).
    """
    if not len(times):
        return np.zeros(0, dtype=np.int64)
    grid = ConstantRate(fps, slack)
    counts = [grid.push(t) for t in times][1:] + [grid.finish()]
    return np.repeat(np.arange(len(times), dtype=np.int64), counts)[: grid.length]


def note_resampling(
    adjustments: dict[str, Any],
    nominal_fps: float,
    asked_fps: float | None,
    repeated: int,
    dropped: int,
) -> None:
    """Complete ``adjustments["irregular_timestamps"]`` with what was done.

    Adds ``rule`` and the ``frames_repeated`` / ``frames_dropped`` counts of the resampling
    that gave the timeline a constant rate (:class:`ConstantRate`). A timeline the reader did
    not flag gets the entry too when the resampling repeated or dropped frames (jittered
    timestamps can), so no changed frame count goes unrecorded.

    Args:
        adjustments: A reader's adjustments (changed in place).
        nominal_fps: The source's nominal rate (the output rate when none was asked).
        asked_fps: The rate asked for (``--fps``), or ``None``.
        repeated: Output frames that repeat a source frame.
        dropped: Source frames left out.
    """
    irregular = adjustments.get("irregular_timestamps")
    if not isinstance(irregular, dict):
        if not (repeated or dropped) or asked_fps is not None:  # --fps is recorded anyway
            return
        irregular = adjustments["irregular_timestamps"] = {
            "note": "timestamps within the reader's tolerance, but resampling changed frames"
        }
    if asked_fps is not None:
        irregular["rule"] = f"resampled to --fps {asked_fps:g} by presentation time"
    else:
        irregular["rule"] = (
            f"resampled to the nominal {nominal_fps:g} fps: a gap repeats the frame before "
            "it, frames under half an interval apart are dropped"
        )
    irregular["frames_repeated"] = int(repeated)
    irregular["frames_dropped"] = int(dropped)


_Item = TypeVar("_Item")


def sliding_windows(
    frames: Iterable[_Item], num_frames: int, stride: int
) -> Iterator[tuple[int, list[_Item]]]:
    """Windows of ``num_frames`` consecutive items starting every ``stride`` items, lazily.

    Items are pulled from ``frames`` only as far as the next window needs, and only the
    items a later window still needs are held (at most ``num_frames``), so memory is bounded
    by the window whatever the length of the stream. Items after the last full window are
    pulled (so the stream's length is known) and dropped.

    Args:
        frames: Any iterable (e.g. decoded frames, one at a time).
        num_frames: Items per window (>= 1).
        stride: Items between window starts (>= 1; above ``num_frames`` items in between
            are skipped).

    Yields:
        ``(start, items)``: the index of the window's first item and its items (a new list).
    """
    if num_frames < 1 or stride < 1:
        raise ValueError(f"num_frames and stride must be >= 1, got {num_frames}, {stride}")
    held: deque = deque()
    first = 0  # index of held[0]
    start = 0
    for index, item in enumerate(frames):
        if index < start:
            continue  # between windows (stride > num_frames)
        if not held:
            first = index
        held.append(item)
        if index == start + num_frames - 1:
            yield start, list(held)
            start += stride
            while held and first < start:
                held.popleft()
                first += 1


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


class VideoEncoder:
    """Encode frames one at a time into an H.264 (libx264, yuv420p) MP4 in memory.

    The size is fixed by the first frame; yuv420p needs even sizes, so an odd last row or
    column is cropped away. Output is deterministic (single thread, macroblock tree off).
    Only the compressed bytes and the encoder's look-ahead are held, so memory does not
    grow with the number of frames.

    Args:
        fps: Frame rate stored in the container.
        crf: x264 constant rate factor (lower is better quality and larger files).
        preset: x264 speed/compression preset.
        codec: ``libx264`` or ``mpeg4`` (FFmpeg's own MPEG-4 Part 2 encoder, in every build;
            near-lossless ``qscale`` 2, ``crf`` and ``preset`` unused).
    """

    def __init__(
        self, fps: float, crf: int = 23, preset: str = "medium", codec: str = "libx264"
    ) -> None:
        if codec not in ("libx264", "mpeg4"):
            raise ValueError(f"codec must be libx264 or mpeg4, got {codec!r}")
        self.fps, self.crf, self.preset, self.codec = fps, crf, preset, codec
        self.buffer = io.BytesIO()
        self.container: Any = None
        self.stream: Any = None
        self.frames = 0
        self.size: tuple[int, int] | None = None

    def add(self, frame: np.ndarray) -> None:
        """Encode one ``(H, W, 3)`` uint8 RGB frame (same size as the first one).

        Raises:
            ValueError: Not uint8 RGB, smaller than 2x2, or another size than the first.
        """
        if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected a uint8 frame (H, W, 3), got {frame.dtype} {frame.shape}")
        height, width = frame.shape[0] // 2 * 2, frame.shape[1] // 2 * 2
        if height == 0 or width == 0:
            raise ValueError(f"frames too small to encode: {frame.shape}")
        if self.container is None:
            self.size = (height, width)
            self.container = av.open(self.buffer, mode="w", format="mp4")
            rate = Fraction(self.fps).limit_denominator(1001)
            options = {"crf": str(self.crf), "preset": self.preset, "x264-params": _X264_PARAMS}
            if self.codec == "mpeg4":
                options = {"qscale": "2"}
            self.stream = self.container.add_stream(self.codec, rate=rate, options=options)
            self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
            self.stream.codec_context.thread_count = 1
        elif (height, width) != self.size:
            raise ValueError(f"frame {self.frames} is {frame.shape[:2]}, earlier ones {self.size}")
        rgb = av.VideoFrame.from_ndarray(
            np.ascontiguousarray(frame[:height, :width]), format="rgb24"
        )
        picture = rgb.reformat(format="yuv420p", threads=_SCALE_THREADS)
        picture.pts = self.frames
        self.container.mux(self.stream.encode(picture))
        self.frames += 1

    def finish(self) -> bytes:
        """Flush the encoder and return the MP4 bytes.

        Raises:
            ValueError: No frame was added.
        """
        if self.container is None:
            raise ValueError("no frames to encode")
        self.container.mux(self.stream.encode(None))
        self.container.close()
        self.container = None
        return self.buffer.getvalue()

    def close(self) -> None:
        """Drop an unfinished encoding (after an error)."""
        if self.container is not None:
            with contextlib.suppress(av.FFmpegError):
                self.container.close()
            self.container = None


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
    encoder = VideoEncoder(fps, crf, preset)
    try:
        for frame in frames:
            encoder.add(frame)
        return encoder.finish()
    finally:
        encoder.close()
