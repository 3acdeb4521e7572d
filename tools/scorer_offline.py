r"""Is the scorer short of labels? Train a fresh scorer offline on measured cost tables.

Measures the full cost table of every block of the first window of every clip the train URLs
name (the oracle of ``TokenBudgetPlanner``: earlier blocks at full length) with the tokenizer
of a scorer stage checkpoint, trains a fresh scorer of that checkpoint's architecture on them
(AdamW, one-cycle schedule, ``--batch`` clips x all blocks per step, the stage's loss and label
normalisation), and prints, every fifth of the run, how it ranks the held-out test clips' costs
and log steps (``adaptok.metrics.cost_curves``), the train clips' log steps (a gap = the
scorer fits its clips' shapes without generalising) and the share of the oracle's gain it
captures at 25/50/75 % of the tokens, batch mode (pooled PSNR) and per clip (mean clip PSNR),
from the tables. Compare runs that differ only in ``--train-urls`` to see what more clips buy:

    python tools/scorer_offline.py runs/demo/scorer/checkpoints/last.ckpt
    adaptok-shards synthetic --out /tmp/extra --num-clips 1920 --seed 1 --size 64 \
      --num-frames 32 --shard-samples 96 --val-fraction 0
    python tools/scorer_offline.py runs/demo/scorer/checkpoints/last.ckpt --train-urls \
      'data/demo/synthetic/train-*.tar' 'data/demo/samples/train-*.tar' '/tmp/extra/train-*.tar'

Tables cost 32 decodes per clip (about 0.2 s per clip on 2 cores); ``--cache`` keeps them.
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
from adaptok.losses.scorer_loss import scorer_loss  # noqa: E402
from adaptok.metrics.cost_curves import curve_agreement  # noqa: E402
from adaptok.nn.scorer import BlockCausalScorer  # noqa: E402
from modules.loading import load_frozen_scorer  # noqa: E402
from tools.clips import first_windows  # noqa: E402

TEST_URLS = ["data/demo/synthetic/test-*.tar", "data/demo/samples/test-*.tar"]
TRAIN_URLS = ["data/demo/synthetic/train-*.tar", "data/demo/samples/train-*.tar"]


def measure(stage, planner: TokenBudgetPlanner, urls: list[str]) -> dict[str, np.ndarray]:
    """Encodings ``latents``/``quantized`` ``(N, K*M, D)`` and oracle costs ``(N, K, J)``."""
    tokenizer = stage.tokenizer
    parts: dict[str, list[np.ndarray]] = {"latents": [], "quantized": [], "costs": []}
    with torch.no_grad():
        for video in first_windows(urls, tokenizer):
            encoding = tokenizer.encode(video)
            parts["latents"].append(encoding.latents.numpy())
            parts["quantized"].append(encoding.quantized.numpy())
            parts["costs"].append(planner.costs("oracle", video, encoding).numpy())
            print(f"\rmeasured {sum(len(c) for c in parts['costs'])} clips", end="", flush=True)
    print()
    return {name: np.concatenate(values) for name, values in parts.items()}


def tables(stage, planner, urls: list[str], cache: Path | None, name: str) -> dict:
    """:func:`measure`, read from / written to ``cache/<name>.npz`` when a cache is given."""
    path = cache / f"{name}.npz" if cache else None
    if path is not None and path.is_file():
        with np.load(path) as stored:
            return dict(stored)
    out = measure(stage, planner, urls)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **out)
    return out


def gain(costs: np.ndarray, measured: np.ndarray, lengths: np.ndarray, fraction: float, mode: str):
    """Gain (dB) over uniform of one IPAL solve on ``costs``, judged on ``measured``."""
    mean_tokens = fraction * lengths[-1]
    uniform = np.full(measured.shape[:2], int(np.argmin(np.abs(lengths - mean_tokens))))
    choice = allocate(costs, lengths, mean_tokens, mode=mode).choice

    def psnr(pick: np.ndarray) -> float:
        chosen = np.take_along_axis(measured, pick[..., None], axis=2)[..., 0]
        if mode == "per_clip":
            return float(np.mean(10 * np.log10(1 / chosen.mean(axis=1))))
        return float(10 * np.log10(1 / chosen.mean()))

    return psnr(choice) - psnr(uniform)


def main() -> None:
    """Measure the tables, train the fresh scorer, print its progress."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", help="scorer stage checkpoint (architecture, tokenizer, labels)")
    parser.add_argument("--train-urls", nargs="+", default=TRAIN_URLS)
    parser.add_argument("--test-urls", nargs="+", default=TEST_URLS)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=16, help="clips per step")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--cache", type=Path, help="folder keeping the measured tables")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    stage = load_frozen_scorer(args.ckpt)
    if stage.quality.metric != "mse":
        raise SystemExit(f"{args.ckpt}: scorer labels are {stage.quality.metric}, not mse")
    planner = TokenBudgetPlanner(stage.tokenizer, stage.scorer, stage.quality)
    lengths = np.asarray(planner.candidates)
    train = tables(stage, planner, args.train_urls, args.cache, f"train-{len(args.train_urls)}")
    test = tables(stage, planner, args.test_urls, args.cache, "test")
    print(f"{len(train['costs'])} train clips, {len(test['costs'])} test clips")

    torch.manual_seed(args.seed)
    fresh = BlockCausalScorer(**stage.hparams["scorer_spec"]["init_args"])
    fresh.set_label_normalisation(*stage.scorer.label_normalisation)
    slope = float(stage.hparams["slope_weight"])
    as_tensor = {k: torch.from_numpy(v).float() for k, v in train.items()}
    labels = fresh.from_label_units(torch.from_numpy(train["costs"]).double()).float()
    optimizer = torch.optim.AdamW(fresh.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, args.lr, total_steps=args.steps, pct_start=max(0.02, 4 / args.steps)
    )

    def predict(data: dict[str, np.ndarray], rows: slice) -> np.ndarray:
        fresh.eval()
        with torch.no_grad():
            out = fresh(
                torch.from_numpy(data["latents"][rows]).float(),
                torch.from_numpy(data["quantized"][rows]).float(),
            )
        fresh.train()
        return fresh.to_label_units(out.double()).numpy()

    print(
        "| step | loss | test Spearman of costs | of log steps | train log steps | "
        "batch captured 25/50/75 % | per clip 25/50/75 % |"
    )
    print("|---|---|---|---|---|---|---|")
    for step in range(1, args.steps + 1):
        rows = torch.randint(len(labels), (args.batch,))
        prediction = fresh(as_tensor["latents"][rows], as_tensor["quantized"][rows])
        loss = scorer_loss(prediction, labels[rows], slope)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % max(1, args.steps // 5) and step != args.steps:
            continue
        predicted = predict(test, slice(None))
        agreement = curve_agreement(test["costs"], predicted)
        train_steps = curve_agreement(train["costs"][:256], predict(train, slice(0, 256)))
        shares = {}
        for mode in ("batch", "per_clip"):
            shares[mode] = " / ".join(
                f"{gain(predicted, test['costs'], lengths, f, mode) / gain(test['costs'], test['costs'], lengths, f, mode):.2f}"
                for f in (0.25, 0.5, 0.75)
            )
        costs = agreement["per_candidate"]
        print(
            f"| {step} | {loss.item():.4f} | {min(costs):.3f}-{max(costs):.3f} "
            f"| {np.mean(agreement['steps']):.3f} | {np.mean(train_steps['steps']):.3f} "
            f"| {shares['batch']} | {shares['per_clip']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
