"""Speed and peak memory of the metric networks on CPU: I3D clips/s and LPIPS frames/s.

Each case runs ``--repeats`` timed passes after one warm-up pass and reports the median.
Peak memory is the process's peak resident set size during the case: the kernel's high-water
mark is reset before each case (``/proc/self/clear_refs``) where Linux allows it, otherwise
the column shows the peak since the start of the process.

Usage: ``python benchmarks/metrics.py [--repeats 3] [--threads N]``
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from adaptok.metrics.i3d import load_i3d
from adaptok.metrics.lpips import LPIPS


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process; False where not permitted."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss_mib() -> float:
    """Peak resident set size in MiB (``VmHWM``, else ``ru_maxrss``)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(run: Callable[[], None], items: int, repeats: int) -> tuple[float, float, float]:
    """Median seconds per pass, items per second at that median, and peak RSS (MiB)."""
    reset = _reset_peak_rss()
    with torch.no_grad():
        run()  # warm-up
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    peak = _peak_rss_mib()
    return median, items / median, peak if reset else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per case")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cases: list[tuple[str, str, Callable[[], None], int, str]] = []
    i3d = load_i3d()
    for batch in (1, 2):
        clips = torch.rand(batch, 3, 16, 224, 224) * 2 - 1
        cases.append(
            (
                f"I3D (FVD features) B={batch}",
                "16x224x224",
                lambda c=clips: i3d(c),
                batch,
                "clips/s",
            )
        )
    for net in ("vgg", "alex"):
        model = LPIPS(net)
        for size in (64, 128):
            frames = torch.rand(16, 3, size, size) * 2 - 1
            other = (frames + 0.1 * torch.randn_like(frames)).clamp(-1, 1)
            run = lambda m=model, x=frames, y=other: m(x, y)  # noqa: E731
            cases.append((f"LPIPS-{net} N=16", f"{size}x{size}", run, 16, "frames/s"))

    header = f"{'case':<26} {'input':>11} {'median s':>9} {'throughput':>16} {'peak RSS MiB':>13}"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} repeats")
    print(header)
    print("-" * len(header))
    for name, shape, run, items, unit in cases:
        median, rate, peak = _measure(run, items, args.repeats)
        print(f"{name:<26} {shape:>11} {median:>9.3f} {rate:>7.2f} {unit:<8} {peak:>13.0f}")


if __name__ == "__main__":
    main()
