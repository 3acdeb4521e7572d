"""Tokenize a video file window by window with a trained scorer and the token allocator.

This is the library behind ``adaptok tokenize``: a person with a trained tokenizer + scorer
points it at any video file and gets, for every ``num_frames``-frame window, the codes the
tokenizer keeps and how many tokens each temporal block got.

Windows are cut the way the evaluation data path cuts clips: frames are taken by
presentation time at a constant rate (``fps``, default the video's own; variable-frame-rate
input is resampled to it, as ``adaptok-shards`` does), display rotation is applied, the short
side is resized to the tokenizer's ``image_size`` and the centre square is kept. The
decoding and cutting are those of the annotation loader (one implementation,
:mod:`adaptok.data.windows`). Windows start every ``stride`` frames (default: back to back);
frames after the last full window are not tokenized (the result says how many).

The video is streamed (:class:`WindowSource`): frames are decoded, converted and cut into
windows one at a time, and a window is encoded as soon as its batch is full, so memory is
bounded by a batch of windows whatever the video's length. Only the codes, lengths and
quality figures of every window are kept; the frames are kept only when asked
(``keep_frames``), and :class:`SideBySideWriter` writes input | reconstruction as the windows
come (``on_window``).

Allocation (IPAL, docs/METHOD.md section 4; costs predicted by the scorer of section 3) uses
:class:`~adaptok.budget_planner.TokenBudgetPlanner` with the scorer's predicted costs:

* ``per_clip``: each window gets ``K * budget * M`` tokens, solved exactly per window;
* ``streaming``: causal, block by block, windows in temporal order, the planner's price per
  token carried from one window to the next (each window's total is still enforced);
* ``target``: no budget, the fewest tokens whose predicted cost reaches ``threshold``
  (:meth:`~adaptok.budget_planner.TokenBudgetPlanner.plan_target`), in the units of the cost
  metric the scorer was trained on (:data:`adaptok.pretrained.COST_UNITS`);
* ``uniform``: ``round(budget * M)`` tokens in every block, no scorer (a tokenizer alone
  works).

Budgets here are FRACTIONS of the tokens per block ``M`` (``0.25`` = a quarter of them),
turned into :class:`adaptok.alloc.TokenBudget` values and checked by the planner
(:meth:`~adaptok.budget_planner.TokenBudgetPlanner.check_budget`) before any decoding.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import av
import numpy as np
import torch
from tqdm.auto import tqdm

from adaptok.alloc import TokenBudget
from adaptok.atomic_write import write_atomic
from adaptok.budget_planner import TokenBudgetPlanner
from adaptok.data.pictures import SideBySideFrames, video_to_uint8
from adaptok.data.video_io import VideoDecodeError, VideoEncoder, probe_video
from adaptok.data.windows import WindowDecoder, window_starts
from adaptok.metrics.frame_quality import psnr_per_video, ssim_per_video
from adaptok.nn.scorer import BlockCausalScorer
from adaptok.nn.tokenizer import AdapTokTokenizer
from adaptok.pretrained import TokenizeModeName

__all__ = [
    "CODE_PAD",
    "TOKENIZE_MODES",
    "VIDEO_HINT",
    "SideBySideWriter",
    "TokenizeMode",
    "TokenizedVideo",
    "TokenizedWindow",
    "VideoTooShortError",
    "VideoWindows",
    "WindowSource",
    "check_video_file",
    "load_npz",
    "read_windows",
    "save_npz",
    "side_by_side_frames",
    "tokenize_video",
    "write_side_by_side",
]

TokenizeMode = TokenizeModeName
"""The allocation modes (:data:`adaptok.pretrained.TokenizeModeName`, one definition)."""
TOKENIZE_MODES: tuple[str, ...] = get_args(TokenizeModeName)
VIDEO_HINT = "give a video file FFmpeg can decode, e.g. .mp4, .mkv, .webm or .mov"
"""What would work, appended to the refusal of a file that is not a readable video."""

CODE_PAD = 65535
"""Value stored in ``codes`` at dropped positions (beyond a block's length); never a code,
since codebooks of more than 65535 entries are refused (codes are stored as uint16)."""


class VideoTooShortError(ValueError):
    """The video has fewer frames than one tokenizer window."""


def check_video_file(path: str | Path) -> Path:
    """Refuse, before any decoding, a path that cannot be a video: missing, a folder, empty.

    Args:
        path: The video file.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        FileNotFoundError: Nothing at ``path``.
        IsADirectoryError: ``path`` is a folder.
        VideoDecodeError: An empty (0-byte) file, or something else that is not a regular
            file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"video file not found: {path} (no such file; check the path)")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a video file; {VIDEO_HINT}")
    if not path.is_file():
        raise VideoDecodeError(f"{path} is not a regular file; {VIDEO_HINT}")
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"{path} is empty (0 bytes), not a video; {VIDEO_HINT}")
    return path


