"""Peak memory of ``adaptok tokenize`` for short and long videos.

``adaptok tokenize`` streams a video (decode, resize and crop one frame at a time, cut
windows, encode a batch of windows as soon as it is full; ``--reconstruct`` encodes the
side-by-side video as the windows come), so its peak memory should not grow with the video's
length. This benchmark makes clips of several lengths (PyAV, x264 ``ultrafast``, a moving
square: see ``benchmarks/shard_memory.py``) in a temporary folder and runs each tokenization
in a fresh process, printing that process's peak resident set size (``ru_maxrss``) and wall
time, with and without ``--reconstruct``. The rows of one command should match whatever the
length; a version that decodes whole videos into memory grows with it.

Usage::

    python benchmarks/tokenize_memory.py --ckpt runs/demo/scorer/checkpoints/last.ckpt
        [--frames 250 2000 --size 256 --repo PATH]

``--repo`` runs the tokenizations with another checkout of the suite on the import path
(e.g. a ``git worktree`` of an older commit), to compare versions on the same clips.

Measured on a 2-core machine shared with a training run, clips 256x256 tokenized by a tiny
scorer checkpoint (8 frames of 32x32 per window), ``--fixed-mmap``; wall times are not
comparable (shared CPUs). Peak RSS MB, whole-video decoding (before) vs streaming (after)::

    frames  command                  before  after
       250  tokenize                    916    916
       250  tokenize --reconstruct      916    919
      2000  tokenize                    928    917
      2000  tokenize --reconstruct      935    921
      8000  tokenize                    968    917
      8000  tokenize --reconstruct     1022    924

The frames held before were only 3 KB each at 32x32: a tokenizer of 256x256 frames holds 64
times that per frame.

``--fixed-mmap`` runs the children with glibc's mmap threshold fixed at 128 KiB
(``MALLOC_MMAP_THRESHOLD_``). By default glibc raises that threshold after large blocks are
freed, so later frame-sized blocks come from the heap, and memory that is free but
fragmented stays resident: the peak then wanders by some tens of MB from run to run and
length to length although nothing is retained. With the threshold fixed, the peak shows
what the process holds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_CHILD = (
    "import resource, sys\n"
    "from modules.tokenize_cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    "sys.exit(code)\n"
)


def peak_of(args: list[str], repo: Path, fixed_mmap: bool = False) -> tuple[float, float]:
    """Peak RSS (MB) and wall time (s) of ``adaptok tokenize ARGS`` in a fresh process.

    Args:
        args: Arguments after ``tokenize``.
        repo: Checkout whose ``modules`` and ``adaptok`` are imported (run from there).
        fixed_mmap: Fix glibc's mmap threshold at 128 KiB in the child.

    Raises:
        RuntimeError: The command failed (the end of its error output is included).
    """
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    if fixed_mmap:
        env["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, cwd=repo, env=env
    )
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"adaptok tokenize {' '.join(args)} failed: {result.stderr[-800:]}")
    peak = next(line for line in result.stdout.splitlines() if line.startswith("PEAK_KB"))
    return int(peak.split()[1]) / 1024, wall


def main() -> None:
    """Make the clips, run the tokenizations and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True, help="a scorer stage checkpoint")
    parser.add_argument(
        "--frames", type=int, nargs="+", default=[250, 2000], help="clip lengths (frames)"
    )
    parser.add_argument("--size", type=int, default=256, help="side of the square clips")
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout to run")
    parser.add_argument("--batch-size", type=int, default=8, help="windows encoded together")
    parser.add_argument(
        "--fixed-mmap", action="store_true", help="fix glibc's mmap threshold (see above)"
    )
    args = parser.parse_args()
    ckpt = args.ckpt.resolve()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clips = [(root / f"clip{n}.mp4", n) for n in args.frames]
        # Made in a child: Linux keeps a process's peak RSS across fork + exec.
        maker = (
            "import sys; sys.path.insert(0, 'benchmarks'); from shard_memory import make_source\n"
        )
        maker += "".join(
            f"make_source({str(path)!r}, {n}, {args.size}, {args.size})\n" for path, n in clips
        )
        subprocess.run([sys.executable, "-c", maker], check=True, cwd=REPO)
        for path, frames in clips:
            for extra in ([], ["--reconstruct", str(root / f"sbs{frames}.mp4")]):
                command = [str(path), "--ckpt", str(ckpt), "--out", str(root / "t.npz")]
                command += ["--quiet", "--batch-size", str(args.batch_size), "--device", "cpu"]
                peak, wall = peak_of([*command, *extra], args.repo.resolve(), args.fixed_mmap)
                what = "tokenize --reconstruct" if extra else "tokenize"
                rows.append((frames, what, peak, wall))
    allocator = "mmap threshold fixed at 128 KiB" if args.fixed_mmap else "default glibc malloc"
    print(
        f"clips {args.size}x{args.size}, checkpoint {args.ckpt}, code at {args.repo}, {allocator}"
    )
    print(f"{'frames':>6}  {'command':<24} {'peak RSS MB':>11} {'wall s':>7}")
    for frames, what, peak, wall in rows:
        print(f"{frames:>6}  {what:<24} {peak:>11.0f} {wall:>7.1f}")


if __name__ == "__main__":
    main()
