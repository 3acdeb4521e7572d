r"""``adaptok tokenize``: tokenize your own video with a trained scorer checkpoint.

Example::

    adaptok tokenize my_clip.mp4 --ckpt runs/demo/scorer/checkpoints/last.ckpt \\
        --budget 0.25 --out tokens.npz --reconstruct side_by_side.mp4

``--ckpt`` takes a scorer stage checkpoint (it carries its tokenizer, so it is the only file
needed) or a folder ``adaptok export`` wrote from one; with ``--mode uniform`` (the same
number of tokens in every block, no scorer) any stage's checkpoint or export, a tokenizer's
included. Either is loaded once with :func:`adaptok.load_pretrained` (no Lightning, no
unpickled code). The work is done by
:func:`adaptok.tokenize.tokenize_video`; this module parses the command line, loads the
networks, prints the tokens per block and the reconstruction quality, and writes the
outputs. Errors a user can fix (missing, empty or undecodable file, a video shorter than one
window, an infeasible budget, a checkpoint without the scorer the mode needs) are printed as
one line, before any progress output, and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from adaptok.alloc import SOLVERS
from adaptok.data.colour import parse_background
from adaptok.data.video_io import VideoDecodeError
from adaptok.pretrained import (
    COST_UNITS,
    PretrainedAdapTok,
    WeightsMismatchError,
    cost_unit,
    load_pretrained,
)
from adaptok.tokenize import (
    TOKENIZE_MODES,
    SideBySideWriter,
    TokenizedVideo,
    check_video_file,
    save_npz,
    tokenize_video,
)

__all__ = [
    "CKPT_SOURCES",
    "build_parser",
    "describe_source",
    "format_summary",
    "load_model",
    "main",
]

_PROG = "adaptok tokenize"
_MAX_WINDOW_LINES = 40
_NETWORKS = ("tokenizer", "scorer", "generator")

CKPT_SOURCES = (
    "a scorer stage checkpoint (e.g. runs/demo/scorer/checkpoints/last.ckpt; train one with "
    "`adaptok fit --config experiments/demo/data.yaml --config experiments/demo/scorer.yaml`) "
    "or a folder `adaptok export` wrote from one"
)
"""What ``--ckpt`` takes for the scorer modes, in words (help and refusals)."""
_UNIFORM_NOTE = (
    "or add --mode uniform (round(budget * M) tokens in every block, no scorer), which also "
    "takes a tokenizer's checkpoint or export"
)


def describe_source(path: Path, model: PretrainedAdapTok) -> str:
    """What a loaded ``--ckpt`` is, e.g. ``a TokenizerModule checkpoint with networks: tokenizer``.

    Args:
        path: The checkpoint file or export folder it was loaded from.
        model: What :func:`adaptok.load_pretrained` made of it.

    Returns:
        The kind (``checkpoint`` or ``export folder``), preceded by the stage's class name
        when the source records it (``info["stage"]``), and the networks it holds.
    """
    networks = [name for name in _NETWORKS if getattr(model, name) is not None]
    stage = model.info.get("stage")
    kind = "export folder" if path.is_dir() else "checkpoint"
    what = f"{str(stage).rsplit('.', 1)[-1]} {kind}" if stage else kind
    article = "an" if what[0].lower() in "aeiou" else "a"
    return f"{article} {what} with networks: {', '.join(networks)}"


def _what_works(mode: str) -> str:
    """What ``--ckpt`` takes in ``mode``, in words (the end of a refusal)."""
    if mode == "uniform":
        return "--mode uniform takes any stage's checkpoint or a folder `adaptok export` wrote"
    return f"--ckpt takes {CKPT_SOURCES}, {_UNIFORM_NOTE}"


def load_model(path: str | Path, mode: str, device: torch.device) -> PretrainedAdapTok:
    """The networks of a ``--ckpt``, loaded once with :func:`adaptok.load_pretrained`.

    A checkpoint of any stage or an export folder is read without Lightning and without
    unpickling code; the tokenize pipeline needs only the networks (tokenizer, scorer) and
    the scorer's cost metric (``info["metric"]``).

    Args:
        path: A checkpoint file or an export folder.
        mode: The allocation mode (every mode but ``uniform`` needs a scorer).
        device: Where to put the networks.

    Returns:
        The frozen :class:`~adaptok.pretrained.PretrainedAdapTok`.

    Raises:
        ValueError: In one line: a source that cannot be loaded (missing, a folder that is
            not an export, not a checkpoint, ...; ``load_pretrained``'s reason), or one
            without the scorer ``mode`` needs (what it is), each with what would work.
    """
    path = Path(path).expanduser()
    try:
        model = load_pretrained(path, device)
    except (FileNotFoundError, ValueError) as error:
        reason = str(error) if str(error).startswith(str(path)) else f"{path}: {error}"
        if isinstance(error, WeightsMismatchError):  # no mode can use it: no mode to suggest
            fix = (
                "export it again from its training checkpoint (`adaptok export`)"
                if path.is_dir()
                else "use the checkpoint as its fit wrote it, or one of this suite version"
            )
            raise ValueError(f"--ckpt {reason}; {fix}, or pass another source") from error
        raise ValueError(f"--ckpt {reason}; {_what_works(mode)}") from error
    if model.scorer is None and mode != "uniform":
        raise ValueError(
            f"--ckpt {path} is {describe_source(path, model)} (no scorer), and --mode {mode} "
            f"allocates by a scorer's predicted costs; {_what_works(mode)}"
        )
    return model


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``adaptok tokenize``.

    Returns:
        The parser (``--help`` names every metric's threshold units).
    """
    units = "; ".join(f"{metric}: {unit}" for metric, unit in COST_UNITS.items())
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description=(
            "Encode a video window by window (the tokenizer's clip: num_frames frames at "
            "image_size, short side resized, centre crop) and keep, per block, the tokens the "
            "scorer + allocator choose under a budget (or, --mode uniform, the same number in "
            "every block, without a scorer)."
        ),
    )
    parser.add_argument("video", type=Path, help="the video file")
    parser.add_argument(
        "--ckpt",
        type=Path,
        required=True,
        help=f"{CKPT_SOURCES}; with --mode uniform also a tokenizer (or any stage's) "
        "checkpoint or export",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="fraction of the tokens per block kept on average, in (0, 1] (default 0.25; "
        "not used in target mode)",
    )
    parser.add_argument(
        "--mode",
        default="per_clip",
        help=f"allocation: {', '.join(TOKENIZE_MODES)} (default per_clip; uniform keeps "
        "round(budget * M) tokens in every block and needs no scorer)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="target mode: the predicted cost each block must reach, in the units of the "
        "metric the scorer was trained on (a scorer checkpoint's hyper_parameters 'metric', an "
        "export's spec.json info.metric; a missing --threshold error names it): "
        f"{units}. The demo scorer predicts MSE, the paper's LPIPS",
    )
    parser.add_argument("--solver", default="fast", help=f"{' or '.join(SOLVERS)} (default fast)")
    parser.add_argument(
        "--at-most",
        action="store_true",
        help="spend at most the budget per window (default: exactly, as the paper)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output .npz: codes, lengths, quality and settings (README: Tokenize your own video)",
    )
    parser.add_argument(
        "--reconstruct", type=Path, default=None, help="write input | reconstruction as an mp4"
    )
    parser.add_argument(
        "--scale", type=int, default=1, help="enlargement of the --reconstruct video (integer)"
    )
    parser.add_argument(
        "--stride", type=int, default=None, help="frames between windows (default num_frames)"
    )
    parser.add_argument(
        "--fps", type=float, default=None, help="take frames at this rate (default the video's)"
    )
    parser.add_argument(
        "--stream",
        type=int,
        default=None,
        help="video stream of a file with several (0 = first video stream; default: the "
        "largest, default-flagged one, as ffmpeg picks it)",
    )
    parser.add_argument(
        "--background",
        default="black",
        help="colour transparent pixels are composited over: black, white, gray, #RRGGBB or "
        "R,G,B (default black)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="windows encoded together")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default auto)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or window table")
    return parser


