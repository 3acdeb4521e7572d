"""Two-process DDP on CPU (gloo) through the real CLI: training, shard splitting, metric sync."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import EXPERIMENTS, REPO, TINY_SCORER, TINY_TOKENIZER


def test_tokenizer_fit_runs_under_ddp_with_gloo(workspace: Path, tmp_path: Path) -> None:
    (tmp_path / "data").symlink_to(workspace / "data")  # own runs/ folder, shared shards
    args = [
        sys.executable,
        "-m",
        "modules.cli",
        "fit",
        "--config",
        str(EXPERIMENTS / "demo" / "tokenizer.yaml"),
        *TINY_TOKENIZER,
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.strategy=ddp_find_unused_parameters_true",
        "--trainer.max_steps=4",
        "--trainer.val_check_interval=2",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "distributed_backend=gloo" in result.stderr + result.stdout
    assert "All distributed processes registered" in result.stderr + result.stdout
    assert (tmp_path / "runs" / "demo" / "tokenizer" / "checkpoints" / "last.ckpt").is_file()


def test_scorer_validation_under_ddp_with_uneven_shards(
    workspace: Path, tokenizer_ckpt: Path, tmp_path: Path
) -> None:
    """3 val shards on 2 ranks (2 + 1): validation gathers unequal row counts without a hang."""
    (tmp_path / "data").symlink_to(workspace / "data")
    (tmp_path / "tokenizer.ckpt").symlink_to(tokenizer_ckpt)
    folder = workspace / "data" / "demo" / "synthetic"
    shards = (sorted(folder.glob("val-*.tar")) + sorted(folder.glob("train-*.tar")))[:3]
    args = [
        sys.executable,
        "-m",
        "modules.cli",
        "fit",
        "--config",
        str(EXPERIMENTS / "demo" / "scorer.yaml"),
        *TINY_SCORER,
        "--model.init_args.tokenizer_ckpt=tokenizer.ckpt",
        "--data.init_args.val_urls=[" + ", ".join(str(s) for s in shards) + "]",
        "--data.init_args.batch_size=1",
        "--trainer.limit_val_batches=null",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.max_steps=2",
        "--trainer.val_check_interval=2",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    # a stalled collective would end in the timeout, not in a pass
    result = subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "runs" / "demo" / "scorer" / "checkpoints" / "last.ckpt").is_file()
