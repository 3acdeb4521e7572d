"""A generator run resumed from a checkpoint continues the token stream where it stopped.

An uninterrupted fit on token shards logs the keys and budget levels of every step; fits
resumed from its checkpoints in the middle of epoch 0 and of epoch 1 must see the same
batches at the same steps (shard order, shuffle buffer and budget draws of each epoch), not
the first batches of the epoch again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from token_helpers import random_annotations, write_token_shard

from datamodules.token_shards import TokenShardsDataModule

MAX_STEPS = 14  # 22 samples in batches of 3: 8 batches per epoch, so two epochs are read


class TinyTokenModel(LightningModule):
    """Smallest trainable module on token batches."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        assert "skipped" not in batch  # taken out before the batch reaches the model
        return (batch["tokens"].float().mean() * self.scale - 1.0).square()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class StepLog(Callback):
    """Records ``step -> [epoch, [[key, budget level], ...]]`` of every training batch."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: dict[int, Any] = {}

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        rows = [[k, v] for k, v in zip(batch["key"], batch["budget_level"].tolist(), strict=True)]
        self.steps[trainer.global_step] = [trainer.current_epoch, rows]


def _fit(folder: Path, run: Path, workers: int, ckpt_path: Path | None = None) -> StepLog:
    data = TokenShardsDataModule(
        train_urls=str(folder / "train-*.tar"),
        batch_size=3,
        num_workers=workers,
        shuffle_buffer=6,
        seed=11,
    )
    log = StepLog()
    trainer = Trainer(
        accelerator="cpu",
        max_steps=MAX_STEPS,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(run),
        callbacks=[
            log,
            ModelCheckpoint(
                dirpath=str(run / "checkpoints"),
                filename="step{step}",
                auto_insert_metric_name=False,
                every_n_train_steps=1,
                save_top_k=-1,
            ),
        ],
    )
    trainer.fit(TinyTokenModel(), datamodule=data, ckpt_path=ckpt_path)
    return log


@pytest.mark.filterwarnings("ignore:.*resuming from a checkpoint that ended before the epoch")
@pytest.mark.parametrize("workers", [0, 1])
def test_resumed_generator_fit_continues_the_token_stream(tmp_path: Path, workers: int) -> None:
    samples = random_annotations(22, seed=5)
    for index in range(0, len(samples), 5):
        write_token_shard(tmp_path / "shards" / f"train-{index // 5:06d}.tar", samples[index:][:5])
    reference = _fit(tmp_path / "shards", tmp_path / "reference", workers).steps
    assert sorted(reference) == list(range(MAX_STEPS))
    assert {epoch for epoch, _ in reference.values()} == {0, 1}
    checkpoints = tmp_path / "reference" / "checkpoints"
    for stopped in (5, 11):  # in the middle of epoch 0, in the middle of epoch 1
        state = torch.load(checkpoints / f"step{stopped}.ckpt", weights_only=False)
        saved = state["TokenShardsDataModule"]
        assert (saved["epoch"], saved["batches"]) == (stopped // 8, stopped % 8)
        resumed = _fit(
            tmp_path / "shards",
            tmp_path / f"resumed{stopped}",
            workers,
            checkpoints / f"step{stopped}.ckpt",
        ).steps
        assert sorted(resumed) == list(range(stopped, MAX_STEPS))
        expected = {step: reference[step] for step in resumed}
        assert json.dumps(resumed) == json.dumps(expected)  # same epochs, keys and budgets
        first_of_epoch = 8 * (stopped // 8)
        assert resumed[stopped][1] != reference[first_of_epoch][1]  # not a replay
