"""``adaptok fit`` refuses impossible settings, folders and data before (or at) the first step."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from adaptok.data.shards import ShardURLError
from adaptok.data.skips import NoUsableSamplesError
from modules.cli import run_cli
from modules.preflight import PreflightError, check_disk_space, check_writable
from tests.helpers import tiny_args, working_directory


def _fit(workspace: Path, *overrides: str) -> None:
    with working_directory(workspace):
        run_cli(["fit", *tiny_args("demo/tokenizer.yaml"), *overrides])


def _checkpoints(workspace: Path) -> list[Path]:
    return sorted((workspace / "runs").rglob("*.ckpt")) if (workspace / "runs").exists() else []


@pytest.fixture
def fresh_workspace(workspace: Path, tmp_path: Path) -> Path:
    """A private copy of the session workspace's shards (no runs folder)."""
    target = tmp_path / "ws"
    shutil.copytree(workspace / "data", target / "data")
    return target


def test_value_range_the_model_cannot_take_fails_before_training(fresh_workspace: Path) -> None:
    with pytest.raises(
        PreflightError, match=r"value_range=\[-1.0, 1.0\].*TokenizerModule.*\[0.0, 1.0\]"
    ):
        _fit(fresh_workspace, "--data.init_args.value_range=[-1, 1]")
    assert _checkpoints(fresh_workspace) == []


def test_clip_size_that_does_not_fit_the_tokenizer_names_both(fresh_workspace: Path) -> None:
    with pytest.raises(PreflightError, match="num_frames=6 contradicts the model's num_frames=8"):
        _fit(fresh_workspace, "--data.init_args.num_frames=6")
    with pytest.raises(PreflightError, match="resolution=48 contradicts the model's image_size=32"):
        _fit(fresh_workspace, "--data.init_args.resolution=48")


def test_unwritable_output_folder_fails_before_training(fresh_workspace: Path) -> None:
    blocker = fresh_workspace / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(
        PreflightError, match=r"trainer.default_root_dir=.*a_file/run.*not a writable"
    ):
        _fit(fresh_workspace, f"--trainer.default_root_dir={blocker / 'run'}")
    assert _checkpoints(fresh_workspace) == []
    with pytest.raises(PreflightError, match="logs.*not a writable"):
        check_writable(blocker / "logs", "trainer.logger.save_dir")


def test_too_little_disk_is_refused_with_both_figures(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    check_disk_space(tmp_path, 1, "ModelCheckpoint dirpath")
    with pytest.raises(PreflightError, match=r"MB free, the configured checkpoints need about"):
        check_disk_space(tmp_path, free + 10**12, "ModelCheckpoint dirpath")


def test_training_set_of_too_short_clips_ends_the_run_with_the_reason(tmp_path: Path) -> None:
    """Field case 6: every clip is shorter than num_frames; the demo config used to hang."""
    from adaptok.data.cli import main as shards

    out = tmp_path / "short"
    args = ["synthetic", "--out", str(out), "--num-clips", "4", "--num-frames", "4"]
    assert shards([*args, "--size", "32", "--val-fraction", "0", "--quiet"]) == 0
    with pytest.raises(NoUsableSamplesError, match=r"too short: 100.*train-000000.tar"):
        _fit(
            tmp_path,
            f"--data.init_args.train_urls={out / 'train-*.tar'}",
            "--data.init_args.val_urls=null",
        )


def test_null_or_empty_shard_urls_fail_in_one_line_before_training(fresh_workspace: Path) -> None:
    """``train_urls:`` left empty in a YAML, or ``''`` on the command line."""
    with pytest.raises(PreflightError, match=r"data.init_args.train_urls is None: `adaptok fit`"):
        _fit(fresh_workspace, "--data.init_args.train_urls=null")
    with pytest.raises(PreflightError, match=r"data.init_args.train_urls is '': `adaptok fit`"):
        _fit(fresh_workspace, "--data.init_args.train_urls=")
    with pytest.raises(ShardURLError, match="val_urls is '  ': an empty shard URL"):
        _fit(fresh_workspace, "--data.init_args.val_urls=  ")
    assert _checkpoints(fresh_workspace) == []
