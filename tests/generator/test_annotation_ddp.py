"""Annotation under two-process DDP on CPU (gloo): each rank its own shards, same windows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from token_helpers import REPO, annotate_config, read_annotations


@pytest.mark.slow
def test_annotation_under_ddp_matches_one_process(
    tmp_path: Path, window_shards: Path, scorer_ckpt: Path, annotated_tokens: Path
) -> None:
    out = tmp_path / "ddp"
    config = annotate_config(
        tmp_path, out, predict_urls=str(window_shards / "train-*.tar"), stride=4, batch_size=2
    )
    args = [
        sys.executable,
        "-m",
        "modules.cli",
        "predict",
        "--config",
        str(config),
        f"--model.init_args.scorer_ckpt={scorer_ckpt}",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    names = sorted(p.name for p in out.glob("*.tar"))
    assert any(n.startswith("train-r0-") for n in names), names
    assert any(n.startswith("train-r1-") for n in names), names
    stored, reference = read_annotations(out), read_annotations(annotated_tokens)
    assert stored.keys() == reference.keys()
    for key, files in stored.items():
        np.testing.assert_array_equal(files["codes.npy"], reference[key]["codes.npy"])
        np.testing.assert_array_equal(files["lengths.npy"], reference[key]["lengths.npy"])
    assert "- windows: 18" in (out / "annotation_summary.md").read_text()
