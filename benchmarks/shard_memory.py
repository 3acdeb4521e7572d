"""Peak memory of ``adaptok-shards`` while writing shards from large and long sources.

Writing streams a video file one frame at a time (decode, select, resize while converting,
encode), so peak memory should not grow with a source's length, and with ``--size`` not with
its resolution either. This benchmark makes the sources (PyAV, x264 ``ultrafast``) in a
temporary folder and runs each write in a fresh process, printing that process's peak
resident set size (``ru_maxrss``) and wall time:

* a 4K clip (3840x2160) stored as it is and with ``--size 128``, and ``verify`` of it;
* a long 720p clip (``--long-seconds`` at 30 fps) and a short one of the same size, both with
  ``--size 64``: the two rows should match, whatever the length.

At commit 45eb188 (whole clips decoded into memory) the 12-frame 4K clip took 1.5-1.9 GB and
memory grew by ~55 MB per 4K frame. Usage: ``python benchmarks/shard_memory.py
[--uhd-frames 12 --long-seconds 60]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
_CHILD = (
    "import resource, sys\n"
    "from adaptok.data.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    "sys.exit(code)\n"
)


def make_source(path: str | Path, frames: int, height: int, width: int, fps: int = 30) -> Path:
    """A moving white square on black, x264 ultrafast (fast to make at any size)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = np.zeros((height, width, 3), np.uint8)
    side = height // 4
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            picture[:] = 0
            left = (index * 8) % (width - side)
            picture[side : 2 * side, left : left + side] = 255
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def peak_of(args: list[str]) -> tuple[float, float]:
    """Peak RSS (MB) and wall time (s) of ``adaptok-shards ARGS`` in a fresh process."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"adaptok-shards {' '.join(args)} failed: {result.stderr[-500:]}")
    peak = next(line for line in result.stdout.splitlines() if line.startswith("PEAK_KB"))
    return int(peak.split()[1]) / 1024, wall


def main() -> None:
    """Make the sources, run the writes and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uhd-frames", type=int, default=12, help="frames of the 4K clip")
    parser.add_argument("--long-seconds", type=int, default=60, help="length of the long clip")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        long_frames, short_frames = 30 * args.long_seconds, 60
        # Sources are made in a child: Linux keeps a process's peak RSS across fork + exec,
        # so a parent that held 4K frames would raise every measured child's peak.
        sources = [
            (root / "uhd/train/d/u.mp4", args.uhd_frames, 2160, 3840),
            (root / "long/train/d/l.mp4", long_frames, 720, 1280),
            (root / "short/train/d/s.mp4", short_frames, 720, 1280),
        ]
        maker = (
            "import sys; sys.path.insert(0, 'benchmarks'); from shard_memory import make_source\n"
        )
        maker += "".join(f"make_source(*{(str(p), *rest)!r})\n" for p, *rest in sources)
        subprocess.run([sys.executable, "-c", maker], check=True, cwd=REPO)
        cases = [
            ("4K 3840x2160", args.uhd_frames, "folder, stored at 4K", ["folder", "uhd"], []),
            ("4K 3840x2160", args.uhd_frames, "folder --size 128", ["folder", "uhd"], ["--size", "128"]),
            ("720p", short_frames, "folder --size 64", ["folder", "short"], ["--size", "64"]),
            ("720p", long_frames, "folder --size 64", ["folder", "long"], ["--size", "64"]),
            ("720p", long_frames, "folder --size 64 --fps 10", ["folder", "long"], ["--size", "64", "--fps", "10"]),
        ]  # fmt: skip
        for index, (source, frames, what, (command, folder), extra) in enumerate(cases):
            out = root / f"out{index}"
            peak, wall = peak_of(
                [command, str(root / folder), "--out", str(out), "--quiet", *extra]
            )
            rows.append((source, frames, what, peak, wall))
            if index == 0:
                peak, wall = peak_of(["verify", str(out)])
                rows.append((source, frames, "verify of the 4K shard", peak, wall))
    print(f"{'source':<14} {'frames':>6}  {'command':<30} {'peak RSS MB':>11} {'wall s':>7}")
    for source, frames, what, peak, wall in rows:
        print(f"{source:<14} {frames:>6}  {what:<30} {peak:>11.0f} {wall:>7.1f}")


if __name__ == "__main__":
    main()
