"""``VideoEvaluator``: FVD, PSNR, SSIM and LPIPS of a module's validation / test outputs.

The module's ``validation_step`` / ``test_step`` return ``{"real": video, "fake": video}``,
both (B, C, T, H, W) in [0, 1]; this callback feeds them to one
``adaptok.metrics.VideoQualityMeter`` per split, logs ``val/<fvd_name>``, ``val/psnr``,
``val/ssim``, ``val/lpips`` (and ``test/...``) at epoch end, shows a few real-vs-fake clips
in TensorBoard, and after testing writes a Markdown + CSV report into the logger's folder.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from typing_extensions import override

from adaptok.metrics import VideoQualityMeter
from adaptok.metrics.frame_quality import PSNR_CAP_DB, PsnrDefinition, describe_psnr
from callbacks.media import log_video, side_by_side
from callbacks.report import write_report
from callbacks.split_hooks import Split, SplitCallback

__all__ = ["VideoEvaluator"]


class VideoEvaluator(SplitCallback):
    """Evaluate reconstructions or samples against real clips at the end of val / test epochs.

    Metrics accumulate as torchmetrics sums, so they sync across DDP processes and memory
    does not grow with the number of clips. PSNR is by default the official evaluator's (from
    each video's MSE over all its frames, capped at ``psnr_max_db``); SSIM / LPIPS are
    per-frame values averaged per video. Means over videos are logged; the test report has
    the medians beside them and names the PSNR definition.

    Args:
        num_samples: Clips evaluated per split and epoch (over all processes); later batches
            are ignored. Published FVD numbers use thousands of clips; below 400 clips FVD is
            flagged unstable.
        fvd: Compute FVD (clips need at least 16 frames).
        lpips: Compute LPIPS.
        lpips_net: LPIPS backbone, ``"vgg"`` or ``"alex"``.
        fvd_name: Log key of FVD, e.g. ``"rfvd"`` (reconstruction) or ``"gfvd"`` (generation).
        num_log_videos: Real-vs-fake clips shown in TensorBoard per evaluated epoch (0: none).
        log_every_n_epochs: Evaluate validation every n epochs (testing always evaluates).
        fps: Playback speed of the logged clips.
        report_stem: File name (without extension) of the test report.
        i3d_weights: I3D weight file (state dict or TorchScript) instead of the cached one.
        fvd_extractor: Feature network replacing I3D (tests, custom detectors).
        psnr_definition: ``"video_mse"`` (default, the paper's) or ``"frame_mean"``
            (per-frame PSNR averaged; named in the report where used).
        psnr_max_db: PSNR cap in dB for exact reconstructions (None: uncapped).
    """

    def __init__(
        self,
        num_samples: int = 10_000,
        fvd: bool = True,
        lpips: bool = True,
        lpips_net: Literal["vgg", "alex"] = "vgg",
        fvd_name: str = "rfvd",
        num_log_videos: int = 4,
        log_every_n_epochs: int = 1,
        fps: int = 4,
        report_stem: str = "evaluation",
        i3d_weights: str | None = None,
        fvd_extractor: nn.Module | None = None,
        psnr_definition: PsnrDefinition = "video_mse",
        psnr_max_db: float | None = PSNR_CAP_DB,
    ) -> None:
        super().__init__()
        if num_samples < 1 or log_every_n_epochs < 1:
            raise ValueError("num_samples and log_every_n_epochs must be at least 1")
        self.num_samples = num_samples
        self.fvd = fvd
        self.lpips = lpips
        self.lpips_net = lpips_net
        self.fvd_name = fvd_name
        self.num_log_videos = num_log_videos
        self.log_every_n_epochs = log_every_n_epochs
        self.fps = fps
        self.report_stem = report_stem
        self.i3d_weights = i3d_weights
        self.fvd_extractor = fvd_extractor
        self.psnr_definition = psnr_definition
        self.psnr_max_db = psnr_max_db
        self.log_names = {"fvd": fvd_name, "psnr": "psnr", "ssim": "ssim", "lpips": "lpips"}
        self.meters: dict[str, VideoQualityMeter] = {}
        self.results: dict[str, dict[str, float]] = {}
        self._videos_logged: set[str] = set()

    def _meter(self, split: Split, trainer: pl.Trainer) -> VideoQualityMeter:
        """The split's meter, built on first use with a per-process share of ``num_samples``."""
        if split not in self.meters:
            self.meters[split] = VideoQualityMeter(
                fvd=self.fvd,
                lpips=self.lpips,
                lpips_net=self.lpips_net,
                max_samples=math.ceil(self.num_samples / trainer.world_size),
                fvd_extractor=self.fvd_extractor,
                i3d_weights=self.i3d_weights,
                psnr_definition=self.psnr_definition,
                psnr_max_db=self.psnr_max_db,
            )
        return self.meters[split]

    def _active(self, split: Split, trainer: pl.Trainer) -> bool:
        if trainer.sanity_checking:
            return False
        return split == "test" or (trainer.current_epoch + 1) % self.log_every_n_epochs == 0

    @override
    def on_split_start(
        self, split: Split, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        if self._active(split, trainer):
            self._meter(split, trainer).to(pl_module.device).reset()
            self._videos_logged.discard(split)

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
        if not self._active(split, trainer):
            return
        if not isinstance(outputs, dict) or not {"real", "fake"} <= outputs.keys():
            raise TypeError(
                f"VideoEvaluator needs {type(pl_module).__name__}.{split}_step to return "
                f'{{"real": (B, C, T, H, W), "fake": (B, C, T, H, W)}} in [0, 1], got {type(outputs)}'
            )
        real: Tensor = outputs["real"]
        fake: Tensor = outputs["fake"]
        self.meters[split].update(real, fake)
        if split not in self._videos_logged and self.num_log_videos > 0 and trainer.is_global_zero:
            count = self.num_log_videos
            video = side_by_side(real[:count].detach(), fake[:count].detach())
            log_video(
                trainer, f"{split}/real_vs_fake", video, step=trainer.global_step, fps=self.fps
            )
        self._videos_logged.add(split)

    @override
    def on_split_end(
        self, split: Split, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        if not self._active(split, trainer) or split not in self.meters:
            return
        results = self.meters[split].compute()
        self.results[split] = results
        for key, name in self.log_names.items():
            if key in results:
                pl_module.log(f"{split}/{name}", results[key], sync_dist=True)
        if split == "test":
            # trainer.log_dir broadcasts from rank 0: every rank must ask for it
            directory = Path(trainer.log_dir or trainer.default_root_dir)
            if trainer.is_global_zero:
                self._write_report(trainer, directory, results)

    def _write_report(
        self, trainer: pl.Trainer, directory: Path, results: dict[str, float]
    ) -> None:
        row: dict[str, object] = {
            "split": "test",
            "epoch": trainer.current_epoch,
            "clips": int(results["num_samples"]),
        }
        for key, name in self.log_names.items():
            if key in results:
                row[name] = results[key]
            if f"{key}_median" in results:
                row[f"{name}_median"] = results[f"{key}_median"]
        meter = self.meters["test"]
        notes = [
            describe_psnr(meter.psnr_definition, meter.psnr_max_db),
            "SSIM: per frame (Gaussian window 11), averaged per video; mean and median over "
            "videos.",
        ]
        if meter.lpips_model is not None:
            notes.append(
                f"LPIPS v0.1 ({self.lpips_net}): per frame, averaged per video; mean and median "
                "over videos."
            )
        elif self.lpips:
            notes.append("LPIPS skipped: LPIPS weights missing (run `make weights`).")
        if meter.fvd_metric is not None:
            network = type(meter.fvd_metric.extractor).__name__
            notes.append(
                f"FVD: {network} features of the first 16 frames resized to 224x224; "
                "population covariances in float64."
            )
            if results.get("fvd_unstable"):
                dims = meter.fvd_metric.num_features
                notes.append(f"FVD from {row['clips']} clips (< {dims} feature dims) is UNSTABLE.")
        elif self.fvd:
            notes.append("FVD skipped: I3D weights missing (run `make weights`).")
        markdown, _ = write_report(
            directory, self.report_stem, "Video evaluation (test)", [row], notes
        )
        rank_zero_info(f"VideoEvaluator: test report written to {markdown}")
