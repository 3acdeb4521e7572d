"""The paper-scale generator configs (UCF-101 class-conditional, K600 frame prediction) run.

Each shipped ``generator.yaml`` trains 2 steps and its ``eval_gen.yaml`` tests the
checkpoint, on CPU in bf16-mixed, with the networks shrunk to the tiny tokenizer of the
fixtures and the data pointed at shards made here; everything else is the shipped YAML.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml

from modules.cli import run_cli
from tests.conftest import working_directory

REPO = Path(__file__).resolve().parents[2]
ON_CPU = {"accelerator": "cpu", "devices": 1, "strategy": "auto", "precision": "bf16-mixed"}


def _shrink(config: Path, out: Path, tokenizer_spec: dict, videos: str, tokens: str) -> Path:
    content = yaml.safe_load(config.read_text())
    trainer = content["trainer"]
    trainer.update(ON_CPU, enable_progress_bar=False)
    if "max_steps" in trainer:
        trainer.update(max_steps=2, val_check_interval=2, limit_val_batches=1)
    else:
        trainer["limit_test_batches"] = 1
    for callback in trainer["callbacks"]:
        if callback["class_path"].endswith("GenerationEvaluator"):
            callback["init_args"].update(
                real_urls=videos,
                num_samples=4,
                val_num_samples=4,
                fvd=False,
                every_n_validations=1,
                batch_size=2,
                num_workers=0,
            )
    model = content.get("model")
    if model is not None:
        args = model["init_args"]
        args.update(tokenizer_spec=tokenizer_spec, candidate_lengths=[2, 4, 6, 8], total_steps=2)
        args["warmup_steps"] = 1
        args["generator"]["init_args"].update(
            codebook_size=64, tokens_per_block=8, width=32, depth=1, heads=2, mlp_hidden=64
        )
        if args["generator"]["init_args"].get("num_classes"):
            args["generator"]["init_args"]["num_classes"] = 4
    data = content["data"]["init_args"]
    for split in ("train_urls", "val_urls", "test_urls"):
        if split in data:
            data[split] = tokens
    data.update(batch_size=2, num_workers=0)
    if data.get("num_classes"):
        data["num_classes"] = 4
    if "epoch_length" in data:
        data["epoch_length"] = 4
    out.write_text(yaml.safe_dump(content))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["ucf101", "k600"])
def test_paper_generator_configs_fit_and_evaluate(
    dataset: str, tmp_path: Path, tiny_tokenizer_spec: dict, annotation_shard_writer
) -> None:
    from adaptok.data.cli import main as shards

    args = ["synthetic", "--out", str(tmp_path / "videos"), "--num-clips", "4", "--seed", "1"]
    args += ["--size", "32", "--num-frames", "16", "--val-fraction", "0", "--quiet"]
    assert shards(args) in (0, None)
    rng = np.random.default_rng(0)
    annotation_shard_writer(
        tmp_path / "tokens/shard-000000.tar",
        rng.integers(0, 64, (6, 4, 8)),
        rng.integers(1, 9, (6, 4, 4)),
        labels=[0, 1, 2, 3, 0, 1],
        budgets=[0.25, 0.5, 0.75, 1.0],
        cond=rng.integers(0, 64, (6, 4, 8)) if dataset == "k600" else None,
    )
    videos, tokens = str(tmp_path / "videos/*.tar"), str(tmp_path / "tokens/*.tar")
    configs = REPO / "experiments" / dataset
    fit = _shrink(
        configs / "generator.yaml", tmp_path / "fit.yaml", tiny_tokenizer_spec, videos, tokens
    )
    test = _shrink(
        configs / "eval_gen.yaml", tmp_path / "test.yaml", tiny_tokenizer_spec, videos, tokens
    )
    with working_directory(tmp_path):
        run_cli(["fit", "--config", str(fit)])
        assert (tmp_path / f"runs/{dataset}/generator/checkpoints/last.ckpt").is_file()
        run_cli(["test", "--config", str(test)])
    reports = sorted((tmp_path / f"runs/{dataset}/eval_gen").rglob("generation_report*.csv"))
    assert len(reports) == (2 if dataset == "ucf101" else 1)  # UCF: train and test-split real sets
    for report in reports:
        with report.open() as handle:
            rows = list(csv.DictReader(handle))
        assert rows and all(int(r["clips"]) == 4 for r in rows)
        if dataset == "k600":  # block 0 copied at full length
            assert all(r["block_means"].startswith("8.0 /") for r in rows)
