"""Session fixtures shared across the suite: tiny shards and tiny trained checkpoints.

Stages are run through the real ``adaptok`` CLI on the shipped YAML files, with overrides
that shrink the networks, inside a temporary workspace that mirrors the repository layout
(``data/demo/...`` and ``runs/demo/...`` resolve there).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"

# Shrinks experiments/demo/tokenizer.yaml to seconds on 2 cores: 8 frames x 32x32,
# 4 blocks of 2 frames, 8 tokens per block, width 32.
TINY_TOKENIZER = [
    "--trainer.max_steps=8",
    "--trainer.val_check_interval=4",
    "--trainer.limit_val_batches=1",
    "--trainer.log_every_n_steps=1",
    "--trainer.enable_progress_bar=false",
    "--model.init_args.tokenizer.init_args.num_frames=8",
    "--model.init_args.tokenizer.init_args.image_size=32",
    "--model.init_args.tokenizer.init_args.patch_size=[2, 8, 8]",
    "--model.init_args.tokenizer.init_args.frames_per_block=2",
    "--model.init_args.tokenizer.init_args.tokens_per_block=8",
    "--model.init_args.tokenizer.init_args.width=32",
    "--model.init_args.tokenizer.init_args.depth=1",
    "--model.init_args.tokenizer.init_args.heads=2",
    "--model.init_args.tokenizer.init_args.codebook_size=64",
    "--model.init_args.tail_drop.init_args.mean=4",
    "--model.init_args.tail_drop.init_args.std=2",
    "--model.init_args.tail_drop.init_args.min_tokens=1",
    "--model.init_args.tail_drop.init_args.max_tokens=8",
    "--model.init_args.loss.init_args.discriminator.init_args.num_frames=8",
    "--model.init_args.loss.init_args.discriminator.init_args.image_size=32",
    "--model.init_args.loss.init_args.discriminator.init_args.patch_size=[2, 8, 8]",
    "--model.init_args.loss.init_args.discriminator.init_args.width=32",
    "--model.init_args.loss.init_args.discriminator.init_args.depth=1",
    "--model.init_args.loss.init_args.discriminator.init_args.heads=2",
    "--model.init_args.loss.init_args.disc_start=2",
    "--model.init_args.loss.init_args.disc_every=2",
    "--model.init_args.loss.init_args.perceptual_frames=2",
    "--model.init_args.scheduler.init_args.warmup_steps=2",
    "--data.init_args.train_urls=data/demo/synthetic/train-*.tar",
    "--data.init_args.val_urls=data/demo/synthetic/val-*.tar",
    "--data.init_args.test_urls=data/demo/synthetic/val-*.tar",
    "--data.init_args.num_frames=8",
    "--data.init_args.resolution=32",
    "--data.init_args.batch_size=4",
    "--data.init_args.num_workers=0",
    "--data.init_args.epoch_length=16",
]

TINY_DATA = [a for a in TINY_TOKENIZER if a.startswith("--data.")]

# Shrinks the demo scorer to the tiny tokenizer above: 4 candidates of 2, 4, 6, 8 tokens.
TINY_SCORER = [
    "--trainer.max_steps=6",
    "--trainer.val_check_interval=3",
    "--trainer.limit_val_batches=1",
    "--trainer.log_every_n_steps=1",
    "--trainer.enable_progress_bar=false",
    "--model.init_args.scorer.init_args.token_width=32",
    "--model.init_args.scorer.init_args.tokens_per_block=8",
    "--model.init_args.scorer.init_args.num_candidates=4",
    "--model.init_args.scorer.init_args.width=32",
    "--model.init_args.scorer.init_args.depth=1",
    "--model.init_args.scorer.init_args.heads=2",
    "--model.init_args.scheduler.init_args.warmup_steps=2",
    *TINY_DATA,
]


@contextmanager
def working_directory(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``data/demo/synthetic`` shards (12 train + 4 val clips, 8 frames, 32 px)."""
    from adaptok.data.cli import main as shards

    root = tmp_path_factory.mktemp("workspace")
    out = root / "data" / "demo" / "synthetic"
    args = ["synthetic", "--out", str(out), "--num-clips", "16", "--seed", "0", "--size", "32"]
    code = shards(
        [*args, "--num-frames", "8", "--val-fraction", "0.25", "--shard-samples", "2", "--quiet"]
    )
    assert code in (0, None)
    return root


@pytest.fixture(scope="session")
def tokenizer_ckpt(workspace: Path) -> Path:
    """A tiny tokenizer trained for a few steps by ``adaptok fit`` on the demo YAML."""
    from modules.cli import run_cli

    with working_directory(workspace):
        run_cli(["fit", "--config", str(EXPERIMENTS / "demo" / "tokenizer.yaml"), *TINY_TOKENIZER])
    ckpt = workspace / "runs" / "demo" / "tokenizer" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file(), sorted(str(p) for p in workspace.rglob("*.ckpt"))
    return ckpt


@pytest.fixture(scope="session")
def scorer_ckpt(workspace: Path, tokenizer_ckpt: Path) -> Path:
    """A tiny scorer trained for a few steps by ``adaptok fit`` on the demo YAML."""
    from modules.cli import run_cli

    with working_directory(workspace):
        run_cli(["fit", "--config", str(EXPERIMENTS / "demo" / "scorer.yaml"), *TINY_SCORER])
    ckpt = workspace / "runs" / "demo" / "scorer" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file(), sorted(str(p) for p in workspace.rglob("*.ckpt"))
    return ckpt