def format_summary(result: TokenizedVideo, table: bool = True) -> str:
    """Tokens per block (per window and mean) and the reconstruction quality, as text.

    Args:
        result: The tokenized video.
        table: Start with one line per window (the first 40).

    Returns:
        The lines, joined by newlines.
    """
    tokens = result.tokens_per_block
    lines = []
    if table:
        lines.append(
            f"{'window':>6} {'start':>6}  {'tokens per block':<26} {'mean':>6} {'PSNR':>7} SSIM"
        )
        shown = min(result.num_windows, _MAX_WINDOW_LINES)
        for index in range(shown):
            row = " ".join(f"{int(n):>3}" for n in result.lengths[index])
            lines.append(
                f"{index:>6} {int(result.window_starts[index]):>6}  {row:<26} "
                f"{result.lengths[index].mean():>6.2f} {result.psnr[index]:>7.2f} "
                f"{result.ssim[index]:.4f}"
            )
        if result.num_windows > shown:
            lines.append(f"  ... {result.num_windows - shown} more windows (all in the npz)")
    mean_tokens = result.mean_tokens_per_block
    per_block = " ".join(f"{v:.2f}" for v in result.lengths.mean(axis=0))
    if result.mode == "target":
        metric = f" of the scorer's cost metric {result.metric}" if result.metric else ""
        budget = f"threshold {result.threshold:g}{metric}"
    elif result.mode == "uniform":  # the count every block kept, round(budget * M)
        kept = int(result.lengths.flat[0])
        budget = f"budget {result.budget:g} = {kept} tokens in every block, no scorer"
    else:
        budget = f"budget {result.budget:g} = {result.budget * tokens:g} tokens"
    lines += [
        f"mode {result.mode} ({budget}, solver {result.solver}), "
        f"{result.num_windows} windows of {result.num_frames} frames at {result.fps:.4g} fps",
        f"mean tokens per block: {mean_tokens:.3f} of {tokens} ({mean_tokens / tokens:.1%}); "
        f"by block position: {per_block}",
        f"reconstruction: PSNR {np.mean(result.psnr):.2f} dB, SSIM {np.mean(result.ssim):.4f} "
        "(mean over windows, against the resized and cropped input)",
    ]
    if result.uncovered_frames:
        lines.append(
            f"note: the last {result.uncovered_frames} frames do not fill a window and were "
            "not tokenized"
        )
    for line in _adjustment_notes(result):
        lines.append(f"note: {line}")
    if result.upscale > 1.0:
        lines.append(
            f"note: the video's short side was enlarged {result.upscale:.2f}x to "
            f"{result.image_size} px; the quality figures are against that enlarged input"
        )
    return "\n".join(lines)


