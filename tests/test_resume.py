"""A killed ``adaptok fit`` resumed with ``--ckpt_path last`` continues the data stream.

Three real ``adaptok fit`` processes on a tiny config: an uninterrupted run, a run stopped by
SIGTERM after a few steps, and its resumption from ``last``. The resumed steps must see
the clips (keys and pixels: order, random starts, flips) of the same steps of the
uninterrupted run, and the run must end at the same step count. Before the datamodule kept
its state, the resumed run replayed the batches of its first epoch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

REPO = Path(__file__).resolve().parents[1]
MAX_STEPS = 12


class TinyVideoModel(LightningModule):
    """Smallest trainable module on video batches; ``delay`` seconds per step."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.scale = torch.nn.Parameter(torch.ones(1))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        time.sleep(self.delay)
        return (batch["video"].mean() * self.scale - 0.5).square()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class BatchLog(Callback):
    """Appends ``{"step", "epoch", "keys", "pixels"}`` of every training batch to a file."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: dict, batch_idx: int
    ) -> None:
        record = {
            "step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "keys": list(batch["key"]),
            "pixels": round(float(batch["video"].double().sum()), 3),
        }
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")


def _config(run: Path, shards: Path, delay: float) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_steps": MAX_STEPS,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "num_sanity_val_steps": 0,
            "default_root_dir": str(run),
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {
                        "dirpath": str(run / "checkpoints"),
                        "filename": "step{step}",
                        "auto_insert_metric_name": False,
                        "every_n_train_steps": 1,
                        "save_top_k": -1,
                        "save_last": True,
                    },
                },
                {
                    "class_path": "test_resume.BatchLog",
                    "init_args": {"path": str(run / "batches.jsonl")},
                },
            ],
        },
        "model": {"class_path": "test_resume.TinyVideoModel", "init_args": {"delay": delay}},
        "data": {
            "class_path": "datamodules.VideoShardsDataModule",
            "init_args": {
                "train_urls": str(shards / "train-*.tar"),
                "num_frames": 4,
                "resolution": 16,
                "hflip": True,
                "batch_size": 2,
                "num_workers": 1,
                "epoch_length": 8,  # 4 batches per epoch: the kill lands after epoch 0
                "shuffle_buffer": 4,
            },
        },
    }
    run.mkdir(parents=True)
    path = run / "config.json"
    path.write_text(json.dumps(config))
    return path


def _fit(config: Path, *extra: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, "-m", "modules.cli", "fit", "--config", str(config), *extra]
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _batches(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "batches.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_killed_fit_resumes_where_it_stopped(tmp_path: Path) -> None:
    from adaptok.data.cli import main as shards

    data = tmp_path / "shards"
    args = ["synthetic", "--out", str(data), "--num-clips", "12", "--num-frames", "8"]
    assert (
        shards([*args, "--size", "16", "--val-fraction", "0", "--shard-samples", "2", "--quiet"])
        == 0
    )

    reference = _fit(_config(tmp_path / "reference", data, delay=0.0))
    output, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, output[-3000:]
    expected = {b["step"]: b for b in _batches(tmp_path / "reference")}
    assert sorted(expected) == list(range(MAX_STEPS))

    run = tmp_path / "interrupted"
    config = _config(run, data, delay=0.3)
    first = _fit(config)
    deadline = time.monotonic() + 240
    while not (run / "checkpoints" / "step5.ckpt").exists():
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[0][-3000:]
        time.sleep(0.05)
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
    stopped_at = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    assert 5 <= stopped_at < MAX_STEPS, "the run finished before it was stopped"
    logged = _batches(run)
    before = {b["step"]: b for b in logged}

    resumed = _fit(config, "--ckpt_path", "last")
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output[-3000:]
    after = _batches(run)[len(logged) :]
    assert [b["step"] for b in after] == list(range(stopped_at, MAX_STEPS))
    final = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert final["global_step"] == MAX_STEPS
    combined = {
        **{s: b for s, b in before.items() if s < stopped_at},
        **{b["step"]: b for b in after},
    }
    assert combined == expected  # same epochs, keys, crops and flips at every step
    replay = [expected[s]["keys"] for s in range(len(after))]
    assert [b["keys"] for b in after] != replay
