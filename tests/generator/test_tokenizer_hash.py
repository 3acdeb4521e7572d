"""The generator refuses token shards annotated with another tokenizer (fit and test start)."""

from __future__ import annotations

import warnings
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest

from adaptok.nn.generator import ARGenerator
from datamodules.token_shards import TokenShardsDataModule
from modules.annotator import state_sha256
from modules.generator import GeneratorModule
from modules.loading import (
    CheckpointError,
    TokenizerMismatchError,
    annotation_tokenizer_sha256,
    check_tokenizer_matches_shards,
)


def _module(tokenizer_ckpt: Path) -> GeneratorModule:
    generator = partial(  # K, M and the codebook are the tokenizer's
        ARGenerator,
        num_classes=4,
        num_budgets=2,
        width=16,
        depth=1,
        heads=2,
        mlp_hidden=32,
    )
    return GeneratorModule(generator, tokenizer_ckpt=str(tokenizer_ckpt), budgets=[0.25, 1.0])


def _shards(folder: Path, writer, split: str, sha256: str | None) -> None:
    rng = np.random.default_rng(0)
    n = 4
    writer(
        folder / f"{split}-000000.tar",
        rng.integers(0, 64, (n, 4, 8)),
        np.stack([np.full((n, 4), 2), np.full((n, 4), 8)], 1),
        labels=list(range(n)),
        budgets=[0.25, 1.0],
        tokenizer_sha256=sha256,
    )


def _trainer(tmp_path: Path) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=1,
        limit_val_batches=0,
        limit_test_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )


def test_the_hash_recorded_by_a_shard_is_read(tmp_path: Path, annotation_shard_writer) -> None:
    _shards(tmp_path, annotation_shard_writer, "train", "ab" * 32)
    _shards(tmp_path / "none", annotation_shard_writer, "train", None)
    assert annotation_tokenizer_sha256(tmp_path / "train-000000.tar") == "ab" * 32
    assert annotation_tokenizer_sha256(tmp_path / "none/train-000000.tar") is None
    assert annotation_tokenizer_sha256("pipe:cat remote.tar") is None
    recorded = {"a.tar": "ab" * 32, "b.tar": None}
    assert check_tokenizer_matches_shards("ab" * 32, recorded, "here") == ["b.tar"]


@pytest.mark.parametrize("stage", ["fit", "test"])
def test_a_tokenizer_retrained_after_annotation_stops_the_run_in_one_line(
    stage: str, tmp_path: Path, tiny_tokenizer_ckpt: tuple[Path, str], annotation_shard_writer
) -> None:
    ckpt, right = tiny_tokenizer_ckpt
    stale = "0f" * 32  # the hash of the tokenizer the shards were annotated with
    split = "train" if stage == "fit" else "test"
    _shards(tmp_path / "tokens", annotation_shard_writer, split, stale)
    data = TokenShardsDataModule(
        **{f"{split}_urls": str(tmp_path / "tokens/*.tar")}, batch_size=2, num_workers=0
    )
    module = _module(ckpt)
    run = _trainer(tmp_path).fit if stage == "fit" else _trainer(tmp_path).test
    with pytest.raises(TokenizerMismatchError) as caught:
        run(module, datamodule=data)
    message = str(caught.value)
    assert isinstance(caught.value, CheckpointError)  # `adaptok` prints it in one line
    assert "\n" not in message
    assert stale in message and right in message and str(ckpt) in message
    assert "re-annotate" in message and "tokenizer_ckpt" in message


def test_shards_of_the_same_tokenizer_pass_and_unrecorded_ones_warn(
    tmp_path: Path, tiny_tokenizer_ckpt: tuple[Path, str], annotation_shard_writer
) -> None:
    ckpt, right = tiny_tokenizer_ckpt
    module = _module(ckpt)
    assert state_sha256(module.tokenizer) == right
    _shards(tmp_path / "tokens", annotation_shard_writer, "train", right)
    data = TokenShardsDataModule(
        train_urls=str(tmp_path / "tokens/*.tar"), batch_size=2, num_workers=0
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*tokenizer hash.*")
        _trainer(tmp_path).fit(module, datamodule=data)
    _shards(tmp_path / "old", annotation_shard_writer, "test", None)
    old = TokenShardsDataModule(test_urls=str(tmp_path / "old/*.tar"), batch_size=2, num_workers=0)
    with pytest.warns(UserWarning, match="record no tokenizer hash"):
        _trainer(tmp_path).test(_module(ckpt), datamodule=old)
