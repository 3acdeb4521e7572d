"""Speed of a measured cost table: prefix decodes against decoding every block.

``adaptok.losses.measure_cost_table`` measures every block of a clip at every candidate length
(the oracle's table, the scorer's replay labels): ``K x J`` decodes per clip. The decoder is
block-causal, so block ``b``'s cost needs only the blocks up to ``b``; since 2026-12-06 only
those are decoded (``measure_block_costs``). The reference here is what the measurement did
before: the whole clip decoded for every (block, candidate), the target block's frames cut out.
Both run in one process, interleaved, on the same clips; the table gives median wall and
process-CPU seconds per table and the reference / prefix ratio, and checks that both give the
same costs.

Usage:
    python benchmarks/cost_table.py [--tokenizer pretrained/demo-tokenizer] [--batch 4]
        [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from adaptok.losses import BlockQuality, measure_cost_table
from adaptok.losses.block_quality import select_block_frames
from modules.loading import load_frozen_tokenizer


@torch.no_grad()
def whole_clip_table(
    tokenizer: torch.nn.Module,
    quality: BlockQuality,
    video: Tensor,
    codes: Tensor,
    context: Tensor,
    candidates: list[int],
) -> Tensor:
    """The reference: every block decoded for every (block, candidate). Returns ``(B, K, J)``."""
    batch, num_blocks = context.shape
    frames = tokenizer.frames_per_block
    table = torch.empty(batch, num_blocks, len(candidates))
    for block in range(num_blocks):
        target = torch.full((batch,), block)
        lengths = context.repeat(len(candidates), 1)
        lengths[:, block] = torch.tensor(candidates).repeat_interleave(batch)
        recon = tokenizer.decode(codes.repeat(len(candidates), 1), lengths)
        real = select_block_frames(video, target, frames).repeat(len(candidates), 1, 1, 1, 1)
        cut = select_block_frames(recon, target.repeat(len(candidates)), frames)
        table[:, block] = quality(real, cut).view(len(candidates), batch).T
    return table


def timed(call: Callable[[], Tensor]) -> tuple[float, float, Tensor]:
    """Wall and process-CPU seconds of one call, and its result."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = call()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def main() -> None:
    """Print the timing table (Markdown)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", default="pretrained/demo-tokenizer", help="export or ckpt")
    parser.add_argument("--batch", type=int, default=4, help="clips per table")
    parser.add_argument("--candidates", type=int, default=8, help="J, spread evenly up to M")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = load_frozen_tokenizer(args.tokenizer)
    quality = BlockQuality("mse")
    m, k = tokenizer.tokens_per_block, tokenizer.num_blocks
    candidates = [m * (j + 1) // args.candidates for j in range(args.candidates)]
    size = tokenizer.image_size
    video = torch.rand(args.batch, 3, tokenizer.num_frames, size, size)
    codes = tokenizer.encode(video).codes
    context = torch.full((args.batch, k), m)
    variants = {
        "whole clip (before)": lambda: whole_clip_table(
            tokenizer, quality, video, codes, context, candidates
        ),
        "prefix (measure_cost_table)": lambda: measure_cost_table(
            tokenizer, quality, video, codes, context, candidates
        ),
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    tables = {name: call() for name, call in variants.items()}  # warm-up
    torch.testing.assert_close(*tables.values(), rtol=1e-4, atol=1e-6)
    for _ in range(args.repeats):
        for name, call in variants.items():
            wall, cpu, _ = timed(call)
            results[name].append((wall, cpu))
    print(
        f"{args.batch} clips x {k} blocks x {len(candidates)} candidates, "
        f"{args.threads} threads, {args.repeats} rounds (median); same costs: yes\n"
    )
    print("| variant | wall s | cpu s | x before (wall) |")
    print("|---|---|---|---|")
    before = statistics.median(w for w, _ in results["whole clip (before)"])
    for name, runs in results.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"| {name} | {wall:.3f} | {cpu:.3f} | {before / wall:.2f} |")


if __name__ == "__main__":
    main()
