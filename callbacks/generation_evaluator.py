"""``GenerationEvaluator``: gFVD and asked-vs-produced tokens of the AR generator's samples.

At the end of validation runs and of testing, the callback takes batches of real windows
from :class:`datamodules.real_clips.RealClips` (built from ``real_urls``, ``real_windows``,
``window_seed``, ``batch_size`` and ``num_workers``; the data set-up lives there) and for
every window and budget level generates one clip with the module's ``sample``. Which windows
(``real_windows``):

- ``"nonoverlapping"`` (the official protocol, ``sample.py``): ``num_samples`` distinct
  windows drawn with ``window_seed`` among every non-overlapping ``T``-frame window of every
  video; each rank reads the drawn windows of its shards, so the total is exactly
  ``num_samples``;
- ``"first"``: the first ``T`` frames of the first ``num_samples`` videos (one window per
  video, as ``datamodules.VideoShardsDataModule`` evaluates), NOT the paper's protocol.

For each window:

- class-conditional: with the window's class (docs/METHOD.md section 5.7: each generated
  clip takes the class of a real window);
- frame prediction: the continuation of the window's first ``condition_frames`` frames.

Generated clips are decoded by the frozen tokenizer and compared with the real windows by
``adaptok.metrics.VideoQualityMeter`` (FVD with I3D; frame prediction at 64x64 over all
frames, the protocol of docs/METHOD.md section 6, plus PSNR/SSIM against the true continuation).
Tokens: the budget a level asks for (``budgets[level] * K * M``) vs the tokens each sample
kept, as mean, std and histogram. Every statistic is a sum reduced over processes, so the
numbers are those of all ranks. Sample clips go to TensorBoard (rank 0); testing ends with
``generation_report.md`` / ``.csv`` in the logger's folder (rank 0).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from adaptok.data.skips import REPORT_ONLY_KEY
from adaptok.metrics import VideoQualityMeter
from adaptok.metrics.frame_quality import describe_psnr
from adaptok.metrics.fvd import FVD_FRAMES
from adaptok.nn.sampling import nearest_reachable_total
from callbacks.media import log_video, side_by_side
from callbacks.report import write_report
from callbacks.split_hooks import Split
from datamodules.real_clips import RealClips, RealWindows

__all__ = ["GenerationEvaluator"]

LengthRule = Literal["free", "exact", "at_most"]


class GenerationEvaluator(pl.Callback):
    """Generate clips at the end of validation / test and score them against real windows.

    Args:
        real_urls: Video shards of the real windows (glob, brace pattern, list, URL), e.g. the
            UCF-101 train list for the paper's gFVD or a held-out split.
        num_samples: Generated clips per budget level at test (over all processes).
        val_num_samples: Same at validation runs (None: ``num_samples``).
        budget_levels: Budget levels to generate at (None: every level of the module).
        length_rule: ``free`` (the model chooses lengths; the budget embedding is its only
            guide), ``exact`` (masked decoding lands every clip on the level's tokens,
            snapped to the nearest reachable total) or ``at_most``.
        grid: Close blocks only at the scorer's candidate lengths.
        temperature: Sampling temperature (None: the module's default). Likewise the next three.
        top_k: Top-k filter.
        top_p: Nucleus filter.
        cfg_scale: Classifier-free guidance scale.
        batch_size: Real windows (and generated clips) per batch.
        num_workers: Loader workers for the real windows.
        fvd: Compute gFVD (I3D weights needed; skipped with a warning when missing).
        fvd_levels: Budget levels that get a gFVD (None: all of ``budget_levels``); I3D is by
            far the slowest part on a CPU.
        fvd_num_samples: Clips per level that enter gFVD and PSNR/SSIM (None: all); the token
            statistics always use every generated clip.
        fvd_resolution: Resize real and generated frames to this size before FVD (None:
            64 for frame prediction, as in the paper's protocol; the clip size otherwise).
        num_log_videos: Generated clips per level shown in TensorBoard (0: none).
        every_n_validations: Evaluate every n-th validation run (0: only at test).
        fps: Playback speed of logged clips.
        report_stem: File name of the test report.
        seed: Seed of the sampling noise (per rank and batch).
        real_windows: ``"nonoverlapping"`` (official: ``num_samples`` windows drawn with
            ``window_seed`` among all non-overlapping ``T``-frame windows) or ``"first"``
            (the first ``T`` frames of each video).
        window_seed: Seed of the window draw (official ``dataset_split_seed`` 42).
        i3d_weights: I3D weight file instead of the cached one.
        fvd_extractor: Feature network replacing I3D (tests, custom detectors).

    Raises:
        ValueError: On non-positive counts or an unknown ``real_windows``.
    """

    def __init__(
        self,
        real_urls: str | list[str],
        num_samples: int = 10_000,
        val_num_samples: int | None = None,
        budget_levels: list[int] | None = None,
        length_rule: LengthRule = "free",
        grid: bool = False,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        cfg_scale: float | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
        fvd: bool = True,
        fvd_levels: list[int] | None = None,
        fvd_num_samples: int | None = None,
        fvd_resolution: int | None = None,
        num_log_videos: int = 4,
        every_n_validations: int = 1,
        fps: int = 4,
        report_stem: str = "generation_report",
        seed: int = 42,
        i3d_weights: str | None = None,
        fvd_extractor: nn.Module | None = None,
        real_windows: RealWindows = "first",
        window_seed: int = 42,
    ) -> None:
        super().__init__()
        if num_samples < 1 or (val_num_samples is not None and val_num_samples < 1):
            raise ValueError("num_samples and val_num_samples must be at least 1")
        if every_n_validations < 0:
            raise ValueError(f"every_n_validations must be >= 0, got {every_n_validations}")
        if length_rule not in ("free", "exact", "at_most"):
            raise ValueError(f"length_rule must be free, exact or at_most, got {length_rule!r}")
        # the real data's settings live on RealClips only (it checks batch_size and windows)
        self.real_clips = RealClips(
            urls=real_urls,
            windows=real_windows,
            window_seed=window_seed,
            batch_size=batch_size,
            num_workers=num_workers,
        )
        self.num_samples = num_samples
        self.val_num_samples = val_num_samples or num_samples
        self.budget_levels = budget_levels
        self.length_rule = length_rule
        self.grid = grid
        self.sampling = {
            "temperature": temperature,
            "top_k": top_k,
            "top_p": top_p,
            "cfg_scale": cfg_scale,
        }
        self.fvd = fvd
        self.fvd_levels = fvd_levels
        self.fvd_num_samples = fvd_num_samples
        self.fvd_resolution = fvd_resolution
        self.num_log_videos = num_log_videos
        self.every_n_validations = every_n_validations
        self.fps = fps
        self.report_stem = report_stem
        self.seed = seed
        self.i3d_weights = i3d_weights
        self.fvd_extractor = fvd_extractor
        self.window_counts: dict[str, dict[str, int]] = {}
        self.results: dict[str, list[dict[str, Any]]] = {}
        self.histograms: dict[str, dict[int, Tensor]] = {}
        self._validations = 0
        self._warned_frames = False

    # ------------------------------------------------------------------------ helpers
    def _levels(self, pl_module: Any) -> list[int]:
        levels = self.budget_levels
        if levels is None:
            levels = list(range(len(pl_module.budgets)))
        if any(not 0 <= int(level) < len(pl_module.budgets) for level in levels):
            raise ValueError(
                f"budget_levels {levels} out of range for the module's budgets {pl_module.budgets}"
            )
        return [int(level) for level in levels]

    def _resize_for_fvd(self, video: Tensor, frame_prediction: bool) -> Tensor:
        size = self.fvd_resolution or (64 if frame_prediction else None)
        if size is None or video.shape[-1] == size and video.shape[-2] == size:
            return video
        b, c, t, h, w = video.shape
        frames = video.transpose(1, 2).reshape(b * t, c, h, w)
        frames = F.interpolate(frames, size=(size, size), mode="bilinear", antialias=True)
        return frames.view(b, t, c, size, size).transpose(1, 2).clamp(0.0, 1.0)

    def _asked(self, pl_module: Any, level: int, size: int, device: torch.device) -> Tensor:
        asked = pl_module.asked_tokens(torch.full((size,), level, device=device, dtype=torch.long))
        if self.length_rule == "free":
            return asked
        generator = pl_module.generator
        return nearest_reachable_total(
            asked,
            generator.num_blocks,
            generator.tokens_per_block,
            copied_blocks=generator.first_block,
            candidate_lengths=pl_module.candidate_lengths,
            grid=self.grid,
        )

    # ------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, trainer: pl.Trainer, pl_module: Any, split: Split) -> list[dict[str, Any]]:
        """Generate, score and log; returns one result row per budget level (every rank).

        Raises:
            ValueError: When real windows carry labels the class-conditional model lacks.
        """
        device = pl_module.device
        levels = self._levels(pl_module)
        wanted = self.num_samples if split == "test" else self.val_num_samples
        windowed = not self.real_clips.per_rank_share
        # windowed: each rank reads the drawn windows of its shards (together: ``wanted``)
        per_rank = math.inf if windowed else math.ceil(wanted / trainer.world_size)
        frame_prediction = bool(pl_module.frame_prediction)
        generator = pl_module.generator
        max_tokens = generator.num_blocks * generator.tokens_per_block
        fvd = self.fvd
        if fvd and pl_module.tokenizer.num_frames < FVD_FRAMES:
            fvd = False
            if not self._warned_frames:
                rank_zero_warn(
                    f"gFVD SKIPPED: clips of {pl_module.tokenizer.num_frames} frames, I3D needs "
                    f"{FVD_FRAMES}; the token statistics are still computed"
                )
                self._warned_frames = True
        fvd_levels = levels if self.fvd_levels is None else [int(x) for x in self.fvd_levels]
        fvd_per_rank = None if windowed else per_rank
        if self.fvd_num_samples is not None:
            fvd_per_rank = min(per_rank, math.ceil(self.fvd_num_samples / trainer.world_size))
        meters = {
            level: VideoQualityMeter(
                fvd=fvd and level in fvd_levels,
                lpips=False,
                max_samples=fvd_per_rank,
                fvd_extractor=self.fvd_extractor,
                i3d_weights=self.i3d_weights,
            ).to(device)
            for level in levels
        }
        stats = {
            level: {
                "histogram": torch.zeros(max_tokens + 1, dtype=torch.float64, device=device),
                "asked": torch.zeros(2, dtype=torch.float64, device=device),  # sum, count
                "block_lengths": torch.zeros(
                    generator.num_blocks, dtype=torch.float64, device=device
                ),
            }
            for level in levels
        }
        tokenizer = pl_module.tokenizer
        batches = self.real_clips.batches(
            tokenizer.num_frames, tokenizer.image_size, wanted, trainer
        )
        seen = 0
        for batch_index, batch in enumerate(batches):
            if batch.get(REPORT_ONLY_KEY):
                continue  # a batch of skip counts only (a worker without windows)
            limit = None if windowed else per_rank - seen
            real = batch["video"][:limit].to(device).float()
            label = batch["label"][:limit].to(device)
            if real.shape[0] == 0:
                break
            if not frame_prediction:
                bad = (label < 0) | (label >= generator.num_classes)
                if bool(bad.any()):
                    keys = [k for k, b in zip(batch["key"], bad.tolist(), strict=False) if b]
                    raise ValueError(
                        f"real windows {keys[:4]} carry labels {label[bad].tolist()[:4]} outside "
                        f"[0, {generator.num_classes}): give real_urls with the classes the "
                        "generator was trained on"
                    )
            # conditions in full precision, as the annotations (the reference mixed fp16/fp32)
            condition = pl_module.encode_condition(real) if frame_prediction else None
            real_fvd = self._resize_for_fvd(real, frame_prediction)
            for level in levels:
                rng = torch.Generator().manual_seed(
                    self.seed + 7919 * trainer.global_rank + 104729 * batch_index + level
                )
                asked = self._asked(pl_module, level, real.shape[0], device)
                with trainer.precision_plugin.forward_context():  # autocast as in training
                    output = pl_module.sample(
                        label,
                        torch.full_like(label, level),
                        condition_codes=condition,
                        total_tokens=None if self.length_rule == "free" else asked,
                        budget_rule="at_most" if self.length_rule == "at_most" else "exact",
                        grid=self.grid,
                        generator=rng,
                        **self.sampling,
                    )
                    fake = pl_module.decode(output)
                meters[level].update(real_fvd, self._resize_for_fvd(fake, frame_prediction))
                produced = output.total_tokens
                stats[level]["histogram"] += torch.bincount(produced, minlength=max_tokens + 1).to(
                    stats[level]["histogram"]
                )
                stats[level]["asked"] += torch.tensor(
                    [float(asked.sum()), float(asked.numel())], dtype=torch.float64, device=device
                )
                stats[level]["block_lengths"] += output.lengths.double().sum(0)
                if batch_index == 0 and self.num_log_videos > 0 and trainer.is_global_zero:
                    count = self.num_log_videos
                    shown = fake[:count]
                    if frame_prediction:
                        shown = side_by_side(real[:count], shown)
                    pct = round(100 * pl_module.budgets[level])
                    log_video(
                        trainer, f"{split}/samples_b{pct}", shown, trainer.global_step, self.fps
                    )
            seen += real.shape[0]
            if seen >= per_rank:
                break
        if windowed and self.real_clips.counts is not None:
            self.window_counts[split] = self.real_clips.counts.as_dict()

        rows = []
        self.histograms[split] = {}
        for level in levels:
            reduce = trainer.strategy.reduce
            histogram = reduce(stats[level]["histogram"], reduce_op="sum")
            asked_sum, asked_count = reduce(stats[level]["asked"], reduce_op="sum").tolist()
            block_sum = reduce(stats[level]["block_lengths"], reduce_op="sum")
            quality = meters[level].compute()
            rows.append(
                self._row(pl_module, level, histogram, asked_sum, asked_count, block_sum, quality)
            )
            self.histograms[split][level] = histogram.cpu()
        self.results[split] = rows
        for row in rows:
            pct = round(100 * row["budget"])
            for key in ("gfvd", "tokens_asked", "tokens_mean", "tokens_std", "psnr"):
                if row.get(key) is not None and not math.isnan(row[key]):
                    pl_module.log(f"{split}/{key}_b{pct}", float(row[key]), rank_zero_only=True)
        return rows

    @staticmethod
    def _row(
        pl_module: Any,
        level: int,
        histogram: Tensor,
        asked_sum: float,
        asked_count: float,
        block_sum: Tensor,
        quality: dict[str, float],
    ) -> dict[str, Any]:
        histogram = histogram.double().cpu()
        count = float(histogram.sum())
        values = torch.arange(histogram.numel(), dtype=torch.float64)
        mean = float((histogram * values).sum() / count) if count else math.nan
        var = float((histogram * (values - mean) ** 2).sum() / count) if count else math.nan
        present = histogram.nonzero().flatten()
        row: dict[str, Any] = {
            "level": level,
            "budget": float(pl_module.budgets[level]),
            "clips": int(count),
            "tokens_asked": asked_sum / asked_count if asked_count else math.nan,
            "tokens_mean": mean,
            "tokens_std": math.sqrt(var) if count else math.nan,
            "tokens_min": int(present.min()) if present.numel() else None,
            "tokens_max": int(present.max()) if present.numel() else None,
            "block_means": " / ".join(f"{float(v) / count:.1f}" for v in block_sum.cpu())
            if count
            else "",
            "gfvd": quality.get("fvd"),
            "fvd_clips": int(quality.get("num_samples", 0)) if "fvd" in quality else None,
            "fvd_unstable": bool(quality.get("fvd_unstable", 0.0)) if "fvd" in quality else None,
        }
        if pl_module.frame_prediction and "psnr" in quality:
            row["psnr"] = quality["psnr"]
            row["psnr_median"] = quality["psnr_median"]
            row["ssim"] = quality["ssim"]
        return {key: value for key, value in row.items() if value is not None}

    def _active(self, split: Split, trainer: pl.Trainer) -> bool:
        if trainer.sanity_checking:
            return False
        if split == "test":
            return True
        self._validations += 1
        return self.every_n_validations > 0 and self._validations % self.every_n_validations == 0

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._active("val", trainer):
            self.evaluate(trainer, pl_module, "val")

    @override
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._active("test", trainer):
            return
        rows = self.evaluate(trainer, pl_module, "test")
        # trainer.log_dir broadcasts under DDP: every rank must ask for it, not rank 0 alone
        directory = Path(trainer.log_dir or trainer.default_root_dir)
        if trainer.is_global_zero:
            self._write_report(directory, pl_module, rows)

    # ------------------------------------------------------------------------ report
    def _write_report(self, directory: Path, pl_module: Any, rows: list[dict[str, Any]]) -> None:
        generator = pl_module.generator
        max_tokens = generator.num_blocks * generator.tokens_per_block
        mode = "frame prediction" if pl_module.frame_prediction else "class-conditional"
        settings = {k: v for k, v in self.sampling.items() if v is not None}
        frames = pl_module.tokenizer.num_frames
        real = self.real_clips
        if real.windows == "nonoverlapping":
            counts = self.window_counts.get("test", {})
            windows = (
                f"real windows: {counts.get('drawn', self.num_samples)} non-overlapping "
                f"{frames}-frame windows drawn with seed {real.window_seed} from the "
                f"{counts.get('windows', '?')} windows of {counts.get('videos', '?')} videos in "
                f"{real.urls} (the official protocol)"
            )
        else:
            windows = (
                f"real windows: the first {frames} frames of the first {self.num_samples} "
                f"videos of {real.urls} (NOT the official protocol, which draws "
                "non-overlapping windows with a fixed seed: real_windows: nonoverlapping)"
            )
        notes = [
            f"{mode} generation, {generator.parameter_count() / 1e6:.2f}M parameters, "
            f"{generator.num_blocks} blocks x {generator.tokens_per_block} tokens "
            f"(max {max_tokens} per clip); {windows}; one generated clip per real window and "
            "budget level (clips).",
            f"Lengths: {self.length_rule}{' on the candidate grid' if self.grid else ''}; "
            f"sampling overrides {settings or 'none (module defaults)'}.",
            "tokens_asked: the level's budget fraction x K x M"
            + (" (snapped to the nearest reachable total)" if self.length_rule != "free" else "")
            + "; tokens_mean/std/min/max: tokens the samples kept; block_means: mean length of "
            "each block.",
        ]
        kept = [
            f"{row['tokens_mean'] / row['tokens_asked']:.0%}"
            for row in rows
            if row["tokens_asked"] and math.isfinite(row["tokens_mean"])
        ]
        if self.length_rule == "free" and kept:
            notes.append(
                f"With free lengths the samples kept {' / '.join(kept)} of the tokens asked at "
                "the budget levels in turn: only the budget embedding steers lengths (the "
                "model's <EOB> choices decide), so a level far from 100 % is the generator not "
                "following its condition; length_rule: exact (or at_most) imposes the budget."
            )
        if pl_module.frame_prediction:
            notes.append(
                "Frame prediction: block 0 is copied from the condition at full length (it "
                "counts in the tokens); FVD on all frames resized to "
                f"{self.fvd_resolution or 64}x{self.fvd_resolution or 64}; PSNR/SSIM against the "
                "true continuation (mean over clips; psnr_median beside it). " + describe_psnr()
            )
        if any(row.get("fvd_unstable") for row in rows):
            notes.append(
                "gFVD from fewer clips than the 400 I3D feature dimensions is UNSTABLE (rank "
                "deficient covariance): a smoke signal only, not comparable to published numbers."
            )
        if self.fvd and all(row.get("gfvd") is None for row in rows):
            if pl_module.tokenizer.num_frames < FVD_FRAMES:
                notes.append(
                    f"gFVD skipped: {pl_module.tokenizer.num_frames}-frame clips, I3D needs {FVD_FRAMES}."
                )
            else:
                notes.append("gFVD skipped: I3D weights missing (run `make weights`).")
        sections = ["## Produced tokens per clip (histogram)", ""]
        width = max(1, math.ceil((max_tokens + 1) / 16))
        for row in rows:
            histogram = self.histograms["test"][row["level"]]
            sections.append(f"Budget {row['budget']:.2f} (asked {row['tokens_asked']:.1f}):")
            sections.append("")
            sections.append("| tokens | clips |")
            sections.append("|---|---|")
            for start in range(0, max_tokens + 1, width):
                clips = int(histogram[start : start + width].sum())
                if clips:
                    end = min(start + width - 1, max_tokens)
                    sections.append(f"| {start}-{end} | {clips} |")
            sections.append("")
        markdown, _ = write_report(
            directory, self.report_stem, "Generation evaluation (test)", rows, notes, sections
        )
        rank_zero_info(f"GenerationEvaluator: report written to {markdown}")
