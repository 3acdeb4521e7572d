"""Fixtures of the generator tests.

Shared by the annotation/datamodule tests (G-anno) and the generator tests (G-model): add
fixtures, do not rewrite the existing ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from token_helpers import annotate_config

# ---------------------------------------------------------------------------- G-anno fixtures


@pytest.fixture(scope="session")
def window_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic video shards of 16-frame, 32 px clips (several 8-frame windows each)."""
    from adaptok.data.cli import main as shards

    out = tmp_path_factory.mktemp("windows") / "videos"
    args = ["synthetic", "--out", str(out), "--num-clips", "6", "--seed", "3", "--size", "32"]
    code = shards(
        [*args, "--num-frames", "16", "--val-fraction", "0", "--shard-samples", "2", "--quiet"]
    )
    assert code in (0, None)
    return out


@pytest.fixture(scope="session")
def annotated_tokens(
    tmp_path_factory: pytest.TempPathFactory, window_shards: Path, scorer_ckpt: Path
) -> Path:
    """Token shards written by ``adaptok predict`` on the shipped demo annotate.yaml (tiny)."""
    from modules.cli import run_cli

    root = tmp_path_factory.mktemp("tokens")
    out = root / "tokens"
    config = annotate_config(
        root,
        out,
        predict_urls=str(window_shards / "train-*.tar"),
        stride=4,
        batch_size=8,
        num_workers=0,
    )
    run_cli(["predict", "--config", str(config), f"--model.init_args.scorer_ckpt={scorer_ckpt}"])
    assert sorted(out.glob("train-*.tar")), sorted(out.iterdir())
    return out