def _adjustment_notes(result: TokenizedVideo) -> list[str]:
    """What decoding changed, one line per kind (stream, alpha, HDR, interlace, time)."""
    from adaptok.data.writer import adjustment_warnings

    try:
        adjustments = json.loads(result.adjustments or "{}")
    except ValueError:
        return []
    return adjustment_warnings(adjustments) if isinstance(adjustments, dict) else []


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _check_output(path: Path, what: str) -> None:
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{what} folder does not exist: {path.parent}")
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder, not a file name")


def main(argv: list[str] | None = None) -> int:
    """Run ``adaptok tokenize``.

    Args:
        argv: Arguments after ``tokenize`` (default ``sys.argv[1:]``).

    Returns:
        0 on success, 2 on an error the user can fix (printed to stderr as one line).
    """
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (OSError, VideoDecodeError, ValueError) as error:
        print(f"{_PROG}: error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.mode not in TOKENIZE_MODES:
        raise ValueError(f"unknown mode {args.mode!r}: choose one of {', '.join(TOKENIZE_MODES)}")
    if args.solver not in SOLVERS:
        raise ValueError(f"unknown solver {args.solver!r}: choose one of {', '.join(SOLVERS)}")
    budget = args.budget
    # tokenize_video checks the budget and threshold too, but only after the networks are
    # loaded; these need nothing loaded, so they come first
    if args.mode == "target":
        if budget is not None:
            raise ValueError("target mode takes --threshold, not --budget")
    elif args.threshold is not None:
        raise ValueError(f"--threshold is only used in target mode, not {args.mode}")
    elif budget is None:
        budget = 0.25
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.stride is not None and args.stride < 1:
        raise ValueError(f"--stride must be >= 1 frame, got {args.stride}")
    if args.stream is not None and args.stream < 0:
        raise ValueError(f"--stream must be >= 0, got {args.stream}")
    background = parse_background(args.background)
    check_video_file(args.video)  # missing, a folder or empty: refused before any loading
    _check_output(args.out, "--out")
    if args.reconstruct is not None:
        _check_output(args.reconstruct, "--reconstruct")
        if args.scale < 1:
            raise ValueError(f"--scale must be >= 1, got {args.scale}")

    model = load_model(args.ckpt, args.mode, _device(args.device))
    metric = model.info.get("metric") if model.scorer is not None else None
    if args.mode == "target" and args.threshold is None:
        # tokenize_video refuses this too, but cannot name the units: they are the metric of
        # the scorer just loaded
        raise ValueError(
            "target mode needs --threshold: the predicted cost each block must reach, in the "
            f"units of the metric this scorer was trained on, {cost_unit(metric)}"
        )
    # The video is streamed window by window; --reconstruct is encoded as the windows come,
    # so memory does not grow with the video's length.
    side_by_side = SideBySideWriter(args.reconstruct, args.scale) if args.reconstruct else None
    try:
        result = tokenize_video(
            args.video,
            model.tokenizer,
            model.scorer,
            budget,
            args.mode,
            threshold=args.threshold,
            solver=args.solver,
            equality=not args.at_most,
            stride=args.stride,
            fps=args.fps,
            batch_size=args.batch_size,
            keep_frames=False,
            checkpoint=str(args.ckpt),
            progress=not args.quiet,
            stream=args.stream,
            background=background,
            on_window=None if side_by_side is None else side_by_side.add,
            metric=metric or "",
        )
        text = format_summary(result, table=not args.quiet)
        print(text)
        written = save_npz(result, args.out)
        print(f"tokens: {written}")
        if side_by_side is not None:
            print(f"input | reconstruction: {side_by_side.finish()}")
    finally:
        if side_by_side is not None:
            side_by_side.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
