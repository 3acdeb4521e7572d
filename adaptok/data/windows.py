"""Cut a video into the square windows a clip model sees, decoding one frame at a time.

Both consumers of whole videos cut them here: ``adaptok tokenize`` (a video file, see
:mod:`adaptok.tokenize`) and the annotation loader (every window of every video in the
shards, ``datamodules.video_windows``). A window is ``num_frames`` frames ``frame_stride``
apart; windows start every ``stride`` frames, from frame 0, as long as a whole window fits
(frames after the last full window are not in any window). Each frame is decoded upright
(:class:`~adaptok.data.video_io.VideoReader`), its short side resized to ``S`` in swscale
(bilinear; not resized when it already has that size) and its centre ``S x S`` square kept
(:class:`SquareCrop`), as the evaluation clips are cut (docs/METHOD.md section 5.4 annotates
every window this way).

Which decoded picture is frame ``i`` (:class:`WindowDecoder` ``timing``):

* ``decoded``: the ``i``-th decoded picture (shards, whose clips ``adaptok-shards`` already
  wrote at a constant rate);
* ``constant_rate``: the picture on screen at ``i / fps`` seconds
  (:class:`~adaptok.data.video_io.ConstantRate`), so gaps repeat a frame and crowded frames
  are dropped; at the video's own rate an even timeline keeps every picture.

Memory stays bounded whatever the video's length or resolution: a frame is resized and cropped
as it is decoded, only the frames a later window still needs are held (at most one window's
span, :func:`~adaptok.data.video_io.sliding_windows`), frames no wanted window uses are not
converted, and decoding stops after the last wanted window.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Literal

import av
import numpy as np

from adaptok.data.video_io import (
    ConstantRate,
    SourceProperties,
    VideoReader,
    VideoSource,
    frames_at_rate,
    note_resampling,
    short_side_shape,
    sliding_windows,
)

__all__ = [
    "SquareCrop",
    "Timing",
    "WindowDecoder",
    "window_span",
    "window_starts",
]

Timing = Literal["decoded", "constant_rate"]
"""How frame ``i`` is chosen: the ``i``-th decoded picture, or the one shown at ``i / fps``."""


def window_span(num_frames: int, frame_stride: int = 1) -> int:
    """Frames one window covers, first to last: ``(num_frames - 1) * frame_stride + 1``."""
    return (num_frames - 1) * frame_stride + 1


def window_starts(
    total_frames: int, num_frames: int, stride: int, frame_stride: int = 1
) -> list[int]:
    """First frame of every window ``start, start + frame_stride, ...`` that fits the video.

    Args:
        total_frames: Frames in the video.
        num_frames: Frames per window ``T``.
        stride: Frames between consecutive window starts (>= 1).
        frame_stride: Step between the frames of one window (>= 1).

    Returns:
        ``[0, stride, 2 * stride, ...]`` up to the last start whose window fits; empty when
        the video is shorter than one window.
    """
    span = window_span(num_frames, frame_stride)
    if total_frames < span:
        return []
    return list(range(0, total_frames - span + 1, stride))


@dataclass(frozen=True)
class SquareCrop:
    """Resize a picture's short side to ``size`` and keep the centre ``size x size`` square.

    Attributes:
        size: Side ``S`` of the square, pixels.
        resize: Displayed ``(height, width)`` to resize to; ``None`` when the picture already
            has that size (it is then converted without scaling).
        corner: ``(top, left)`` of the square in the resized picture.
    """

    size: int
    resize: tuple[int, int] | None
    corner: tuple[int, int]

    @classmethod
    def centred(cls, height: int, width: int, size: int) -> SquareCrop:
        """The crop of a ``height x width`` (displayed) picture.

        Args:
            height: Displayed height of the source, pixels.
            width: Displayed width of the source, pixels.
            size: Side ``S`` of the square.
        """
        resized = short_side_shape(height, width, size)
        return cls(
            size=int(size),
            resize=None if resized == (height, width) else resized,
            corner=((resized[0] - size) // 2, (resized[1] - size) // 2),
        )

    def __call__(self, reader: VideoReader, frame: av.VideoFrame) -> np.ndarray:
        """One decoded picture as an ``(S, S, 3)`` uint8 RGB array of its own.

        The square is a copy, so it keeps no full-size picture alive.
        """
        rgb = reader.to_rgb(frame, self.resize)
        top, left = self.corner
        square = rgb[top : top + self.size, left : left + self.size].copy()
        del rgb
        return square


class WindowDecoder:
    """One video, decoded a frame at a time and cut into square windows.

    :meth:`windows` is the usual entry; :meth:`frames` gives the square frames themselves.
    Each pass opens the source anew. After a pass, :attr:`decoded`, :attr:`taken`,
    :attr:`source_properties` and :attr:`adjustments` describe it (a pass stopped early, by
    ``last``, describes what it read).

    Args:
        source: Encoded bytes or the path of a video file.
        num_frames: Frames per window ``T``.
        size: Side ``S`` of the square frames.
        display_size: Displayed ``(height, width)`` of the source (after rotation).
        stride: Frames between window starts (>= 1); default ``num_frames``.
        frame_stride: Step between the frames of one window (>= 1).
        timing: ``decoded`` or ``constant_rate`` (see the module docstring).
        fps: ``constant_rate``: the rate to take frames at; default ``nominal_fps``.
        nominal_fps: The source's average frame rate (``<= 0``: unknown, measured from the
            timestamps by a first pass that reads no pixels).
        stream: Video stream ordinal (``None``: the best one, as ffmpeg picks it).
        background: RGB colour transparent pixels are composited over.

    Attributes:
        fps: Rate of the frames (``constant_rate``), or the nominal rate (``decoded``).
        decoded: Pictures decoded in the last pass.
        taken: Frames produced in the last pass (repeats included).
        source_properties: The source's properties (``None`` until a picture is decoded).
        adjustments: What decoding changed (stream choice, alpha, tone mapping, rotation,
            timestamps; for ``constant_rate`` the resampling's repeats and drops).

    Raises:
        ValueError: ``stride``, ``frame_stride`` or ``fps`` is not positive, or ``fps`` is
            given with ``decoded`` timing.
        VideoDecodeError: The first pass (``constant_rate`` at another rate or an unknown
            nominal rate) cannot read the video.
    """

    def __init__(
        self,
        source: VideoSource,
        num_frames: int,
        size: int,
        display_size: tuple[int, int],
        stride: int | None = None,
        frame_stride: int = 1,
        *,
        timing: Timing = "decoded",
        fps: float | None = None,
        nominal_fps: float = 0.0,
        stream: int | None = None,
        background: tuple[int, int, int] = (0, 0, 0),
    ) -> None:
        stride = num_frames if stride is None else int(stride)
        self.check_settings(stride, frame_stride, fps)
        if timing not in ("decoded", "constant_rate"):
            raise ValueError(f"timing must be 'decoded' or 'constant_rate', got {timing!r}")
        if fps is not None and timing == "decoded":
            raise ValueError("fps resamples the video: it needs timing='constant_rate'")
        self.source, self.stream, self.background = source, stream, background
        self.num_frames, self.size = int(num_frames), int(size)
        self.stride, self.frame_stride = stride, int(frame_stride)
        self.crop = SquareCrop.centred(*display_size, self.size)
        self.timing, self.asked_fps, self.nominal_fps = timing, fps, float(nominal_fps)
        self._repeats: np.ndarray | None = None
        if timing == "constant_rate" and (fps is not None or not self.nominal_fps > 0):
            self._plan_from_timestamps()
        self.fps = float(fps) if fps is not None else self.nominal_fps
        self.decoded = 0
        self.taken = 0
        self.source_properties: SourceProperties | None = None
        self.adjustments: dict = {}
        self._resampling: tuple[int, int] | None = None  # (repeated, dropped) of a full pass

    @staticmethod
    def check_settings(stride: int, frame_stride: int = 1, fps: float | None = None) -> None:
        """Refuse a stride, frame stride or rate that is not positive.

        Raises:
            ValueError: The message names the setting.
        """
        if stride < 1:
            raise ValueError(f"stride must be >= 1 frame, got {stride}")
        if frame_stride < 1:
            raise ValueError(f"frame_stride must be >= 1 frame, got {frame_stride}")
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")

    @property
    def span(self) -> int:
        """Frames one window covers, first to last."""
        return window_span(self.num_frames, self.frame_stride)

    # ------------------------------------------------------------------------- timeline
    def _plan_from_timestamps(self) -> None:
        """First pass (times only): how many frames each decoded picture fills."""
        with VideoReader(self.source, self.stream, self.background) as reader:
            times = np.array([time for time, _ in reader.frames()], dtype=np.float64)
        steps = np.diff(times)
        if not self.nominal_fps > 0:
            self.nominal_fps = 1.0 / float(np.median(steps)) if len(times) > 1 else 25.0
        rate = float(self.asked_fps) if self.asked_fps is not None else self.nominal_fps
        even = len(times) < 2 or bool(np.abs(steps - 1.0 / rate).max() < 0.25 / rate)
        if even:
            indices = np.arange(len(times))
        else:  # half a measured source interval of slack
            indices = frames_at_rate(times, rate, 0.5 * float(np.median(steps)))
        self._repeats = np.bincount(indices, minlength=len(times))

    def _pictures(self, reader: VideoReader) -> Iterator[tuple[av.VideoFrame, int]]:
        """Each decoded picture with the number of frames it fills (0: left out)."""
        if self.timing == "decoded":
            for _, frame in reader.frames():
                self.decoded += 1
                yield frame, 1
            return
        if self._repeats is not None:
            for index, (_, frame) in enumerate(reader.frames()):
                self.decoded += 1
                yield frame, int(self._repeats[index]) if index < len(self._repeats) else 0
            used = int(np.count_nonzero(self._repeats))
            self._resampling = (self.taken - used, self.decoded - used)
            return
        grid = ConstantRate(self.fps)
        pending: av.VideoFrame | None = None
        for time, frame in reader.frames():
            self.decoded += 1
            copies, picture, pending = grid.push(time), pending, frame
            if picture is not None:
                yield picture, copies
        if pending is not None:
            yield pending, grid.finish()
        self._resampling = (grid.repeated, grid.dropped)

    # ---------------------------------------------------------------------------- passes
    def frames(
        self, needed: Callable[[int], bool] | None = None, end: int | None = None
    ) -> Iterator[np.ndarray | None]:
        """``(S, S, 3)`` uint8 frames in order, one decode pass.

        A picture that fills several frames (``constant_rate`` gaps) is yielded again as the
        same array.

        Args:
            needed: Whether frame ``i`` is used; ``None`` is yielded (nothing converted) for
                a frame that is not. ``None``: every frame is.
            end: Stop after this many frames (nothing after them is decoded); ``None``: the
                whole video.

        Raises:
            VideoDecodeError: The video cannot be opened or is corrupt (from the reader).
        """
        self.decoded = self.taken = 0
        self._resampling = None
        with VideoReader(self.source, self.stream, self.background) as reader:
            try:
                for picture, copies in self._pictures(reader):
                    first = self.taken
                    used = [needed is None or needed(first + k) for k in range(copies)]
                    square = self.crop(reader, picture) if any(used) else None
                    del picture  # the decoded picture is not held while the frame is used
                    for copy in used:
                        self.taken += 1
                        yield square if copy else None
                        if end is not None and self.taken >= end:
                            return
            finally:
                self._describe(reader)

    def _describe(self, reader: VideoReader) -> None:
        """Keep what the pass learnt about the source."""
        self.source_properties = reader.properties
        self.adjustments = dict(reader.adjustments)
        if self.timing == "constant_rate" and self._resampling is not None:
            repeated, dropped = self._resampling
            note_resampling(self.adjustments, self.nominal_fps, self.asked_fps, repeated, dropped)

    def windows(
        self, skip: Collection[int] = frozenset(), last: int | None = None
    ) -> Iterator[tuple[int, list[np.ndarray]]]:
        """``(start, T frames)`` of every window, in order, cut while the video is decoded.

        Args:
            skip: Window starts not to produce (their frames are not converted unless another
                window uses them).
            last: The last start to produce; decoding stops after its window. ``None``: the
                whole video (its frame count is learnt on the way).

        Yields:
            The window's first frame and its ``T`` frames (a new list; the arrays may be
            shared with overlapping windows).

        Raises:
            VideoDecodeError: The video cannot be opened or is corrupt; windows before the
                damage have been yielded.
        """

        def wanted(start: int) -> bool:
            return (
                start >= 0
                and start % self.stride == 0
                and start not in skip
                and (last is None or start <= last)
            )

        def needed(index: int) -> bool:
            return any(wanted(index - k * self.frame_stride) for k in range(self.num_frames))

        end = None if last is None else last + self.span
        for start, held in sliding_windows(self.frames(needed, end), self.span, self.stride):
            if wanted(start):
                yield start, held[:: self.frame_stride]
