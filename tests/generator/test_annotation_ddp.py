"""Real processes: annotation under two-process DDP (gloo), and a killed run that is resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from token_helpers import REPO, annotate_args, read_annotations


@pytest.mark.slow
def test_annotation_under_ddp_matches_one_process(
    tmp_path: Path, window_shards: Path, scorer_ckpt: Path, annotated_tokens: Path
) -> None:
    out = tmp_path / "ddp"
    config = annotate_args(
        tmp_path,
        out,
        predict_urls=str(window_shards / "train-*.tar"),
        stride=4,
        batch_size=2,
        num_workers=1,
    )
    args = [
        sys.executable,
        "-m",
        "modules.cli",
        "predict",
        *config,
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


@pytest.mark.slow
def test_killed_annotation_process_resumes_without_loss_or_duplicates(
    tmp_path: Path, window_shards: Path, scorer_ckpt: Path, annotated_tokens: Path
) -> None:
    """SIGKILL a real ``adaptok predict`` once it has finished a shard, then run it again."""
    out = tmp_path / "killed"
    config = annotate_args(
        tmp_path, out, predict_urls=str(window_shards / "train-*.tar"), stride=1, batch_size=1
    )
    args = [
        sys.executable,
        "-m",
        "modules.cli",
        "predict",
        *config,
        f"--model.init_args.scorer_ckpt={scorer_ckpt}",
        "--data.init_args.num_workers=0",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300

    def mid_second_shard() -> bool:  # a finished shard is renamed at once; the next
        return bool(list(out.glob("train-*.tar")) and list(out.glob(".*.tmp")))  # opens later

    while not mid_second_shard() and time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    first = read_annotations(out)
    assert 0 < len(first) < 6 * 9, "kill the run after its first shard, before its end"
    assert list(out.glob(".*.tmp")), "a killed run leaves its unfinished shard behind"
    result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    assert not list(out.glob(".*.tmp"))
    stored = read_annotations(out)  # asserts that no window is stored twice
    reference = read_annotations(annotated_tokens)
    sources = {key.rsplit("_w", 1)[0] for key in reference}
    assert set(stored) == {f"{s}_w{start:05d}" for s in sources for start in range(9)}
    for key, files in reference.items():  # windows at starts 0, 4, 8 are in both runs
        np.testing.assert_array_equal(stored[key]["codes.npy"], files["codes.npy"])
        np.testing.assert_array_equal(stored[key]["lengths.npy"], files["lengths.npy"])
