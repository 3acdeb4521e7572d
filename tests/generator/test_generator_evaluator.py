"""GenerationEvaluator on real runs: frame prediction in-process, class-conditional under DDP."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch import nn

from adaptok.data.skips import REPORT_ONLY_KEY
from adaptok.nn.generator import ARGenerator
from callbacks import GenerationEvaluator
from datamodules.token_shards import TokenShardsDataModule
from modules.annotator import state_sha256
from modules.generator import GeneratorModule

REPO = Path(__file__).resolve().parents[2]


class PooledColour(nn.Module):
    """Tiny stand-in for I3D: (B, 3, 16, 224, 224) -> (B, 12) pooled colours."""

    num_features = 12

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool3d(x, (4, 1, 1)).flatten(1)


def _videos(out: Path, clips: int, shard_samples: int) -> None:
    from adaptok.data.cli import main as shards

    args = ["synthetic", "--out", str(out), "--num-clips", str(clips), "--seed", "0"]
    args += ["--size", "32", "--num-frames", "16", "--val-fraction", "0.5"]
    assert shards([*args, "--shard-samples", str(shard_samples), "--quiet"]) in (0, None)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_frame_prediction_evaluation_copies_condition_and_hits_exact_budgets(
    tmp_path: Path, tiny_tokenizer_spec: dict, annotation_shard_writer
) -> None:
    _videos(tmp_path / "videos", clips=8, shard_samples=8)
    generator = partial(  # K, M and the codebook are the tokenizer's
        ARGenerator,
        num_classes=0,
        num_budgets=2,
        prefix_blocks=2,
        width=32,
        depth=1,
        heads=2,
        mlp_hidden=64,
    )
    module = GeneratorModule(
        generator,
        tokenizer_spec=tiny_tokenizer_spec,
        budgets=[0.25, 1.0],
        candidate_lengths=[2, 4, 6, 8],
    )
    # annotated with the module's tokenizer: the start-up hash check passes
    rng = np.random.default_rng(0)
    n = 8
    lengths = np.stack([np.full((n, 4), 2), np.full((n, 4), 8)], 1)
    annotation_shard_writer(
        tmp_path / "tokens/test-000000.tar",
        rng.integers(0, 64, (n, 4, 8)),
        lengths,
        labels=[0] * n,
        budgets=[0.25, 1.0],
        cond=rng.integers(0, 64, (n, 4, 8)),
        tokenizer_sha256=state_sha256(module.tokenizer),
    )
    evaluator = GenerationEvaluator(
        real_urls=str(tmp_path / "videos/*.tar"),
        num_samples=6,
        length_rule="exact",
        batch_size=4,
        fvd_extractor=PooledColour(),
        fvd_levels=[1],
        fvd_num_samples=4,
        num_log_videos=2,
    )
    data = TokenShardsDataModule(
        test_urls=str(tmp_path / "tokens/test-*.tar"),
        condition="frame_prediction",
        batch_size=4,
        num_workers=0,
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        callbacks=[evaluator],
        default_root_dir=tmp_path,
        logger=pl.loggers.TensorBoardLogger(tmp_path, name="eval"),
        enable_progress_bar=False,
    )
    trainer.test(module, datamodule=data)
    rows = _read_csv(next((tmp_path / "eval").rglob("generation_report.csv")))
    assert [int(r["clips"]) for r in rows] == [6, 6]
    # exact budgets: every clip on the level's total (block 0 is copied at full length)
    assert [float(r["tokens_asked"]) for r in rows] == [float(r["tokens_mean"]) for r in rows]
    assert [float(r["tokens_std"]) for r in rows] == [0.0, 0.0]
    assert float(rows[0]["tokens_asked"]) == 8 + 2 * 3  # 0.25 x 32 snapped: block 0 keeps 8
    assert float(rows[1]["tokens_asked"]) == 32
    assert all(r["block_means"].startswith("8.0 /") for r in rows)
    # gFVD only at level 1, on its first 4 clips; the token statistics use all 6
    assert rows[0]["gfvd"] == "" and rows[0]["fvd_clips"] == ""
    assert float(rows[1]["gfvd"]) >= 0 and rows[1]["fvd_unstable"] == "True"
    assert int(rows[1]["fvd_clips"]) == 4
    assert all(0 < float(r["psnr"]) < 100 for r in rows)
    report = next((tmp_path / "eval").rglob("generation_report.md")).read_text()
    assert "UNSTABLE" in report and "block 0 is copied" in report


def test_condition_codes_come_from_the_first_frames_only(tiny_tokenizer_spec: dict) -> None:
    generator = partial(
        ARGenerator,
        num_classes=0,
        prefix_blocks=2,
        width=32,
        depth=1,
        heads=2,
        mlp_hidden=64,
    )
    module = GeneratorModule(generator, tokenizer_spec=tiny_tokenizer_spec, condition_frames=5)
    video = torch.rand(2, 3, 16, 32, 32)
    changed = video.clone()
    changed[:, :, 5:] = torch.rand(2, 3, 11, 32, 32)  # frames after the condition differ
    assert torch.equal(module.encode_condition(video), module.encode_condition(changed))
    held = video.clone()
    held[:, :, 5:] = video[:, :, 4:5]
    expected = module.tokenizer.encode(held).codes.view(2, 4, 8)
    assert torch.equal(module.encode_condition(video), expected)


@pytest.mark.parametrize(
    ("windows", "report_only"),
    [
        # an empty batch of whole windows: its shape alone would pass for windows
        ("nonoverlapping", {"video": torch.zeros(0, 3, 16, 32, 32), "key": []}),
        ("first", {}),  # a clip loader's report-only batch has no video at all
    ],
)
def test_report_only_batches_are_passed_over_by_their_marker(
    tiny_tokenizer_spec: dict,
    monkeypatch: pytest.MonkeyPatch,
    windows: str,
    report_only: dict,
) -> None:
    """The evaluator tells report-only batches by ``REPORT_ONLY_KEY``, not by their shape."""
    generator = partial(
        ARGenerator,
        num_classes=2,
        num_budgets=2,
        prefix_blocks=2,
        width=32,
        depth=1,
        heads=2,
        mlp_hidden=64,
    )
    module = GeneratorModule(
        generator,
        tokenizer_spec=tiny_tokenizer_spec,
        budgets=[0.25, 1.0],
        candidate_lengths=[2, 4, 6, 8],
    )
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)  # no loop to log into
    evaluator = GenerationEvaluator(
        real_urls="unused", real_windows=windows, num_samples=2, fvd=False, num_log_videos=0
    )
    real = {
        "video": torch.rand(2, 3, 16, 32, 32),
        "label": torch.tensor([0, 1]),
        "key": ["a", "b"],
    }

    def batches(*args: object, **kwargs: object) -> Iterator[dict]:
        yield {**report_only, REPORT_ONLY_KEY: True}
        yield real

    monkeypatch.setattr(evaluator.real_clips, "batches", batches)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    rows = evaluator.evaluate(trainer, module, "test")
    assert [row["clips"] for row in rows] == [2, 2]  # the real batch after it, every level


@pytest.mark.slow
def test_token_statistics_are_summed_over_ddp_ranks(
    tmp_path: Path, tiny_tokenizer_ckpt: tuple[Path, str], annotation_shard_writer
) -> None:
    """2 gloo ranks, 8 real windows in 2 shards: the report counts all 8, not one rank's 4."""
    _videos(tmp_path / "data/demo/synthetic", clips=8, shard_samples=4)
    rng = np.random.default_rng(0)
    for shard in range(2):
        annotation_shard_writer(
            tmp_path / f"data/demo/tokens/train-{shard:06d}.tar",
            rng.integers(0, 64, (4, 4, 8)),
            np.full((4, 4, 4), 4),
            labels=[0, 1, 2, 3],
            budgets=[0.25, 0.5, 0.75, 1.0],
            tokenizer_sha256=tiny_tokenizer_ckpt[1],
        )
    from modules.cli import run_cli
    from tests.helpers import tiny_args, working_directory, write_overlay

    with working_directory(tmp_path):
        run_cli(
            [
                "fit",
                *tiny_args("demo/generator.yaml"),
                f"--model.init_args.tokenizer_ckpt={tiny_tokenizer_ckpt[0]}",
                "--trainer.max_steps=2",
                "--trainer.limit_val_batches=0",
                "--data.init_args.epoch_length=8",
            ]
        )
    evaluator = {"num_samples": 8, "budget_levels": [0, 3]}
    callbacks = [{"class_path": "callbacks.GenerationEvaluator", "init_args": evaluator}]
    own = write_overlay(tmp_path / "eval.yaml", {"trainer": {"callbacks": callbacks}})
    args = [sys.executable, "-m", "modules.cli", "test", *tiny_args("demo/eval_gen.yaml"), *own]
    args += ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    (tmp_path / "stderr.txt").write_text(result.stderr)
    assert result.returncode == 0, result.stderr[-4000:]
    rows = _read_csv(next((tmp_path / "runs/demo/eval_gen").rglob("generation_report.csv")))
    assert [int(r["clips"]) for r in rows] == [8, 8]
