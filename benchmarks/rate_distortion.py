"""Rate-distortion of a trained tokenizer, and what an oracle allocation could gain over uniform.

For every clip of the given shards (first ``T`` frames, centre crop, as the evaluation reads
them) it measures:

* the rate-distortion curve: PSNR / SSIM (and LPIPS with ``--lpips``) when every block keeps
  the same number of tokens, for each of ``--lengths``, next to trivial baselines on the same
  clips (each block replaced by its mean colour, or by its means on a 2x2 / 4x4 grid): a
  tokenizer that does not beat them carries no more than the colour;
* the oracle: per block, the measured cost (``--cost``: ``psnr`` = negated block PSNR, by
  default, so the oracle maximises the mean of the blocks' PSNR; ``mse``; ``lpips``) at each
  of the scorer's candidate lengths ``M/8, 2M/8, ..., M`` with every other block at full
  length (``adaptok.losses.block_quality.measure_block_costs``, as ``TokenBudgetPlanner``
  does in ``per_clip`` / ``batch`` mode); the exact allocator
  (``adaptok.alloc.allocate(costs, candidates, budget, mode=...)``) picks the lengths at each
  budget; the clips are decoded with those lengths and the *achieved* PSNR is reported next
  to uniform allocation at the same mean (``--budgets`` as fractions of ``M``);
* on clips with per-frame complexity (synthetic shards), Spearman(block complexity, oracle
  tokens) at each budget: do static blocks get fewer tokens than busy ones?

Each ``--shards`` argument is one group (e.g. synthetic and real test clips) reported on its
own and in the pooled ``all`` row. Exit status 0; a table goes to stdout.

Usage:
    python benchmarks/rate_distortion.py --ckpt runs/demo/tokenizer/checkpoints/last.ckpt \
        --shards 'data/demo/synthetic/test-*.tar' 'data/demo/samples/test-*.tar' \
        [--max-clips 64] [--batch-size 8] [--lengths 1 2 4 8 16 32] [--budgets 0.25 0.5 0.75] \
        [--modes per_clip batch] [--cost psnr] [--lpips] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.stats import spearmanr

from adaptok.alloc import allocate
from adaptok.losses.block_quality import BlockQuality, measure_block_costs
from adaptok.metrics.frame_quality import psnr_per_video, ssim_per_video
from adaptok.metrics.lpips import LPIPS
from adaptok.metrics.token_diagnostics import block_mean_baseline
from adaptok.nn.tokenizer import AdapTokTokenizer
from datamodules.video_shards import VideoShardsDataModule
from modules.loading import load_frozen_tokenizer

__all__ = ["GroupResult", "candidate_lengths", "evaluate_group", "main"]


def candidate_lengths(tokens_per_block: int, num_candidates: int = 8) -> list[int]:
    """The scorer's candidates ``M/J, 2M/J, ..., M`` (rounded, at least 1, deduplicated).

    Args:
        tokens_per_block: M.
        num_candidates: J.

    Returns:
        Strictly increasing lengths ending with M.
    """
    values = {
        max(1, round(tokens_per_block * (j + 1) / num_candidates)) for j in range(num_candidates)
    }
    return sorted(values)


@dataclass
class GroupResult:
    """Per-clip measurements of one shard group.

    Attributes:
        uniform: length -> metric name -> list of per-clip values.
        oracle: (mode, budget) -> metric name -> list of per-clip values.
        oracle_tokens: (mode, budget) -> list of ``(K,)`` chosen lengths per clip.
        complexity: list of ``(K,)`` per-block complexity per clip (NaN when unknown).
        baselines: baseline name -> metric name -> per-clip values (per-block means on a
            1x1 (mean colour), 2x2 and 4x4 grid; ``block_mean_baseline``).
        clips: number of clips.
        seconds: wall time.
    """

    uniform: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    oracle: dict[tuple[str, float], dict[str, list[float]]] = field(default_factory=dict)
    oracle_tokens: dict[tuple[str, float], list[np.ndarray]] = field(default_factory=dict)
    complexity: list[np.ndarray] = field(default_factory=list)
    baselines: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    clips: int = 0
    seconds: float = 0.0


def _quality(
    real: torch.Tensor, recon: torch.Tensor, lpips: LPIPS | None
) -> dict[str, torch.Tensor]:
    """Per-clip PSNR (dB), SSIM and, with an LPIPS network, LPIPS (frame means)."""
    recon = recon.clamp(0, 1)
    scores = {"psnr": psnr_per_video(real, recon), "ssim": ssim_per_video(real, recon)}
    if lpips is not None:
        batch, channels, frames = real.shape[:3]
        as_frames = lambda v: v.transpose(1, 2).reshape(batch * frames, channels, *v.shape[-2:])  # noqa: E731
        scores["lpips"] = (
            lpips(as_frames(real) * 2 - 1, as_frames(recon) * 2 - 1).view(batch, frames).mean(1)
        )
    return scores


def _append(store: dict[str, list[float]], scores: dict[str, torch.Tensor]) -> None:
    for name, values in scores.items():
        store.setdefault(name, []).extend(values.float().cpu().tolist())


@torch.no_grad()
def evaluate_group(
    tokenizer: AdapTokTokenizer,
    loader: torch.utils.data.DataLoader,
    lengths: list[int],
    budgets: list[float],
    modes: list[str],
    cost: BlockQuality,
    lpips: LPIPS | None,
    max_clips: int,
) -> GroupResult:
    """Measure the uniform curve and the oracle allocations on up to ``max_clips`` clips.

    Args:
        tokenizer: The frozen tokenizer (eval mode).
        loader: Yields batches with ``video`` ``(B, C, T, H, W)`` in [0, 1] and ``complexity``
            ``(B, T)``.
        lengths: Uniform tokens per block to measure.
        budgets: Mean tokens per block as fractions of M.
        modes: Allocation modes for the oracle (``per_clip``, ``batch``).
        cost: The oracle's per-block cost.
        lpips: LPIPS network for the reported LPIPS, or None.
        max_clips: Stop after this many clips.

    Returns:
        The per-clip measurements.
    """
    start = time.perf_counter()
    result = GroupResult()
    per_block = tokenizer.tokens_per_block
    candidates = candidate_lengths(per_block)
    frames = tokenizer.frames_per_block
    for batch in loader:
        video = batch["video"][: max_clips - result.clips]
        if video.shape[0] == 0:
            break
        size, blocks = video.shape[0], tokenizer.num_blocks
        codes = tokenizer.encode(video).codes
        for length in lengths:
            recon = tokenizer.decode(codes, torch.full((size, blocks), length))
            _append(result.uniform.setdefault(length, {}), _quality(video, recon, lpips))
        for grid in BASELINE_GRIDS:
            baseline = block_mean_baseline(video, frames, grid)
            _append(
                result.baselines.setdefault(_baseline_name(grid), {}),
                _quality(video, baseline, lpips),
            )
        full = torch.full((size, blocks), per_block)
        costs = torch.stack(
            [
                measure_block_costs(
                    tokenizer, cost, video, codes, full, torch.full((size,), k), candidates
                )
                for k in range(blocks)
            ],
            dim=1,
        )  # (B, K, J)
        for budget in budgets:
            for mode in modes:
                chosen = allocate(costs.numpy(), candidates, budget * per_block, mode=mode)
                chosen_lengths = torch.from_numpy(chosen.lengths)
                recon = tokenizer.decode(codes, chosen_lengths)
                _append(result.oracle.setdefault((mode, budget), {}), _quality(video, recon, lpips))
                result.oracle_tokens.setdefault((mode, budget), []).extend(chosen.lengths)
        complexity = batch["complexity"][:size].view(size, blocks, frames).mean(-1)
        result.complexity.extend(complexity.numpy())
        result.clips += size
        if result.clips >= max_clips:
            break
    result.seconds = time.perf_counter() - start
    return result


BASELINE_GRIDS = (1, 2, 4)
"""Grids of the trivial baselines printed next to the curve (1 = per-block mean colour)."""


def _baseline_name(grid: int) -> str:
    return "mean colour" if grid == 1 else f"{grid}x{grid} means"


def _merge(results: list[GroupResult]) -> GroupResult:
    merged = GroupResult()
    for result in results:
        for name, scores in result.baselines.items():
            for metric, values in scores.items():
                merged.baselines.setdefault(name, {}).setdefault(metric, []).extend(values)
        for length, scores in result.uniform.items():
            for name, values in scores.items():
                merged.uniform.setdefault(length, {}).setdefault(name, []).extend(values)
        for key, scores in result.oracle.items():
            for name, values in scores.items():
                merged.oracle.setdefault(key, {}).setdefault(name, []).extend(values)
        for key, tokens in result.oracle_tokens.items():
            merged.oracle_tokens.setdefault(key, []).extend(tokens)
        merged.complexity.extend(result.complexity)
        merged.clips += result.clips
        merged.seconds += result.seconds
    return merged


def _uniform_at(result: GroupResult, tokens: float, name: str) -> float:
    """Uniform ``name`` at ``tokens`` per block (measured, or linear in log-tokens between two)."""
    measured = sorted(result.uniform)
    if tokens in result.uniform:
        return float(np.mean(result.uniform[tokens][name]))
    below = max((m for m in measured if m < tokens), default=None)
    above = min((m for m in measured if m > tokens), default=None)
    if below is None or above is None:
        return math.nan
    weight = (math.log(tokens) - math.log(below)) / (math.log(above) - math.log(below))
    low = float(np.mean(result.uniform[below][name]))
    high = float(np.mean(result.uniform[above][name]))
    return low + weight * (high - low)


def _format(name: str, result: GroupResult, tokens_per_block: int, budgets: list[float]) -> str:
    metrics = list(next(iter(result.uniform.values())).keys())
    lines = [f"== {name}: {result.clips} clips, {result.seconds:.0f} s"]
    lines.append("uniform tokens/block | " + " | ".join(metrics))
    for length in sorted(result.uniform):
        values = [f"{np.mean(result.uniform[length][m]):.3f}" for m in metrics]
        lines.append(f"{length:>20} | " + " | ".join(values))
    for baseline, scores in result.baselines.items():
        values = [f"{np.mean(scores[m]):.3f}" for m in metrics]
        lines.append(f"{'baseline: ' + baseline:>20} | " + " | ".join(values))
    if result.baselines and tokens_per_block in result.uniform:
        full = np.asarray(result.uniform[tokens_per_block]["psnr"])
        colour = np.asarray(result.baselines["mean colour"]["psnr"])
        lines.append(
            f"at M={tokens_per_block}: median PSNR {np.median(full):.2f} dB vs mean colour "
            f"{np.median(colour):.2f} dB; beats the mean colour on {(full > colour).sum()} of "
            f"{full.size} clips (median gain {np.median(full - colour):+.2f} dB)"
        )
    candidates = candidate_lengths(tokens_per_block)
    low, high = candidates[0], candidates[-1]
    if low in result.uniform and high in result.uniform:
        slope = np.mean(result.uniform[high]["psnr"]) - np.mean(result.uniform[low]["psnr"])
        lines.append(f"RD steepness: PSNR@{high} - PSNR@{low} = {slope:.2f} dB")
    lines.append(
        "budget | mode | uniform PSNR | oracle PSNR | gain dB | Spearman(complexity, tokens)"
    )
    for (mode, budget), scores in sorted(
        result.oracle.items(), key=lambda kv: (kv[0][1], kv[0][0])
    ):
        uniform = _uniform_at(result, budget * tokens_per_block, "psnr")
        oracle = float(np.mean(scores["psnr"]))
        tokens = np.stack(result.oracle_tokens[(mode, budget)]).astype(float)
        complexity = np.stack(result.complexity)
        valid = ~np.isnan(complexity)
        rho = math.nan
        if valid.sum() >= 3 and np.ptp(complexity[valid]) > 0 and np.ptp(tokens[valid]) > 0:
            rho = float(spearmanr(complexity[valid], tokens[valid]).statistic)
        lines.append(
            f"{budget:>6g} | {mode} | {uniform:.3f} | {oracle:.3f} | {oracle - uniform:+.3f} | "
            f"{rho:.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the tables; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", required=True, help="tokenizer (or later stage) checkpoint")
    parser.add_argument("--shards", nargs="+", required=True, help="one glob per group")
    parser.add_argument("--max-clips", type=int, default=64, help="clips per group")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lengths", type=int, nargs="*", help="default: 1 and the candidates")
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    parser.add_argument("--modes", nargs="+", default=["per_clip"], choices=["per_clip", "batch"])
    parser.add_argument("--cost", default="psnr", choices=["psnr", "mse", "lpips"])
    parser.add_argument("--lpips", action="store_true", help="also report LPIPS (AlexNet)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if any(not 0 < b <= 1 for b in args.budgets):
        parser.error(f"budgets must be fractions in (0, 1], got {args.budgets}")

    tokenizer = load_frozen_tokenizer(args.ckpt).eval()
    per_block = tokenizer.tokens_per_block
    lengths = args.lengths or sorted({1, *candidate_lengths(per_block)})
    lengths = sorted(set(lengths) | {round(b * per_block) for b in args.budgets})
    lpips = LPIPS(net="alex").eval() if args.lpips or args.cost == "lpips" else None
    cost = BlockQuality(args.cost, perceptual=lpips)
    print(
        f"tokenizer {args.ckpt}: {tokenizer.num_frames}x{tokenizer.image_size}^2, "
        f"{tokenizer.num_blocks} blocks x {per_block} tokens, "
        f"codebook {tokenizer.quantizer.codebook_size}; oracle cost {args.cost}; "
        f"candidates {candidate_lengths(per_block)}"
    )
    results = []
    for pattern in args.shards:
        data = VideoShardsDataModule(
            test_urls=pattern,
            num_frames=tokenizer.num_frames,
            resolution=tokenizer.image_size,
            batch_size=args.batch_size,
            num_workers=0,
        )
        data.setup("test")
        result = evaluate_group(
            tokenizer,
            data.test_dataloader(),
            lengths,
            args.budgets,
            args.modes,
            cost,
            lpips if args.lpips else None,
            args.max_clips,
        )
        results.append(result)
        print(_format(pattern, result, per_block, args.budgets), flush=True)
    if len(results) > 1:
        print(_format("all", _merge(results), per_block, args.budgets))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
