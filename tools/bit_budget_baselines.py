"""What a block's bit budget can buy: grid-of-means baselines, exact and quantised.

Prints, for the demo's held-out test clips, the median per-clip PSNR of replacing each temporal
block by a grid of per-cell mean colours (exact, or with every value rounded to a few bits),
next to the per-block mean colour: a yardstick for what a tokenizer with ``M`` tokens of
``log2(codebook)`` bits per block can be expected to reach (docs/demo_weights.md).

    python tools/bit_budget_baselines.py            # after `make demo-data`
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adaptok.metrics.frame_quality import psnr_per_video  # noqa: E402
from adaptok.metrics.token_diagnostics import block_mean_baseline  # noqa: E402
from datamodules.video_shards import VideoShardsDataModule  # noqa: E402

SETTINGS = [(1, None), (2, None), (4, None), (4, 3), (4, 6), (4, 2), (8, None), (8, 2)]
"""(grid cells per side, bits per value or None for exact)."""


def main() -> None:
    """Print the baseline table (Markdown) for the clips the URLs name."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--urls",
        nargs="+",
        default=["data/demo/synthetic/test-*.tar", "data/demo/samples/test-*.tar"],
    )
    parser.add_argument("--frames-per-block", type=int, default=4)
    args = parser.parse_args()
    data = VideoShardsDataModule(
        test_urls=args.urls,
        num_frames=16,
        resolution=64,
        batch_size=16,
        num_workers=0,
        crop="center",
        clip_sampling="first",
    )
    data.setup("test")
    video = torch.cat([batch["video"] for batch in data.test_dataloader()])
    base = psnr_per_video(video, block_mean_baseline(video, args.frames_per_block))
    print(f"{video.shape[0]} clips; PSNR per clip capped at 100 dB, medians over clips")
    print(
        "| per block | numbers | bits | median PSNR (dB) | median gain (dB) | beats mean colour |"
    )
    print("|---|---|---|---|---|---|")
    for grid, bits in SETTINGS:
        baseline = block_mean_baseline(video, args.frames_per_block, grid)
        if bits is not None:
            levels = 2**bits - 1
            baseline = torch.round(baseline.clamp(0, 1) * levels) / levels
        psnr = psnr_per_video(video, baseline)
        numbers = 3 * grid * grid
        print(
            f"| {grid}x{grid} grid{'' if bits is None else f' @ {bits} bits'} | {numbers} | "
            f"{'exact' if bits is None else numbers * bits} | {psnr.median():.2f} | "
            f"{(psnr - base).median():+.2f} | {(psnr > base).float().mean():.0%} |"
        )


if __name__ == "__main__":
    main()