def _too_short_message(path: str | Path, frames: int, fps: float, decoded: int, needed: int) -> str:
    """The one-line refusal of a video shorter than one window: both counts, what would work.

    Args:
        path: The video file.
        frames: Frames taken from it at ``fps``.
        fps: Rate the frames are taken at.
        decoded: Pictures decoded from the file.
        needed: Frames of one tokenizer window ``T``.
    """
    length = f"{frames / fps:.3g} s, " if fps > 0 else ""
    minimum = f" ({needed / fps:.3g} s at {fps:.4g} fps)" if fps > 0 else ""
    return (
        f"{path} is too short: it has {frames} frames at {fps:.4g} fps ({length}{decoded} "
        f"decoded), and one tokenizer window needs {needed} frames; give a video of at least "
        f"{needed} frames{minimum}, or take frames at a higher rate with `fps=` (`--fps` on "
        "the command line), which repeats frames"
    )


# --------------------------------------------------------------------------- windows
@dataclass(frozen=True)
class VideoWindows:
    """The frames of a video as the tokenizer sees them, and where its windows start.

    Attributes:
        frames: ``(N, S, S, 3)`` uint8 RGB frames at ``fps``, upright, short side resized to
            ``S`` and centre-cropped.
        fps: Frame rate of ``frames`` (frames per second).
        starts: ``(W,)`` first frame (index into ``frames``) of each window.
        num_frames: Frames per window ``T``.
        source_frames: Frames decoded from the file (before resampling to ``fps``).
        source_size: Displayed ``(height, width)`` of the file.
        rotation: Display rotation applied, degrees counter-clockwise.
        properties: The file's source properties (stream, pixel format, colour, field
            order), see :class:`~adaptok.data.video_io.SourceProperties`.
        adjustments: What decoding changed (stream choice, alpha, tone mapping,
            deinterlacing, rotation, rebased timestamps).
    """

    frames: np.ndarray
    fps: float
    starts: np.ndarray
    num_frames: int
    source_frames: int
    source_size: tuple[int, int]
    rotation: int
    properties: dict = field(default_factory=dict)
    adjustments: dict = field(default_factory=dict)

    @property
    def upscale(self) -> float:
        """How much the short side was enlarged to reach ``S`` (1.0 or less: not enlarged)."""
        return self.frames.shape[1] / max(min(self.source_size), 1)

    @property
    def uncovered_frames(self) -> int:
        """Frames after the end of the last window (not tokenized)."""
        return len(self.frames) - (int(self.starts[-1]) + self.num_frames)

    def window(self, index: int) -> np.ndarray:
        """``(T, S, S, 3)`` uint8 frames of window ``index``."""
        start = int(self.starts[index])
        return self.frames[start : start + self.num_frames]


