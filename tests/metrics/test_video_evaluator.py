"""VideoEvaluator in a real Trainer run; media and report helpers."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import lightning.pytorch as pl
import matplotlib
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from adaptok.metrics.lpips import LPIPS
from callbacks import VideoEvaluator
from callbacks.media import encode_gif, log_figure, log_video, side_by_side
from callbacks.report import write_report

matplotlib.use("Agg")


class PooledColour(nn.Module):
    """Tiny stand-in for I3D: (B, 3, 16, 224, 224) -> (B, 12) pooled colours."""

    num_features = 12

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool3d(x, (4, 1, 1)).flatten(1)


class NoisyCopy(pl.LightningModule):
    """'Reconstructs' a clip as the clip plus learnable-scale noise; steps return real/fake."""

    def __init__(self) -> None:
        super().__init__()
        self.noise = nn.Parameter(torch.tensor(0.1))

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.noise.square()

    def _reconstruct(self, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        real = batch[0]
        noise = torch.randn(real.shape, generator=torch.Generator().manual_seed(0))
        return {"real": real, "fake": (real + self.noise * noise).clamp(0, 1)}

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._reconstruct(batch)

    def test_step(self, batch: list[torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._reconstruct(batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader() -> DataLoader:
    videos = torch.rand(8, 3, 16, 32, 32, generator=torch.Generator().manual_seed(0))
    return DataLoader(TensorDataset(videos), batch_size=4)


def test_trainer_run_logs_metrics_videos_and_report(tmp_path: Path, lpips_alex: LPIPS) -> None:
    evaluator = VideoEvaluator(
        num_samples=6,
        lpips_net="alex",
        fvd_name="rfvd",
        num_log_videos=2,
        fvd_extractor=PooledColour(),
    )
    logger = TensorBoardLogger(tmp_path, name="run")
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=2,
        num_sanity_val_steps=1,
        log_every_n_steps=1,
        logger=logger,
        callbacks=[evaluator],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    module = NoisyCopy()
    with pytest.warns(UserWarning, match="unstable"):  # 6 clips < 12 feature dimensions
        trainer.fit(module, train_dataloaders=_loader(), val_dataloaders=_loader())
    for key in ("val/rfvd", "val/psnr", "val/ssim", "val/lpips"):
        assert torch.isfinite(trainer.callback_metrics[key]), key
    assert evaluator.results["val"]["num_samples"] == 6  # capped; sanity batches ignored

    with pytest.warns(UserWarning, match="unstable"):
        trainer.test(module, dataloaders=_loader(), verbose=False)
    assert "test/rfvd" in trainer.callback_metrics
    report = Path(logger.log_dir) / "evaluation.md"
    text = report.read_text()
    header = "| split | epoch | clips | rfvd | psnr | psnr_median | ssim | ssim_median | lpips |"
    assert header in text
    assert "PSNR: from each video's MSE over all its frames" in text  # the definition is named
    assert "UNSTABLE" in text
    with (Path(logger.log_dir) / "evaluation.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))
    assert float(row["psnr"]) == pytest.approx(evaluator.results["test"]["psnr"])
    assert float(row["psnr_median"]) == pytest.approx(evaluator.results["test"]["psnr_median"])

    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert {"val/real_vs_fake", "test/real_vs_fake"} <= set(events.Tags()["images"])
    assert {"val/rfvd", "val/psnr", "val/ssim", "val/lpips"} <= set(events.Tags()["scalars"])


def test_step_output_contract_is_enforced(tmp_path: Path) -> None:
    class Silent(NoisyCopy):
        def test_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
            return None

    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        callbacks=[VideoEvaluator(fvd_extractor=PooledColour(), lpips=False)],
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    with pytest.raises(TypeError, match=r'"real": \(B, C, T, H, W\)'):
        trainer.test(Silent(), dataloaders=_loader(), verbose=False)


def test_side_by_side_and_gif() -> None:
    real = torch.linspace(0, 1, 5).view(1, 1, 5, 1, 1).expand(2, 3, 5, 8, 10)  # frames differ
    fake = 1 - real
    video = side_by_side(real, fake)
    assert video.shape == (2, 3, 5, 8, 22)
    gif, height, width = encode_gif(video, fps=4)
    image = Image.open(io.BytesIO(gif))
    assert (image.n_frames, image.size, height, width) == (5, (22, 16), 16, 22)


def test_media_without_tensorboard_is_a_no_op(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    logger = CSVLogger(tmp_path)
    log_video(logger, "val/x", torch.zeros(1, 3, 2, 4, 4), step=0)
    figure = plt.figure()
    log_figure(logger, "val/plot", figure, step=0)
    assert not plt.fignum_exists(figure.number)
    assert not any(tmp_path.rglob("events.out.tfevents*"))


def test_write_report(tmp_path: Path) -> None:
    rows = [{"budget": 512, "rfvd": 60.04, "psnr": 24.0612}, {"budget": 1024, "rfvd": 1234.5678}]
    markdown, table = write_report(tmp_path / "out", "alloc", "Budgets", rows, notes=["n = 2"])
    assert markdown.read_text().splitlines() == [
        "# Budgets",
        "",
        "| budget | rfvd | psnr |",
        "|---|---|---|",
        "| 512 | 60.04 | 24.06 |",
        "| 1024 | 1234.6 |  |",
        "",
        "- n = 2",
    ]
    with table.open() as handle:
        assert list(csv.DictReader(handle))[1] == {
            "budget": "1024",
            "rfvd": "1234.5678",
            "psnr": "",
        }
