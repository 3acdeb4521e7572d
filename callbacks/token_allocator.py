"""TokenAllocator: rate-distortion of scorer-driven vs uniform vs oracle allocation.

At validation and test epoch ends (the work is done batch by batch, nothing is kept but
running sums and the chosen lengths), for every configured budget it encodes the clips with

- ``scorer``: IPAL on the scorer's predicted costs (the method),
- ``uniform``: every block at the same mean number of tokens,
- ``oracle``: IPAL on measured costs (an upper bound for any scorer),

and evaluates all three with ``VideoQualityMeter`` (PSNR, SSIM, LPIPS, FVD). It logs the
rate-distortion table, plots, the histogram of chosen lengths and a heatmap of tokens per
block per clip, and, when the shards carry per-frame ``complexity`` (synthetic data), the
rank correlation between each block's complexity and the tokens it received.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import matplotlib
import numpy as np
import torch
from scipy.stats import spearmanr

from adaptok.budget_planner import AllocationPolicy, PlannerMode, TokenBudgetPlanner
from adaptok.metrics.meter import VideoQualityMeter
from callbacks.media import log_figure, tensorboard_writer
from callbacks.report import write_report

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["TokenAllocator"]

log = logging.getLogger(__name__)

Split = Literal["val", "test"]
POLICIES: tuple[AllocationPolicy, ...] = ("scorer", "uniform", "oracle")


class TokenAllocator(pl.Callback):
    """Evaluate token allocation policies at several budgets.

    The module under test must expose ``tokenizer`` (frozen ``AdapTokTokenizer``), ``scorer``
    (``BlockCausalScorer``) and ``quality`` (``BlockQuality``, the oracle's cost), as
    ``modules.ScorerModule`` does.

    Args:
        budgets: Mean tokens per block as fractions of the tokens per block (0.25 = a quarter).
        policies: Which of ``scorer``, ``uniform``, ``oracle`` to run.
        mode: Allocation mode: ``streaming`` (causal), ``batch`` (paper ILP) or ``per_clip``.
        solver: ``fast`` (exact) or ``mip`` (python-mip).
        equality: Spend each budget exactly (the paper) rather than at most.
        num_samples: Clips evaluated per epoch (per rank); the rest of the epoch is skipped.
        fvd: Compute FVD (needs >= 400 clips to be stable; smaller sets are flagged).
        lpips: Compute LPIPS.
        every_n_epochs: Run on validation every n epochs (test always runs).
        heatmap_clips: Clips shown in the tokens-per-block heatmap.
    """

    def __init__(
        self,
        budgets: Sequence[float] = (0.25, 0.5, 0.75),
        policies: Sequence[AllocationPolicy] = POLICIES,
        mode: PlannerMode = "streaming",
        solver: Literal["fast", "mip"] = "fast",
        equality: bool = True,
        num_samples: int = 256,
        fvd: bool = True,
        lpips: bool = True,
        every_n_epochs: int = 1,
        heatmap_clips: int = 32,
    ) -> None:
        super().__init__()
        if not budgets or any(not 0 < b <= 1 for b in budgets):
            raise ValueError(f"budgets must be fractions in (0, 1], got {list(budgets)}")
        unknown = set(policies) - set(POLICIES)
        if unknown:
            raise ValueError(f"unknown policies {sorted(unknown)}; choose from {POLICIES}")
        self.budgets = sorted(budgets)
        self.policies = list(policies)
        self.mode = mode
        self.solver = solver
        self.equality = equality
        self.num_samples = num_samples
        self.fvd = fvd
        self.lpips = lpips
        self.every_n_epochs = every_n_epochs
        self.heatmap_clips = heatmap_clips
        self._meters: dict[tuple[float, str], VideoQualityMeter] = {}
        self._lengths: dict[tuple[float, str], list[torch.Tensor]] = {}
        self._complexity: list[torch.Tensor] = []
        self._seen = 0
        self._active = False
        self._planner: TokenBudgetPlanner | None = None
        self.last_results: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ bookkeeping
    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: Split) -> None:
        self._active = split == "test" or trainer.current_epoch % self.every_n_epochs == 0
        if trainer.sanity_checking:
            self._active = False
        if not self._active:
            return
        for attribute in ("tokenizer", "scorer", "quality"):
            if not hasattr(pl_module, attribute):
                raise TypeError(
                    f"TokenAllocator needs a module with `{attribute}` (e.g. modules.ScorerModule); "
                    f"got {type(pl_module).__name__}"
                )
        self._meters = {
            (budget, policy): VideoQualityMeter(fvd=self.fvd, lpips=self.lpips).to(pl_module.device)
            for budget in self.budgets
            for policy in self.policies
        }
        self._lengths = {key: [] for key in self._meters}
        self._planner = TokenBudgetPlanner(
            pl_module.tokenizer,
            pl_module.scorer,
            pl_module.quality,
            mode=self.mode,
            solver=self.solver,
            equality=self.equality,
        )
        self._complexity = []
        self._seen = 0

    def _batch(self, pl_module: pl.LightningModule, batch: dict[str, Any]) -> None:
        if not self._active or self._seen >= self.num_samples:
            return
        video = batch["video"][: self.num_samples - self._seen]
        self._seen += video.shape[0]
        planner = self._planner
        assert planner is not None
        tokens_per_block = pl_module.tokenizer.tokens_per_block
        with torch.no_grad():
            encoding = pl_module.tokenizer.encode(video)
            for budget in self.budgets:
                for policy in self.policies:
                    lengths = planner.plan(video, encoding, budget * tokens_per_block, policy)
                    recon = pl_module.tokenizer.decode(encoding.codes, lengths).clamp(0, 1)
                    self._meters[(budget, policy)].update(video, recon)
                    self._lengths[(budget, policy)].append(lengths.cpu())
        if "complexity" in batch:
            self._complexity.append(batch["complexity"][: video.shape[0]].float().cpu())

    def _end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: Split) -> None:
        if not self._active or not self._meters:
            return
        self._active = False
        tokens_per_block = pl_module.tokenizer.tokens_per_block
        rows: list[dict[str, Any]] = []
        for (budget, policy), meter in self._meters.items():
            results = meter.compute()
            lengths = torch.cat(self._lengths[(budget, policy)]).float()
            row = {
                "budget": budget,
                "policy": policy,
                "mean_tokens_per_block": float(lengths.mean()),
                "tokens_per_clip": float(lengths.sum(1).mean()),
                **{
                    k: v
                    for k, v in results.items()
                    if k in ("psnr", "ssim", "lpips", "fvd", "fvd_unstable", "num_samples")
                },
            }
            rows.append(row)
            tag = f"{split}/alloc/{policy}@{int(round(budget * tokens_per_block))}"
            for name in ("psnr", "ssim", "lpips", "fvd"):
                if name in results and not math.isnan(results[name]):
                    pl_module.log(f"{tag}/{name}", results[name], sync_dist=False)
        notes = self._complexity_notes(pl_module, split)
        self.last_results = rows
        self._log_plots(trainer, split, rows, tokens_per_block)
        if split == "test":
            directory = Path(trainer.log_dir or trainer.default_root_dir)
            md, _ = write_report(
                directory, "allocation_report", "Token allocation: rate-distortion", rows, notes
            )
            log.info("TokenAllocator report written to %s", md)
        self._meters = {}

    # ------------------------------------------------------------------ analyses
    def _complexity_notes(self, pl_module: pl.LightningModule, split: Split) -> list[str]:
        """Rank correlation between each block's content complexity and its tokens."""
        notes = [
            f"allocation mode: {self.mode}, solver: {self.solver}, equality budget: {self.equality}"
        ]
        if not self._complexity:
            return notes
        complexity = torch.cat(self._complexity)  # (N, T)
        frames = pl_module.tokenizer.frames_per_block
        per_block = complexity.view(complexity.shape[0], -1, frames).mean(-1)  # (N, K)
        if torch.isnan(per_block).all():
            return notes
        for budget in self.budgets:
            if (budget, "scorer") not in self._lengths:
                continue
            lengths = torch.cat(self._lengths[(budget, "scorer")]).float()
            valid = ~torch.isnan(per_block)
            x, y = per_block[valid].numpy(), lengths[valid].numpy()
            if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
                continue
            rho = float(spearmanr(x, y).statistic)
            pl_module.log(f"{split}/alloc/complexity_spearman@{budget:g}", rho, sync_dist=False)
            notes.append(
                f"budget {budget:g}: Spearman(block complexity, scorer tokens) = {rho:.3f}"
            )
        return notes

    def _log_plots(
        self, trainer: pl.Trainer, split: Split, rows: list[dict[str, Any]], tokens_per_block: int
    ) -> None:
        if tensorboard_writer(trainer) is None:
            return
        step = trainer.global_step
        figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        for policy in self.policies:
            points = sorted((r["tokens_per_clip"], r) for r in rows if r["policy"] == policy)
            for axis, name in zip(axes, ("psnr", "lpips"), strict=True):
                values = [r.get(name, float("nan")) for _, r in points]
                axis.plot([p for p, _ in points], values, marker="o", label=policy)
                axis.set_xlabel("tokens per clip")
                axis.set_ylabel(name)
        axes[0].legend()
        figure.tight_layout()
        log_figure(trainer, f"{split}/alloc/rate_distortion", figure, step)
        plt.close(figure)

        scorer_keys = [(b, "scorer") for b in self.budgets if (b, "scorer") in self._lengths]
        if not scorer_keys:
            return
        figure, axes = plt.subplots(
            2, len(scorer_keys), figsize=(3.2 * len(scorer_keys), 6), squeeze=False
        )
        writer = tensorboard_writer(trainer)
        for column, key in enumerate(scorer_keys):
            lengths = torch.cat(self._lengths[key])
            axes[0, column].hist(
                lengths.flatten().numpy(), bins=np.arange(0, tokens_per_block + 2) + 0.5
            )
            axes[0, column].set_title(f"budget {key[0]:g}: chosen lengths")
            shown = lengths[: self.heatmap_clips].numpy()
            image = axes[1, column].imshow(
                shown, aspect="auto", vmin=0, vmax=tokens_per_block, cmap="viridis"
            )
            axes[1, column].set_xlabel("block")
            axes[1, column].set_ylabel("clip")
            if writer is not None:
                writer.add_histogram(f"{split}/alloc/lengths@{key[0]:g}", lengths.flatten(), step)
        figure.colorbar(image, ax=axes[1, :].tolist(), label="tokens")
        log_figure(trainer, f"{split}/alloc/lengths_and_heatmap", figure, step)
        plt.close(figure)

    # ------------------------------------------------------------------ hooks
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module, "val")

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module, "test")

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._batch(pl_module, batch)

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._batch(pl_module, batch)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end(trainer, pl_module, "test")