class WindowSource(WindowDecoder):
    """A video file opened for tokenizer windows, decoded one frame at a time.

    The tokenizer's reading of the shared window decoding
    (:class:`~adaptok.data.windows.WindowDecoder`): frames are taken at a constant rate by
    presentation time (``constant_rate`` timing: an even timeline at the video's own rate
    keeps every frame, gaps repeat the frame before them), the short side is resized to ``S``
    in swscale and the centre square kept, and :meth:`windows` cuts them into windows holding
    only what a later window still needs. At the video's own rate this is a single pass; at
    another rate (``fps``) or when the file gives no rate, a first pass reads the timestamps
    (no pixels) to choose frames. Opening probes the file, so errors come at once; after a
    full pass the counts, properties and adjustments are set.

    Args:
        path: The video file (any container/codec FFmpeg reads).
        num_frames: Frames per window ``T`` (the tokenizer's clip length).
        image_size: Side ``S`` of the square frames (the tokenizer's ``image_size``).
        stride: Frames between window starts (>= 1); default ``num_frames`` (no overlap).
        fps: Rate to take frames at, by presentation time; default the video's average rate.
        stream: Video stream ordinal for files with several (``None``: the best one, as
            ffmpeg picks it).
        background: Colour transparent pixels of alpha sources are composited over.

    Attributes:
        fps: Rate the frames are taken at.
        source_size: Displayed ``(height, width)`` of the file.
        total_frames: Frames taken at ``fps`` (after a full pass).
        source_frames: Frames decoded from the file (after a full pass).
        rotation: Display rotation applied, degrees counter-clockwise (after a full pass).
        properties: The file's source properties as a dict (after a full pass).
        adjustments: What decoding changed (after a full pass).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        IsADirectoryError: ``path`` is a folder.
        VideoDecodeError: The file is empty, not a regular file, or cannot be opened or
            decoded as video (one line naming the file and what would work).
        ValueError: ``stride`` or ``fps`` is not positive.
    """

    def __init__(
        self,
        path: str | Path,
        num_frames: int,
        image_size: int,
        stride: int | None = None,
        fps: float | None = None,
        stream: int | None = None,
        background: tuple[int, int, int] = (0, 0, 0),
    ) -> None:
        self.check_settings(num_frames if stride is None else int(stride), fps=fps)
        self.path = check_video_file(path)
        with self._decoding():
            info = probe_video(self.path, stream)
            super().__init__(
                self.path,
                num_frames,
                image_size,
                (info.height, info.width),
                stride,
                timing="constant_rate",
                fps=fps,
                nominal_fps=info.fps,
                stream=stream,
                background=background,
            )
        self.image_size = self.size
        self.source_size = (info.height, info.width)
        self.header_frames = info.frames
        self.total_frames = 0
        self.source_frames = 0
        self.rotation = 0
        self.properties: dict = {}

    @contextlib.contextmanager
    def _decoding(self) -> Iterator[None]:
        try:
            yield
        except (VideoDecodeError, av.FFmpegError) as error:
            raise VideoDecodeError(self._decode_failure(error)) from error

    def _decode_failure(self, error: Exception) -> str:
        """One line for a file FFmpeg cannot read: the file, FFmpeg's reason, what would work.

        FFmpeg's reason is its message without the errno number and the path it repeats.
        """
        cause = error if isinstance(error, av.FFmpegError) else error.__cause__
        if isinstance(cause, av.FFmpegError):
            reason = cause.strerror or type(cause).__name__
            decoded = getattr(self, "decoded", 0)
            if decoded:
                return (
                    f"{self.path} is corrupt: decoding stopped after {decoded} frames "
                    f"({reason}); re-encode or repair the file"
                )
            return f"{self.path} is not a video FFmpeg can read ({reason}); {VIDEO_HINT}"
        message = " ".join(str(error).split())
        if message.startswith("no video stream"):
            return f"{message} (audio or data only?); {VIDEO_HINT}"
        if message.startswith("no decodable frames"):
            return f"{message} (truncated or corrupt?); {VIDEO_HINT}"
        return message  # e.g. a --stream that does not exist: the message names the choices

    def estimated_windows(self) -> int | None:
        """Windows the container's frame count promises (a progress estimate), if any."""
        if self.header_frames <= 0 or not self.nominal_fps > 0:
            return None
        frames = int(self.header_frames * self.fps / self.nominal_fps)
        return len(window_starts(frames, self.num_frames, self.stride))

    def frames(
        self, needed: Callable[[int], bool] | None = None, end: int | None = None
    ) -> Iterator[np.ndarray | None]:
        """``(S, S, 3)`` uint8 frames at :attr:`fps`, upright, resized and centre-cropped.

        One pass decodes the file once; a repeated frame is yielded again as the same array.
        Arguments as :meth:`~adaptok.data.windows.WindowDecoder.frames`.

        Raises:
            VideoDecodeError: The file is corrupt or holds no decodable frame (the message
                names it).
        """
        with self._decoding():
            yield from super().frames(needed, end)
        if end is not None and self.taken >= end:
            return  # stopped early: the file's counts are not known
        if self.source_properties is None:
            raise VideoDecodeError(
                f"no decodable frames in {self.path} (truncated or corrupt?); {VIDEO_HINT}"
            )
        self.total_frames, self.source_frames = self.taken, self.decoded
        self.rotation = self.source_properties.rotation
        self.properties = self.source_properties.as_dict()

    def windows(
        self, skip: Collection[int] = frozenset(), last: int | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, (T, S, S, 3) uint8)`` windows every ``stride`` frames, lazily.

        Arguments as :meth:`~adaptok.data.windows.WindowDecoder.windows`.

        Raises:
            VideoTooShortError: The video ends before one window (the message gives both
                counts), after the pass.
            VideoDecodeError: The file is corrupt.
        """
        produced = 0
        for start, frames in super().windows(skip, last):
            produced += 1
            yield start, np.stack(frames)
        if not produced:
            raise VideoTooShortError(
                _too_short_message(
                    self.path, self.total_frames, self.fps, self.source_frames, self.num_frames
                )
            )

    @property
    def upscale(self) -> float:
        """How much the short side was enlarged to reach ``S`` (1.0 or less: not enlarged)."""
        return self.image_size / max(min(self.source_size), 1)


def read_windows(
    path: str | Path, num_frames: int, image_size: int, **options: Any
) -> VideoWindows:
    """Decode a whole video file into tokenizer windows in memory (short videos; tests).

    :func:`tokenize_video` streams instead; both take the same frames (:class:`WindowSource`).

    Args:
        path: The video file (any container/codec FFmpeg reads).
        num_frames: Frames per window ``T`` (the tokenizer's clip length).
        image_size: Side ``S`` of the square frames (the tokenizer's ``image_size``).
        **options: ``stride``, ``fps``, ``stream`` and ``background``, as
            :class:`WindowSource` takes them.

    Returns:
        The frames and window starts, with what decoding changed (``adjustments``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        IsADirectoryError: ``path`` is a folder.
        VideoDecodeError: The file cannot be opened or decoded as video.
        VideoTooShortError: Fewer frames than ``num_frames`` (the message gives both counts).
        ValueError: ``stride`` or ``fps`` is not positive.
    """
    source = WindowSource(path, num_frames, image_size, **options)
    frames = np.stack(list(source.frames()))
    starts = window_starts(len(frames), num_frames, source.stride)
    if not starts:
        raise VideoTooShortError(
            _too_short_message(
                source.path, len(frames), source.fps, source.source_frames, num_frames
            )
        )
    return VideoWindows(
        frames=frames,
        fps=source.fps,
        starts=np.asarray(starts, dtype=np.int64),
        num_frames=num_frames,
        source_frames=source.source_frames,
        source_size=source.source_size,
        rotation=source.rotation,
        properties=source.properties,
        adjustments=source.adjustments,
    )


# --------------------------------------------------------------------------- result
@dataclass
class TokenizedVideo:
    """Codes and per-block token counts of every window of a video.

    Attributes:
        codes: ``(W, K, M)`` uint16 codes; positions at or beyond a block's length hold
            :data:`CODE_PAD`.
        lengths: ``(W, K)`` int16 tokens kept per block.
        window_starts: ``(W,)`` int64 first frame of each window (index into the frames
            taken at ``fps``).
        budget: Fraction of the tokens per block spent on average (NaN in ``target`` mode).
        mode: ``per_clip``, ``streaming``, ``target`` or ``uniform``.
        candidate_lengths: ``(J,)`` the scorer's candidate lengths (``uniform``: ``1..M``).
        source: Path of the video file.
        fps: Rate the frames were taken at (frames per second).
        checkpoint: Path of the checkpoint (or export folder) the networks came from.
        threshold: ``target`` mode's predicted-cost threshold in the scorer metric's units
            (NaN otherwise).
        solver: Allocation solver (``fast`` or ``mip``).
        psnr: ``(W,)`` PSNR of each window's reconstruction against its input, dB.
        ssim: ``(W,)`` SSIM of the same, in [-1, 1].
        tokens_per_block: ``M``.
        num_frames: Frames per window ``T``.
        image_size: Side of the square frames ``S``.
        total_frames: Frames taken from the video at ``fps``.
        upscale: How much the video's short side was enlarged to reach ``S`` (> 1: the
            input was smaller than the tokenizer's frames).
        source_video: JSON of the file's source properties (stream, colour, field order).
        adjustments: JSON of what decoding changed (``{}`` when nothing): stream choice,
            alpha compositing, tone mapping, deinterlacing, rotation, rebased timestamps.
        metric: The cost metric the scorer was trained on (``lpips``, ``mse``, ``psnr``,
            ``ssim``: the units of ``threshold``); ``""`` when not known or no scorer.
        inputs: ``(W, T, S, S, 3)`` uint8 input windows (not saved to npz).
        reconstruction: ``(W, T, S, S, 3)`` uint8 reconstructions (not saved to npz).
    """

    codes: np.ndarray
    lengths: np.ndarray
    window_starts: np.ndarray
    budget: float
    mode: str
    candidate_lengths: np.ndarray
    source: str
    fps: float
    checkpoint: str
    threshold: float
    solver: str
    psnr: np.ndarray
    ssim: np.ndarray
    tokens_per_block: int
    num_frames: int
    image_size: int
    total_frames: int
    upscale: float = 1.0
    source_video: str = "{}"
    adjustments: str = "{}"
    metric: str = ""
    inputs: np.ndarray | None = field(default=None, repr=False)
    reconstruction: np.ndarray | None = field(default=None, repr=False)

    @property
    def num_windows(self) -> int:
        """``W``."""
        return int(self.lengths.shape[0])

    @property
    def uncovered_frames(self) -> int:
        """Frames after the end of the last window (not tokenized)."""
        return self.total_frames - (int(self.window_starts[-1]) + self.num_frames)

    @property
    def mean_tokens_per_block(self) -> float:
        """Mean kept tokens per block over every window."""
        return float(self.lengths.mean())

    def flat_codes(self) -> torch.Tensor:
        """``(W, K * M)`` long codes as ``tokenizer.decode`` takes them (pads kept)."""
        return torch.from_numpy(self.codes.astype(np.int64)).flatten(1)


_SAVED_ARRAYS = ("codes", "lengths", "window_starts", "candidate_lengths", "psnr", "ssim")
_SAVED_SCALARS = (
    "budget",
    "mode",
    "source",
    "fps",
    "checkpoint",
    "threshold",
    "solver",
    "tokens_per_block",
    "num_frames",
    "image_size",
    "total_frames",
    "upscale",
    "source_video",
    "adjustments",
    "metric",
)
_OPTIONAL_SCALARS = ("source_video", "adjustments", "metric")
"""Added later: files written before them still load (with the field's default)."""


def save_npz(result: TokenizedVideo, path: str | Path) -> Path:
    """Write the codes, lengths and settings to a compressed ``.npz`` (no frames).

    Keys: ``codes`` uint16 (W, K, M) holding :data:`CODE_PAD` past each block's length,
    ``lengths`` int16 (W, K), ``window_starts`` int64 (W,), ``candidate_lengths`` int64 (J,),
    ``psnr`` and ``ssim`` float64 (W,), and 0-d ``budget``, ``mode``, ``source``, ``fps``,
    ``checkpoint``, ``threshold``, ``solver``, ``tokens_per_block``, ``num_frames``,
    ``image_size``, ``total_frames``, ``upscale``, ``source_video``, ``adjustments`` and
    ``metric`` (README "Tokenize your own video" lists them). Readable with ``np.load(path)``
    (no pickles).

    Returns:
        The path written (numpy appends ``.npz`` when missing).
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    arrays = {name: np.asarray(getattr(result, name)) for name in _SAVED_ARRAYS}
    arrays.update({name: np.asarray(getattr(result, name)) for name in _SAVED_SCALARS})
    write_atomic(path, lambda handle: np.savez_compressed(handle, **arrays))
    return path


def load_npz(path: str | Path) -> TokenizedVideo:
    """Read a file written by :func:`save_npz` (``inputs``/``reconstruction`` are None).

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: A key is missing (not a tokenize result).
    """
    with np.load(Path(path), allow_pickle=False) as data:
        required = [k for k in (*_SAVED_ARRAYS, *_SAVED_SCALARS) if k not in _OPTIONAL_SCALARS]
        missing = [k for k in required if k not in data.files]
        if missing:
            raise ValueError(f"{path} is not an `adaptok tokenize` result: no {missing}")
        values = {name: data[name] for name in _SAVED_ARRAYS}
        scalars = {name: data[name].item() for name in _SAVED_SCALARS if name in data.files}
    return TokenizedVideo(**values, **scalars)


# --------------------------------------------------------------------------- tokenize
def _as_video(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(B, T, S, S, 3)`` uint8 -> ``(B, 3, T, S, S)`` float32 in [0, 1] on ``device``."""
    video = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    return video.permute(0, 4, 1, 2, 3).float().div_(255.0)


@dataclass(frozen=True)
class TokenizedWindow:
    """One window as :func:`tokenize_video` finishes it (handed to ``on_window``).

    Attributes:
        index: Window number ``w``.
        start: First frame of the window (index into the frames taken at ``fps``).
        fps: Rate the frames were taken at.
        inputs: ``(T, S, S, 3)`` uint8 input frames.
        reconstruction: ``(T, S, S, 3)`` uint8 reconstruction from the kept tokens.
        lengths: ``(K,)`` tokens kept per block.
    """

    index: int
    start: int
    fps: float
    inputs: np.ndarray
    reconstruction: np.ndarray
    lengths: np.ndarray


@torch.no_grad()
def tokenize_video(
    path: str | Path,
    tokenizer: AdapTokTokenizer,
    scorer: BlockCausalScorer | None,
    budget: float | None = 0.25,
    mode: TokenizeMode = "per_clip",
    *,
    threshold: float | None = None,
    solver: Literal["fast", "mip"] = "fast",
    equality: bool = True,
    stride: int | None = None,
    fps: float | None = None,
    batch_size: int = 8,
    keep_frames: bool = True,
    checkpoint: str = "",
    progress: bool = False,
    stream: int | None = None,
    background: tuple[int, int, int] = (0, 0, 0),
    on_window: Callable[[TokenizedWindow], object] | None = None,
    metric: str = "",
) -> TokenizedVideo:
    """Encode a video window by window and keep the tokens the scorer + allocator choose.

    The video is streamed (:class:`WindowSource`): a batch of ``batch_size`` windows is
    encoded as soon as its frames are decoded, and only what a later window still needs is
    held, so memory does not grow with the video's length unless ``keep_frames`` asks for
    every frame. The progress bar starts with the first window, so a refused file (too short,
    unreadable) prints nothing before the error.

    Args:
        path: The video file.
        tokenizer: The frozen tokenizer (its ``num_frames``/``image_size`` define a window).
        scorer: The trained scorer for that tokenizer (its predictions are allocated in the
            label metric's units, ``scorer.to_label_units``); None (or ignored) in
            ``uniform`` mode.
        budget: Fraction of the ``M`` tokens per block to keep on average, in (0, 1]
            (``per_clip``/``streaming``/``uniform``); must be None in ``target`` mode.
        mode: ``per_clip`` (each window its own exact budget), ``streaming`` (causal, block
            by block, price carried over windows), ``target`` or ``uniform``
            (``round(budget * M)`` tokens in every block, no scorer).
        threshold: ``target`` mode: the predicted cost each block must reach, in the units of
            the metric the scorer was trained on (LPIPS for the paper's scorer, MSE for the
            demo's; ``-PSNR`` / ``-SSIM`` for those metrics:
            :data:`adaptok.pretrained.COST_UNITS`), compared with the predictions
            in those units.
        solver: ``fast`` (exact) or ``mip`` (python-mip CBC).
        equality: Spend each window's budget exactly (the paper) instead of at most.
        stride: Frames between window starts; default ``num_frames``.
        fps: Frame rate to take frames at; default the video's.
        batch_size: Windows encoded together (``streaming`` always takes one at a time).
        keep_frames: Keep the uint8 input windows and reconstructions in the result (memory
            grows with the video; ``on_window`` sees them without keeping them).
        checkpoint: Checkpoint path recorded in the result.
        progress: Show a progress bar over windows.
        stream: Video stream ordinal for files with several (``None``: the best one).
        background: Colour transparent pixels of alpha sources are composited over.
        on_window: Called with each :class:`TokenizedWindow`, in order, as it is done (e.g.
            :meth:`SideBySideWriter.add`).
        metric: The scorer's cost metric, recorded in the result (the units of
            ``threshold``).

    Returns:
        The :class:`TokenizedVideo`.

    Raises:
        ValueError: Unknown mode, a scorer mode without a scorer, a budget in ``target``
            mode or a threshold in the others, a scorer that does not match the tokenizer, a
            ``uniform`` budget that rounds to no token, a codebook too large for uint16.
        InfeasibleBudgetError: A budget outside (0, 1], outside the candidates' range, or
            whose window total cannot be spent (the message names the feasible range; see
            :meth:`TokenBudgetPlanner.check_budget`).
        FileNotFoundError / IsADirectoryError / VideoDecodeError / VideoTooShortError: see
            :class:`WindowSource`.
    """
    if mode not in TOKENIZE_MODES:
        raise ValueError(f"unknown mode {mode!r}: choose one of {', '.join(TOKENIZE_MODES)}")
    if mode == "uniform":
        scorer = None  # not used: every block keeps round(budget * M) tokens
    elif scorer is None:
        raise ValueError(f"mode {mode!r} needs a scorer; without one only mode 'uniform' works")
    elif (scorer.num_blocks, scorer.tokens_per_block) != (
        tokenizer.num_blocks,
        tokenizer.tokens_per_block,
    ):
        raise ValueError(
            f"the scorer is built for {scorer.num_blocks} blocks x {scorer.tokens_per_block} "
            f"tokens, the tokenizer has {tokenizer.num_blocks} x {tokenizer.tokens_per_block}"
        )
    if tokenizer.quantizer.codebook_size > CODE_PAD:
        raise ValueError(f"codebooks over {CODE_PAD} codes do not fit the uint16 codes array")
    tokens, blocks = tokenizer.tokens_per_block, tokenizer.num_blocks
    candidates = list(range(1, tokens + 1)) if scorer is None else list(scorer.candidate_lengths)
    planner = TokenBudgetPlanner(
        tokenizer,
        scorer,
        mode="streaming" if mode == "streaming" else "per_clip",
        solver=solver,
        equality=equality,
        candidates=candidates,
    )
    token_budget: TokenBudget | None = None
    if mode == "target":
        if threshold is None or budget is not None:
            raise ValueError("target mode takes a threshold (--threshold) and no budget")
    else:
        if threshold is not None:
            raise ValueError(f"a threshold is only used in target mode, not {mode}")
        if budget is None:
            raise ValueError(f"{mode} mode needs a budget (a fraction in (0, 1])")
        token_budget = planner.budget_from_fraction(budget)
        planner.check_budget(token_budget, policy="uniform" if mode == "uniform" else "scorer")
    source = WindowSource(
        path, tokenizer.num_frames, tokenizer.image_size, stride, fps, stream, background
    )

    tokenizer.eval()
    if scorer is not None:
        scorer.eval()
    device = next(tokenizer.parameters()).device
    step = 1 if mode == "streaming" else max(1, int(batch_size))
    starts: list[int] = []
    codes: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    psnr: list[np.ndarray] = []
    ssim: list[np.ndarray] = []
    inputs: list[np.ndarray] = []
    recons: list[np.ndarray] = []
    bar: tqdm | None = None  # started by the first window: a refusal comes before any output

    def encode_batch(batch: list[tuple[int, np.ndarray]]) -> None:
        frames = np.stack([window for _, window in batch])
        video = _as_video(frames, device)
        encoding = tokenizer.encode(video)
        if token_budget is None:  # target mode
            chosen = planner.plan_target(video, encoding, float(threshold))  # type: ignore[arg-type]
        elif mode == "uniform":
            chosen = planner.plan(video, encoding, token_budget, policy="uniform")
        else:
            chosen = planner.plan(video, encoding, token_budget, policy="scorer", mode=mode)
        recon = tokenizer.decode(encoding.codes, chosen).clamp(0, 1)
        psnr.append(psnr_per_video(video, recon).cpu().numpy())
        ssim.append(ssim_per_video(video, recon).cpu().numpy())
        block_codes = encoding.codes.view(len(batch), blocks, tokens)
        dropped = torch.arange(tokens, device=device)[None, None, :] >= chosen[:, :, None]
        codes.append(block_codes.masked_fill(dropped, CODE_PAD).cpu().numpy().astype(np.uint16))
        chosen_array = chosen.cpu().numpy().astype(np.int16)
        lengths.append(chosen_array)
        if keep_frames or on_window is not None:
            recon_frames = video_to_uint8(recon)
            if keep_frames:
                inputs.append(frames)
                recons.append(recon_frames)
            if on_window is not None:
                for row, (start, window) in enumerate(batch):
                    on_window(
                        TokenizedWindow(
                            index=len(starts) - len(batch) + row,
                            start=start,
                            fps=source.fps,
                            inputs=window,
                            reconstruction=recon_frames[row],
                            lengths=chosen_array[row],
                        )
                    )
        if bar is not None:
            bar.update(len(batch))

    batch: list[tuple[int, np.ndarray]] = []
    try:
        for start, window in source.windows():
            if bar is None:
                bar = tqdm(
                    total=source.estimated_windows(),
                    desc="windows",
                    unit="window",
                    disable=not progress,
                )
            starts.append(start)
            batch.append((start, window))
            if len(batch) == step:
                encode_batch(batch)
                batch = []
        if batch:
            encode_batch(batch)
    finally:
        if bar is not None:
            bar.close()
    return TokenizedVideo(
        codes=np.concatenate(codes),
        lengths=np.concatenate(lengths),
        window_starts=np.asarray(starts, dtype=np.int64),
        budget=float("nan") if mode == "target" else float(budget),
        mode=mode,
        candidate_lengths=np.asarray(candidates, dtype=np.int64),
        source=str(path),
        fps=source.fps,
        checkpoint=str(checkpoint),
        threshold=float("nan") if threshold is None else float(threshold),
        solver=solver,
        psnr=np.concatenate(psnr).astype(np.float64),
        ssim=np.concatenate(ssim).astype(np.float64),
        tokens_per_block=tokens,
        num_frames=tokenizer.num_frames,
        image_size=tokenizer.image_size,
        total_frames=source.total_frames,
        upscale=source.upscale,
        source_video=json.dumps(source.properties, sort_keys=True),
        adjustments=json.dumps(source.adjustments, sort_keys=True),
        metric="" if scorer is None else str(metric),
        inputs=np.concatenate(inputs) if keep_frames else None,
        reconstruction=np.concatenate(recons) if keep_frames else None,
    )


# --------------------------------------------------------------------------- video output
def _windows_of(result: TokenizedVideo) -> Iterator[TokenizedWindow]:
    """The windows of a result that holds its frames, in order.

    Raises:
        ValueError: The result holds no frames (loaded from npz, or ``keep_frames=False``).
    """
    inputs, reconstruction = result.inputs, result.reconstruction
    if inputs is None or reconstruction is None:
        raise ValueError("the result holds no frames: tokenize with keep_frames=True")
    return (
        TokenizedWindow(
            index=index,
            start=int(result.window_starts[index]),
            fps=result.fps,
            inputs=inputs[index],
            reconstruction=reconstruction[index],
            lengths=result.lengths[index],
        )
        for index in range(result.num_windows)
    )


def side_by_side_frames(result: TokenizedVideo, scale: int = 1) -> np.ndarray:
    """Input | reconstruction frames in the video's time order.

    Each window contributes its frames up to the next window's start (all of them for the
    last window), so overlapping windows are not shown twice
    (:class:`~adaptok.data.pictures.SideBySideFrames`, as :class:`SideBySideWriter` writes).

    Args:
        result: A result with ``inputs`` and ``reconstruction``.
        scale: Integer nearest-neighbour enlargement (small tokenizer frames are tiny).

    Returns:
        ``(F, S * scale, 2 * S * scale, 3)`` uint8.

    Raises:
        ValueError: The result holds no frames (loaded from npz, or ``keep_frames=False``),
            or ``scale`` is below 1.
    """
    windows = _windows_of(result)
    layout = SideBySideFrames(scale)
    pictures: list[np.ndarray] = []
    for window in windows:
        pictures.extend(layout.add(window.start, window.inputs, window.reconstruction))
    pictures.extend(layout.finish())
    return np.stack(pictures)


class SideBySideWriter:
    """Write input | reconstruction as an MP4 while the windows come (memory stays flat).

    Each window contributes its frames up to the next window's start (all of them for the
    last window), as :func:`side_by_side_frames` does
    (:class:`~adaptok.data.pictures.SideBySideFrames`), so overlapping windows are not shown
    twice. Only the compressed video and one window are held; the frames are encoded by the
    suite's one MP4 encoder (:class:`~adaptok.data.video_io.VideoEncoder`, crf 12) and the
    file is written (through a temporary file, renamed) by :meth:`finish`.

    Args:
        path: The ``.mp4`` to write.
        scale: Integer nearest-neighbour enlargement (small tokenizer frames are tiny).
        codec: ``libx264`` (crf 12), ``mpeg4`` (FFmpeg's own encoder, in every build) or
            ``auto`` (libx264 when this FFmpeg has it).

    Raises:
        ValueError: An unknown codec or a scale below 1.
    """

    def __init__(
        self,
        path: str | Path,
        scale: int = 1,
        codec: Literal["auto", "libx264", "mpeg4"] = "auto",
    ) -> None:
        if codec == "auto":
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        if codec not in ("libx264", "mpeg4"):
            raise ValueError(f"codec must be auto, libx264 or mpeg4, got {codec!r}")
        self.layout = SideBySideFrames(scale)
        self.path, self.scale, self.codec = Path(path), int(scale), codec
        self.encoder: VideoEncoder | None = None

    def add(self, window: TokenizedWindow) -> None:
        """Take the next window (in order); the one before it is encoded now."""
        if self.encoder is None:
            self.encoder = VideoEncoder(window.fps, crf=12, codec=self.codec)
        for picture in self.layout.add(window.start, window.inputs, window.reconstruction):
            self.encoder.add(picture)

    def finish(self) -> Path:
        """Encode the last window whole, write the file and return its path.

        Raises:
            ValueError: No window was added.
            OSError: The write failed (names the file; nothing is left behind).
        """
        if self.encoder is None:
            raise ValueError("no windows to write")
        for picture in self.layout.finish():
            self.encoder.add(picture)
        data = self.encoder.finish()
        write_atomic(self.path, data)
        return self.path

    def close(self) -> None:
        """Drop an unfinished video (after an error)."""
        if self.encoder is not None:
            self.encoder.close()
        self.layout = SideBySideFrames(self.scale)


def write_side_by_side(
    result: TokenizedVideo,
    path: str | Path,
    scale: int = 1,
    codec: Literal["auto", "libx264", "mpeg4"] = "auto",
) -> Path:
    """Write input | reconstruction of a result that holds its frames as an MP4.

    Args:
        result: A result holding frames (``keep_frames=True``).
        path: The ``.mp4`` to write.
        scale: Integer enlargement (see :func:`side_by_side_frames`).
        codec: ``libx264`` (crf 12), ``mpeg4`` (FFmpeg's own encoder, in every build) or
            ``auto`` (libx264 when this FFmpeg has it).

    Returns:
        The path written.

    Raises:
        ValueError: The result holds no frames, or an unknown codec.
    """
    windows = _windows_of(result)
    writer = SideBySideWriter(path, scale, codec)
    try:
        for window in windows:
            writer.add(window)
        return writer.finish()
    finally:
        writer.close()
