"""The paper-scale generator configs (UCF-101 class-conditional, K600 frame prediction) run.

Each shipped ``generator.yaml`` trains 2 steps and its ``eval_gen.yaml`` tests the
checkpoint, through their tiny overlays (tests/conf/<set>/): on CPU in bf16-mixed, a random
tiny tokenizer, the shipped data paths laid out with tiny shards made here.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from modules.cli import run_cli
from tests.helpers import tiny_args, working_directory


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["ucf101", "k600"])
def test_paper_generator_configs_fit_and_evaluate(
    dataset: str, tmp_path: Path, annotation_shard_writer
) -> None:
    """Token shards and clips at the shipped paths; the tokenizer is the overlay's spec."""
    from adaptok.data.cli import main as shards

    # clips: data/<set>/train-*.tar (+ test-*.tar, the UCF test-split real set) or val-*.tar
    args = ["synthetic", "--out", str(tmp_path / "data" / dataset), "--seed", "1"]
    args += ["--size", "32", "--num-frames", "16", "--quiet"]
    if dataset == "ucf101":
        args += ["--num-clips", "4", "--val-fraction", "0", "--test-clips", "4"]
    else:
        args += ["--num-clips", "8", "--val-fraction", "0.5"]
    assert shards(args) in (0, None)
    rng = np.random.default_rng(0)
    codes, lengths = rng.integers(0, 64, (6, 4, 8)), rng.integers(1, 9, (6, 4, 4))
    cond = rng.integers(0, 64, (6, 4, 8)) if dataset == "k600" else None
    for name in ("train", "val"):  # data/<set>/tokens/{train,val}-*.tar
        annotation_shard_writer(
            tmp_path / f"data/{dataset}/tokens/{name}-000000.tar",
            codes,
            lengths,
            labels=[0, 1, 2, 3, 0, 1],
            budgets=[0.25, 0.5, 0.75, 1.0],
            cond=cond,
        )
    with working_directory(tmp_path):
        run_cli(["fit", *tiny_args(f"{dataset}/generator.yaml")])
        assert (tmp_path / f"runs/{dataset}/generator/checkpoints/last.ckpt").is_file()
        run_cli(["test", *tiny_args(f"{dataset}/eval_gen.yaml")])
    reports = sorted((tmp_path / f"runs/{dataset}/eval_gen").rglob("generation_report*.csv"))
    assert len(reports) == (2 if dataset == "ucf101" else 1)  # UCF: train and test-split real sets
    for report in reports:
        with report.open() as handle:
            rows = list(csv.DictReader(handle))
        assert rows and all(int(r["clips"]) == 4 for r in rows)
        if dataset == "k600":  # block 0 copied at full length
            assert all(r["block_means"].startswith("8.0 /") for r in rows)
