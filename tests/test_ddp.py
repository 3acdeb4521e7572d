"""Two-process DDP on CPU (gloo) through the real CLI: training, shard splitting, metric sync.

Each run adds :class:`tests.helpers.RankRecorder`, which writes what each process saw to
``ranks/rank<R>.json``; the tests assert on those files, the return code and the checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from tests.helpers import REPO, tiny_args

RECORDER = '--trainer.callbacks+={"class_path": "tests.helpers.RankRecorder"}'


def _run_two_ranks(args: list[str], cwd: Path, timeout: int) -> list[dict[str, Any]]:
    """``adaptok <args>`` on 2 CPU processes; the two ranks' records, rank 0 first."""
    command = [sys.executable, "-m", "modules.cli", *args, RECORDER]
    command += ["--trainer.accelerator=cpu", "--trainer.devices=2"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    # a stalled collective would end in the timeout, not in a pass
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-4000:]
    records = [json.loads((cwd / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank, record in enumerate(records):
        assert (record["rank"], record["world_size"], record["backend"]) == (rank, 2, "gloo")
    return records


def _shard_keys(shards: list[Path]) -> set[str]:
    import tarfile

    keys = set()
    for shard in shards:
        with tarfile.open(shard) as archive:
            keys |= {m.name.split(".", 1)[0] for m in archive if m.isfile()}
    return keys


def test_tokenizer_fit_runs_under_ddp_with_gloo(workspace: Path, tmp_path: Path) -> None:
    (tmp_path / "data").symlink_to(workspace / "data")  # own runs/ folder, shared shards
    args = ["fit", *tiny_args("demo/tokenizer.yaml")]
    args += ["--trainer.strategy=ddp_find_unused_parameters_true"]
    args += ["--trainer.max_steps=4", "--trainer.val_check_interval=2"]
    records = _run_two_ranks(args, tmp_path, timeout=600)
    ckpt = tmp_path / "runs" / "demo" / "tokenizer" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] > 0
    assert records[0]["global_step"] == records[1]["global_step"] > 0  # in step
    # training: each rank drew its own batches of 4 (a resampled stream per rank)
    first, second = (r["train_keys"] for r in records)
    assert len(first) == len(second) > 0 and len(first) % 4 == 0
    assert first != second
    # validation: the 2 val shards are split, one per rank, and together cover the val clips
    val = sorted((workspace / "data" / "demo" / "synthetic").glob("val-*.tar"))
    seen = [set(r["val_keys"]) for r in records]
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert seen[0] | seen[1] == _shard_keys(val)
    # metrics logged with sync_dist are the mean over both ranks: the same on each
    assert records[0]["metrics"]["val/psnr"] == records[1]["metrics"]["val/psnr"]


def test_scorer_validation_under_ddp_with_uneven_shards(
    workspace: Path, tokenizer_ckpt: Path, tmp_path: Path
) -> None:
    """3 val shards on 2 ranks (2 + 1): validation gathers unequal row counts without a hang."""
    (tmp_path / "data").symlink_to(workspace / "data")
    (tmp_path / "tokenizer.ckpt").symlink_to(tokenizer_ckpt)
    folder = workspace / "data" / "demo" / "synthetic"
    shards = (sorted(folder.glob("val-*.tar")) + sorted(folder.glob("train-*.tar")))[:3]
    args = [
        "fit",
        *tiny_args("demo/scorer.yaml"),
        "--model.init_args.tokenizer_ckpt=tokenizer.ckpt",
        "--data.init_args.val_urls=[" + ", ".join(str(s) for s in shards) + "]",
        "--data.init_args.batch_size=1",
        "--trainer.limit_val_batches=null",
        "--trainer.max_steps=2",
        "--trainer.val_check_interval=2",
    ]
    records = _run_two_ranks(args, tmp_path, timeout=300)
    assert (tmp_path / "runs" / "demo" / "scorer" / "checkpoints" / "last.ckpt").is_file()
    # one validation, batches of one clip: 2 shards (4 clips) on one rank, 1 (2) on the other
    assert sorted(r["val_batches"] for r in records) == [2, 4]
    seen = [set(r["val_keys"]) for r in records]
    assert not seen[0] & seen[1] and seen[0] | seen[1] == _shard_keys(shards)
    # the loss is averaged over the ranks, the ranking metrics are computed by each rank on
    # the rows gathered from both: the same values on each
    assert "val/loss" in records[0]["metrics"] and len(records[0]["metrics"]) > 1
    assert records[0]["metrics"] == records[1]["metrics"]
