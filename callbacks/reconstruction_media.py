"""ReconstructionMedia: the first validation clips reconstructed at several token counts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from typing_extensions import override

from callbacks.media import log_video, side_by_side
from callbacks.split_hooks import Split, SplitCallback

__all__ = ["ReconstructionMedia"]


class ReconstructionMedia(SplitCallback):
    """Log ``[real | recon@l1 | recon@l2 | ...]`` side by side of the first validation batch.

    One video per validation run to TensorBoard (rank 0), so the effect of dropping tail tokens
    is seen as the tokenizer trains. Works with any module exposing ``tokenizer``
    (``AdapTokTokenizer``).

    Args:
        fractions: Kept tokens per block of each panel as fractions of the tokenizer's ``M``
            (each in ``(0, 1]``; ``round(f * M)``, at least 1), so the setting does not repeat
            the tokenizer's size.
        num_clips: Clips of the first batch shown.
        split: ``val`` or ``test``.
    """

    def __init__(
        self, fractions: Sequence[float], num_clips: int = 2, split: Split = "val"
    ) -> None:
        super().__init__()
        if not fractions or any(not 0 < f <= 1 for f in fractions):
            raise ValueError(f"fractions must lie in (0, 1], got {list(fractions)}")
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        self.fractions = list(fractions)
        self.tokens_per_block: list[int] = []
        self.num_clips = num_clips
        self.split = split

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        tokenizer = getattr(pl_module, "tokenizer", None)
        if tokenizer is None:
            raise TypeError(
                "ReconstructionMedia needs a module with a `tokenizer`; got "
                f"{type(pl_module).__name__}"
            )
        tokens = tokenizer.tokens_per_block
        self.tokens_per_block = sorted({max(1, round(f * tokens)) for f in self.fractions})

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        tokenizer = pl_module.tokenizer
        clips = batch["video"][: self.num_clips]
        with torch.no_grad():
            codes = tokenizer.encode(clips).codes
            panels = [clips]
            for count in self.tokens_per_block:
                lengths = torch.full(
                    (clips.shape[0], tokenizer.num_blocks), count, device=clips.device
                )
                panels.append(tokenizer.decode(codes, lengths).clamp(0, 1))
        counts = ",".join(str(c) for c in self.tokens_per_block)
        tag = f"{self.split}/reconstructions_real_then_{counts}_tokens"
        log_video(trainer, tag, side_by_side(*panels, gap=0), trainer.global_step)

    @override
    def on_split_batch_end(
        self,
        split: Split,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if split == self.split and batch_idx == 0:
            self._log(trainer, pl_module, batch)
