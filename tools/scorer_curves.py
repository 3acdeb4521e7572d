"""What a scorer gets right of the blocks' cost curves, and what that is worth to IPAL.

Measures every block's cost at every candidate length (the oracle: real decodes, earlier blocks
at full length) and the scorer's predictions for the same blocks, on the clips the URLs name
(default: the demo's held-out test split), then prints (Markdown):

- agreement: Spearman of the costs per candidate, of the blocks' levels (mean log cost), of the
  levels relative to their clip's mean (what ``per_clip`` allocation can use) and of the log-cost
  steps between consecutive candidates (``adaptok.metrics.cost_curves``);
- the gain over uniform of one batch-mode IPAL solve over the whole split at each budget, in
  the PSNR of the squared error pooled over every block (what summed MSE costs optimise),
  computed from the cost tables, for the oracle, the scorer, "levels only" (each block's
  measured level with the mean shape: what a scorer that knew the levels exactly could win),
  and the oracle on each block's measured curve smoothed to a power law ("2 numbers": level
  and slope) or a log-quadratic ("3 numbers", with curvature) in log length
  (``adaptok.metrics.cost_curves.polynomial_fit_costs``): how much of the oracle's gain a
  scorer that knew that many numbers of every curve exactly could win.

    python tools/scorer_curves.py runs/demo/scorer/checkpoints/last.ckpt   # after make demo

Needs a scorer trained on ``mse`` labels (the demo's); the figures are table sums, so they
differ a little from the allocation report's, which decodes each allocation whole.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adaptok.alloc import allocate  # noqa: E402
from adaptok.budget_planner import TokenBudgetPlanner  # noqa: E402
from adaptok.metrics.cost_curves import (  # noqa: E402
    curve_agreement,
    level_shape_costs,
    polynomial_fit_costs,
)
from modules.loading import load_frozen_scorer  # noqa: E402
from tools.clips import first_windows  # noqa: E402


def pooled_psnr(mse: np.ndarray, choice: np.ndarray) -> float:
    """PSNR (dB) of the mean of the chosen ``(N, K)`` entries of an ``(N, K, J)`` MSE table."""
    return float(10 * np.log10(1 / np.take_along_axis(mse, choice[..., None], axis=2).mean()))


def clip_psnr(mse: np.ndarray, choice: np.ndarray) -> float:
    """Mean over clips of each clip's PSNR (dB) from the chosen entries of its ``(K, J)`` table."""
    chosen = np.take_along_axis(mse, choice[..., None], axis=2)[..., 0]
    return float(np.mean(10 * np.log10(1 / chosen.mean(axis=1))))


def main() -> None:
    """Print the agreement and gain tables for one scorer checkpoint."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", help="scorer stage checkpoint (adaptok fit ... scorer.yaml)")
    parser.add_argument(
        "--urls",
        nargs="+",
        default=["data/demo/synthetic/test-*.tar", "data/demo/samples/test-*.tar"],
    )
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.25, 0.5, 0.75])
    parser.add_argument("--save", help="write the measured and predicted tables here (.npz)")
    args = parser.parse_args()
    stage = load_frozen_scorer(args.ckpt)
    if stage.quality.metric != "mse":
        raise SystemExit(f"{args.ckpt}: scorer labels are {stage.quality.metric}, not mse")
    tokenizer = stage.tokenizer
    planner = TokenBudgetPlanner(tokenizer, stage.scorer, stage.quality)
    oracle, scorer = [], []
    with torch.no_grad():
        for video in first_windows(args.urls, tokenizer):
            encoding = tokenizer.encode(video)
            oracle.append(planner.costs("oracle", video, encoding).double().numpy())
            scorer.append(planner.costs("scorer", video, encoding).double().numpy())
    measured, predicted = np.concatenate(oracle), np.concatenate(scorer)
    lengths = np.asarray(planner.candidates)
    if args.save:
        np.savez(args.save, measured=measured, predicted=predicted, lengths=lengths)
    agreement = curve_agreement(measured, predicted)
    print(f"{measured.shape[0]} clips x {measured.shape[1]} blocks, candidates {lengths.tolist()}")
    print()
    print("| candidate | " + " | ".join(str(n) for n in lengths) + " |")
    print("|---" * (len(lengths) + 1) + "|")
    costs = [f"{r:.3f}" for r in agreement["per_candidate"]]
    print("| Spearman of costs | " + " | ".join(costs) + " |")
    steps = [f"{r:.3f}" for r in agreement["steps"]]
    print("| Spearman of log step to the next | " + " | ".join(steps) + " | - |")
    print(f"\nSpearman of the blocks' levels (mean log cost): {agreement['level']:.3f}")
    within = agreement["level_within_clip"]
    print(f"Spearman of the levels relative to their clip's mean: {within:.3f}\n")
    policies = {
        "oracle": measured,
        "scorer": predicted,
        "levels": level_shape_costs(measured),
        "2 numbers": polynomial_fit_costs(measured, lengths, 1),
        "3 numbers": polynomial_fit_costs(measured, lengths, 2),
    }
    header = (
        "| budget | uniform (dB) | oracle | scorer | levels only | 2 numbers | 3 numbers "
        "| scorer / oracle |"
    )
    print(header)
    print("|---" * 8 + "|")
    for fraction in args.budgets:
        mean_tokens = fraction * lengths[-1]
        column = int(np.argmin(np.abs(lengths - mean_tokens)))
        uniform = pooled_psnr(measured, np.full(measured.shape[:2], column))
        gains = {
            name: pooled_psnr(measured, allocate(costs, lengths, mean_tokens).choice) - uniform
            for name, costs in policies.items()
        }
        share = gains["scorer"] / gains["oracle"] if gains["oracle"] > 0 else float("nan")
        print(
            f"| {fraction:.0%} | {uniform:.2f} | {gains['oracle']:+.3f} | {gains['scorer']:+.3f} "
            f"| {gains['levels']:+.3f} | {gains['2 numbers']:+.3f} | {gains['3 numbers']:+.3f} "
            f"| {share:.2f} |"
        )
    print("\nPer clip (each clip's own budget; mean over clips of the clip's PSNR):\n")
    print(header)
    print("|---" * 8 + "|")
    for fraction in args.budgets:
        mean_tokens = fraction * lengths[-1]
        column = int(np.argmin(np.abs(lengths - mean_tokens)))
        uniform = clip_psnr(measured, np.full(measured.shape[:2], column))
        gains = {
            name: clip_psnr(measured, allocate(costs, lengths, mean_tokens, mode="per_clip").choice)
            - uniform
            for name, costs in policies.items()
        }
        share = gains["scorer"] / gains["oracle"] if gains["oracle"] > 0 else float("nan")
        print(
            f"| {fraction:.0%} | {uniform:.2f} | {gains['oracle']:+.3f} | {gains['scorer']:+.3f} "
            f"| {gains['levels']:+.3f} | {gains['2 numbers']:+.3f} | {gains['3 numbers']:+.3f} "
            f"| {share:.2f} |"
        )


if __name__ == "__main__":
    main()
