"""SplitCallback routes Lightning's validation and test hooks with the split's name."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.demos.boring_classes import BoringModel

from callbacks.split_hooks import Split, SplitCallback


class _Recorder(SplitCallback):
    def __init__(self) -> None:
        self.calls: list[tuple[str, Split, int | None]] = []

    def on_split_start(self, split: Split, trainer: pl.Trainer, pl_module: Any) -> None:
        self.calls.append(("start", split, None))

    def on_split_batch_end(
        self,
        split: Split,
        trainer: pl.Trainer,
        pl_module: Any,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        assert outputs is not None and batch is not None
        self.calls.append(("batch", split, batch_idx))

    def on_split_end(self, split: Split, trainer: pl.Trainer, pl_module: Any) -> None:
        self.calls.append(("end", split, None))


def test_validation_and_test_hooks_reach_the_split_methods(tmp_path) -> None:
    recorder = _Recorder()
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=2,
        limit_test_batches=3,
        num_sanity_val_steps=0,
        callbacks=[recorder],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = BoringModel()
    trainer.fit(model)
    trainer.test(model, verbose=False)
    assert recorder.calls == [
        ("start", "val", None),
        ("batch", "val", 0),
        ("batch", "val", 1),
        ("end", "val", None),
        ("start", "test", None),
        ("batch", "test", 0),
        ("batch", "test", 1),
        ("batch", "test", 2),
        ("end", "test", None),
    ]
