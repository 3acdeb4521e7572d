"""Token allocation: solve time of python-mip (CBC) vs the exact fast solver, by problem size.

Batch-mode IPAL (one shared equality budget, mean 256 tokens per block, 8 candidate lengths
64..512) on realistic costs: per-block power-law decay of predicted LPIPS with noise, kept
monotone. Prints one row per size: median seconds of each solver (MIP time includes
building the model), their speed ratio and the objective gap MIP - fast (0 = same optimum).
MIP sizes whose time, extrapolated linearly from the previous size, would exceed
``--mip-cap`` seconds are skipped and marked so; a MIP run that hits the cap is marked too.

Usage::

    python benchmarks/allocation.py                   # up to 1e6 blocks
    python benchmarks/allocation.py --max-blocks 4096 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from adaptok.alloc import allocate

LENGTHS = np.arange(64, 513, 64)
SIZES = (64, 256, 1024, 4096, 16384, 65536, 1_000_000)
BLOCKS_PER_CLIP = 4
MEAN_TOKENS = 256


def realistic_costs(num_blocks: int, seed: int) -> np.ndarray:
    """(num_blocks / 4, 4, 8) monotone-decreasing noisy predicted costs."""
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.05, 0.4, (num_blocks, 1))
    decay = rng.uniform(0.3, 1.5, (num_blocks, 1))
    floor = rng.uniform(0.0, 0.1, (num_blocks, 1))
    costs = scale * (LENGTHS / 64.0) ** -decay + floor + rng.normal(0.0, 0.005, (num_blocks, 8))
    costs = np.sort(costs, axis=1)[:, ::-1]
    return np.ascontiguousarray(costs).reshape(num_blocks // BLOCKS_PER_CLIP, BLOCKS_PER_CLIP, 8)


def timed(costs: np.ndarray, solver: str, time_limit: float) -> tuple[float, float, str]:
    """(seconds, objective, solver actually used) of one batch-mode allocation."""
    start = time.perf_counter()
    allocation = allocate(costs, LENGTHS, MEAN_TOKENS, solver=solver, time_limit=time_limit)
    seconds = time.perf_counter() - start
    assert allocation.total_tokens == MEAN_TOKENS * costs.shape[0] * costs.shape[1]
    return seconds, allocation.objective, allocation.solver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-blocks", type=int, default=SIZES[-1], help="largest size to run")
    parser.add_argument(
        "--repeats", type=int, default=5, help="repeats (median) below 65536 blocks"
    )
    parser.add_argument("--mip-cap", type=float, default=60.0, help="seconds allowed per MIP solve")
    args = parser.parse_args()

    header = f"{'blocks':>9} | {'mip s':>10} | {'fast s':>9} | {'speed-up':>9} | {'gap mip-fast':>12} | note"
    print(header)
    print("-" * len(header))
    last_mip: tuple[int, float] | None = None
    for num_blocks in (size for size in SIZES if size <= args.max_blocks):
        repeats = args.repeats if num_blocks < 65536 else 1
        costs = [realistic_costs(num_blocks, seed) for seed in range(repeats)]
        fast_runs = [timed(c, "fast", args.mip_cap) for c in costs]
        fast_seconds = statistics.median(run[0] for run in fast_runs)
        estimate = None if last_mip is None else last_mip[1] * num_blocks / last_mip[0]
        if estimate is not None and estimate > args.mip_cap:
            note = f"mip skipped: ~{estimate:.0f} s expected > {args.mip_cap:.0f} s cap"
            print(
                f"{num_blocks:>9} | {'-':>10} | {fast_seconds:>9.4f} | {'-':>9} | {'-':>12} | {note}"
            )
            last_mip = (num_blocks, estimate)
            continue
        mip_runs = [timed(c, "mip", args.mip_cap) for c in costs[: max(1, min(repeats, 3))]]
        mip_seconds = statistics.median(run[0] for run in mip_runs)
        proven = [run for run in mip_runs if run[2] == "mip"]
        gaps = [mip[1] - fast[1] for mip, fast in zip(mip_runs, fast_runs) if mip[2] == "mip"]
        gap_text = f"{max(gaps, key=abs):.2e}" if gaps else "-"
        note = "" if len(proven) == len(mip_runs) else f"mip hit the {args.mip_cap:.0f} s cap"
        print(
            f"{num_blocks:>9} | {mip_seconds:>10.3f} | {fast_seconds:>9.4f} | "
            f"{mip_seconds / fast_seconds:>8.0f}x | {gap_text:>12} | {note}"
        )
        last_mip = (num_blocks, mip_seconds)


if __name__ == "__main__":
    main()
