"""What an allocator could win on a synthetic data layout, before training anything on it.

Writes held-out synthetic clips with a :class:`~adaptok.data.synthetic.SceneLayout`, measures
every block's cost (MSE) at every candidate length with a trained tokenizer (the oracle's
table: real decodes, earlier blocks at full length), and prints (Markdown) the oracle's gain
over uniform allocation in batch mode (pooled PSNR) and per clip (mean of the clips' PSNR) at
25 and 50 % of the tokens, its token savings at 25 %, the uniform PSNR at the smallest and
largest candidate, and the tokenizer's median gain at M tokens over each block's mean colour
(what the token-health targets need). A layout whose per-clip oracle gain stays small cannot meet the per-clip
targets whatever the scorer learns; check a data change here before `make demo-weights`.

    python tools/oracle_data.py                 # the demo layout, 192 clips of seed 5
    python tools/oracle_data.py --scenes 3 6 --alternate-calm --calm-probability 0.5
    python tools/oracle_data.py --num-candidates 16   # a finer grid than the paper's 8
    python tools/oracle_data.py --urls 'data/demo/synthetic/test-*.tar' 'data/demo/samples/test-*.tar'

The tokenizer (default: the committed demo weights) was trained on the demo layout, so figures
for another layout are an estimate of what a tokenizer trained on it would show.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adaptok.alloc import allocate  # noqa: E402
from adaptok.budget_planner import TokenBudgetPlanner, default_candidates  # noqa: E402
from adaptok.data.synthetic import CALM_SCENE_PROBABILITY, SceneLayout, synthetic_tasks  # noqa: E402
from adaptok.data.writer import ShardOptions, write_shards  # noqa: E402
from adaptok.losses.block_quality import BlockQuality  # noqa: E402
from adaptok.metrics.allocation_gain import uniform_tokens_to_match  # noqa: E402
from adaptok.metrics.token_diagnostics import block_mean_baseline  # noqa: E402
from adaptok.pretrained import load_pretrained  # noqa: E402
from tools.clips import first_windows  # noqa: E402


def _psnr(mse: np.ndarray) -> np.ndarray:
    return 10 * np.log10(1 / np.maximum(mse, 1e-10))


def measure(
    tokenizer_source: str,
    layout: SceneLayout,
    clips: int,
    seed: int,
    num_frames: int,
    num_candidates: int = 8,
    urls: list[str] | None = None,
) -> dict:
    """Oracle cost table and mean-colour baseline on the first window of fresh test clips.

    ``num_candidates`` evenly spaced lengths up to M (the paper's grid is 8: M/8, ..., M).
    With ``urls`` the clips of those shards are measured instead (e.g. the demo's test split);
    ``layout``, ``clips``, ``seed`` and ``num_frames`` are then unused.

    Returns:
        ``measured`` ``(N, K, J)`` block MSE, ``mean_colour`` ``(N,)`` clip MSE of the
        per-block mean colour, ``lengths`` ``(J,)`` candidate lengths.
    """
    tokenizer = load_pretrained(tokenizer_source).tokenizer
    candidates = default_candidates(tokenizer.tokens_per_block, num_candidates)
    planner = TokenBudgetPlanner(tokenizer, None, BlockQuality("mse"), candidates=candidates)
    tables, baseline = [], []
    with tempfile.TemporaryDirectory() as folder, torch.no_grad():
        if urls is None:
            tasks = synthetic_tasks(
                0, seed=seed, num_frames=num_frames, test_clips=clips, layout=layout
            )
            write_shards(tasks, folder, ShardOptions(size=tokenizer.image_size), progress=False)
        for video in first_windows(urls or f"{folder}/test-*.tar", tokenizer):
            encoding = tokenizer.encode(video)
            tables.append(planner.costs("oracle", video, encoding).double().numpy())
            flat = block_mean_baseline(video, tokenizer.frames_per_block)
            baseline.append(((video - flat) ** 2).mean(dim=(1, 2, 3, 4)).double().numpy())
    return {
        "measured": np.concatenate(tables),
        "mean_colour": np.concatenate(baseline),
        "lengths": np.asarray(planner.candidates),
    }


def _quality(measured: np.ndarray, choice: np.ndarray, mode: str) -> float:
    """PSNR (dB) of the chosen ``(N, K)`` entries, as each mode's summed MSE costs maximise it.

    Pooled over every block for ``batch``; each clip's PSNR, averaged, for ``per_clip``.
    """
    chosen = np.take_along_axis(measured, choice[..., None], axis=2)[..., 0]
    if mode == "batch":
        return float(_psnr(chosen.mean()))
    return float(np.mean(_psnr(chosen.mean(1))))


def summary(measured: np.ndarray, mean_colour: np.ndarray, lengths: np.ndarray) -> dict:
    """Oracle gains, the oracle's token savings and the token-health figures of one table.

    Gains are dB over uniform at 25 / 50 % of the tokens; the savings at 25 % are the uniform
    tokens reaching the oracle's quality (read off the uniform curve over all candidates) over
    its tokens, as the allocation report's ``oracle_token_savings``.
    """
    out = {}
    for mode in ("batch", "per_clip"):
        curve = [
            _quality(measured, np.full(measured.shape[:2], j), mode) for j in range(len(lengths))
        ]
        for fraction in (0.25, 0.5):
            mean_tokens = fraction * lengths[-1]
            column = int(np.argmin(np.abs(lengths - mean_tokens)))
            oracle = _quality(
                measured, allocate(measured, lengths, mean_tokens, mode=mode).choice, mode
            )
            out[f"{mode} {fraction:.0%}"] = oracle - curve[column]
            if fraction == 0.25:
                matched = uniform_tokens_to_match(oracle, lengths.tolist(), curve)
                out[f"{mode} savings 25%"] = matched / mean_tokens
    full = measured[:, :, -1].mean(1)
    out["uniform smallest"] = float(np.median(_psnr(measured[:, :, 0].mean(1))))
    out["uniform M"] = float(np.median(_psnr(full)))
    over_mean_colour = _psnr(full) - _psnr(mean_colour)
    out["median gain over mean colour"] = float(np.median(over_mean_colour))
    out["clips beating mean colour"] = float(np.mean(over_mean_colour > 0))
    return out


def main() -> None:
    """Print the table for one layout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", default="pretrained/demo-tokenizer", help="export or ckpt")
    parser.add_argument("--clips", type=int, default=192, help="test-stream clips to write")
    parser.add_argument("--seed", type=int, default=5, help="seed of the clip set")
    parser.add_argument(
        "--num-frames", type=int, default=32, help="clip length (the demo's; windows: the first)"
    )
    parser.add_argument("--scenes", type=int, nargs=2, default=(1, 4), metavar=("MIN", "MAX"))
    parser.add_argument("--alternate-calm", action="store_true")
    parser.add_argument("--calm-probability", type=float, default=CALM_SCENE_PROBABILITY)
    parser.add_argument(
        "--num-candidates",
        type=int,
        default=8,
        help="candidate lengths M/n, 2M/n, ..., M (the paper's grid: 8); a multiple of 4 keeps "
        "25 and 50 %% of M on the grid (uniform is read at the nearest candidate)",
    )
    parser.add_argument(
        "--urls",
        nargs="+",
        help="measure the clips of these shards instead of writing synthetic ones (e.g. "
        "data/demo/synthetic/test-*.tar data/demo/samples/test-*.tar: the demo's test split)",
    )
    args = parser.parse_args()
    if args.num_candidates < 1:
        parser.error(f"--num-candidates must be at least 1, got {args.num_candidates}")
    layout = SceneLayout(*args.scenes, args.alternate_calm, args.calm_probability)
    figures = summary(
        **measure(
            args.tokenizer,
            layout,
            args.clips,
            args.seed,
            args.num_frames,
            args.num_candidates,
            args.urls,
        )
    )
    source = args.urls or f"{layout}, {args.clips} clips of seed {args.seed}"
    print(f"{source}, {args.num_candidates} candidates\n")
    print("| " + " | ".join(figures) + " |")
    print("|---" * len(figures) + "|")
    print(
        "| " + " | ".join(f"{v:.3f}" if abs(v) < 5 else f"{v:.2f}" for v in figures.values()) + " |"
    )


if __name__ == "__main__":
    main()
