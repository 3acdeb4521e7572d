"""``SplitCallback``: Lightning's validation and test hooks behind one split-aware set of methods.

Lightning calls ``on_validation_epoch_start`` / ``on_test_epoch_start`` (and the batch-end and
epoch-end pairs) with the same arguments; the suite's evaluators do the same work in both and
differ only in the split's name. A subclass overrides :meth:`SplitCallback.on_split_start`,
:meth:`SplitCallback.on_split_batch_end` and :meth:`SplitCallback.on_split_end` (no-ops here),
which receive the split first, instead of writing out six hooks.
"""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
from typing_extensions import override

__all__ = ["Split", "SplitCallback"]

Split = Literal["val", "test"]
"""The evaluation splits, in the names the suite logs under (``val/...``, ``test/...``)."""


class SplitCallback(pl.Callback):
    """A callback whose validation and test hooks call the same split-aware methods."""

    def on_split_start(
        self, split: Split, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        """Called at the start of a validation or test epoch."""

    def on_split_batch_end(
        self,
        split: Split,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Called after each validation or test batch with the step's ``outputs``."""

    def on_split_end(
        self, split: Split, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        """Called at the end of a validation or test epoch."""

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.on_split_start("val", trainer, pl_module)

    @override
    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.on_split_start("test", trainer, pl_module)

    @override
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.on_split_batch_end("val", trainer, pl_module, outputs, batch, batch_idx)

    @override
    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.on_split_batch_end("test", trainer, pl_module, outputs, batch, batch_idx)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.on_split_end("val", trainer, pl_module)

    @override
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.on_split_end("test", trainer, pl_module)
