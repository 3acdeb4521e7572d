"""Dataset layouts, the resumable shard writer, the CLI and shard verification."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from adaptok.data.cli import main
from adaptok.data.layouts import folder_layout, kinetics_layout, ucf101_layout
from adaptok.data.synthetic import synthetic_tasks
from adaptok.data.video_io import decode_video
from adaptok.data.writer import (
    MANIFEST_NAME,
    ClipTask,
    RawClip,
    ShardOptions,
    sanitize_key,
    write_shards,
)


def read_shards(folder: Path) -> dict[str, list[tuple[str, dict[str, bytes]]]]:
    """Shard name -> [(key, {suffix: bytes})] in stored order."""
    shards = {}
    for path in sorted(folder.glob("*.tar")):
        samples: dict[str, dict[str, bytes]] = {}
        with tarfile.open(path) as archive:
            for member in archive.getmembers():
                key, suffix = member.name.split(".", 1)
                samples.setdefault(key, {})[suffix] = archive.extractfile(member).read()
        shards[path.name] = list(samples.items())
    return shards


def keys_by_shard(folder: Path) -> dict[str, list[str]]:
    return {name: [key for key, _ in samples] for name, samples in read_shards(folder).items()}


# ------------------------------------------------------------------------------------- layouts
def test_ucf101_layout(ucf101_root: tuple[Path, Path], ucf101_classes: tuple[str, ...]) -> None:
    root, splits = ucf101_root
    layout = ucf101_layout(root, splits, split=1)
    assert layout.class_names == list(ucf101_classes)
    by_split = {s: [e for e in layout.entries if e.split == s] for s in ("train", "test")}
    assert len(by_split["train"]) == 6 and len(by_split["test"]) == 3
    assert {(e.label, e.class_name) for e in layout.entries} == set(enumerate(ucf101_classes))
    handstand = [e for e in layout.entries if e.label == 2]
    assert all(e.path.is_file() and e.path.parent.name == "HandstandPushups" for e in handstand)
    assert layout.skipped == [
        ("Basketball/v_Basketball_g09_c01.avi", "listed in trainlist01.txt but missing")
    ]
    with pytest.raises(FileNotFoundError, match="trainlist02"):
        ucf101_layout(root, splits, split=2)


def test_kinetics_layout(kinetics_root: tuple[Path, Path]) -> None:
    root, csv_path = kinetics_root
    layout = kinetics_layout(root, csv_path)
    assert layout.class_names == ["abseiling", "bowling", "zumba"]
    found = {e.path.name: (e.label, e.split) for e in layout.entries}
    assert found == {
        "aaaaaaaaaaa_000010_000020.mp4": (0, "train"),
        "bbbbbbbbbbb_000000_000010.mp4": (0, "train"),
        "ccccccccccc_000005_000015.mp4": (2, "train"),
        "ddddddddddd_000030_000040.mp4": (2, "val"),
        "eeeeeeeeeee_000001_000011.mp4": (1, "test"),
    }
    assert layout.skipped == [("missingclip_000000_000010.mp4", "listed in the CSV but missing")]


def test_folder_layout(tmp_path: Path, make_video: Callable[..., Path]) -> None:
    make_video(tmp_path / "cats" / "a.mp4", seed=1, frames=4)
    make_video(tmp_path / "val" / "dogs" / "b.avi", seed=2, frames=4)
    (tmp_path / "cats" / "notes.txt").write_text("not a video")
    layout = folder_layout(tmp_path)
    assert layout.class_names == ["cats", "dogs"]
    assert [(e.path.name, e.label, e.split) for e in layout.entries] == [
        ("a.mp4", 0, "train"),
        ("b.avi", 1, "val"),
    ]
    assert layout.skipped == [
        (str(tmp_path / "cats" / "notes.txt"), "not a video file (by suffix)")
    ]


# -------------------------------------------------------------------------------------- writer
def test_ucf101_cli_writes_labelled_resized_shards(
    ucf101_root: tuple[Path, Path],
    ucf101_classes: tuple[str, ...],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    root, splits = ucf101_root
    out = tmp_path / "ucf"
    args = ["ucf101", str(root), "--splits", str(splits), "--split", "1", "--out", str(out)]
    assert (
        main([*args, "--size", "32", "--frame-stride", "2", "--shard-samples", "4", "--quiet"]) == 0
    )
    report = capsys.readouterr().out
    assert "v_Basketball_g09_c01.avi: listed in trainlist01.txt but missing" in report
    shards = read_shards(out)
    assert sorted(shards) == ["test-000000.tar", "train-000000.tar", "train-000001.tar"]
    samples = dict(pair for pairs in shards.values() for pair in pairs)
    assert len(samples) == 9
    meta = json.loads(samples["v_HandstandPushups_g02_c01"]["json"])
    assert meta["label"] == 2 and meta["class_name"] == "HandstandPushups"
    assert meta["source"].endswith("v_HandstandPushups_g02_c01.avi")
    assert (meta["frames"], meta["height"], meta["width"]) == (6, 32, 44)
    assert meta["fps"] == pytest.approx(12.5) and meta["source_frames"] == 12
    video = decode_video(samples["v_HandstandPushups_g02_c01"]["mp4"])
    assert video.shape == (6, 32, 44, 3)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["complete"] and manifest["class_names"] == list(ucf101_classes)
    assert (
        manifest["splits"]["train"]["samples"] == 6 and manifest["splits"]["test"]["frames"] == 18
    )
    assert len(manifest["skipped"]) == 1
    assert main(["verify", str(out)]) == 0


def test_kinetics_cli_keeps_original_bytes(
    kinetics_root: tuple[Path, Path], tmp_path: Path
) -> None:
    root, csv_path = kinetics_root
    out = tmp_path / "k"
    assert (
        main(
            [
                "kinetics",
                str(root),
                "--csv",
                str(csv_path),
                "--out",
                str(out),
                "--keep-original",
                "--quiet",
            ]
        )
        == 0
    )
    samples = {key: files for pairs in read_shards(out).values() for key, files in pairs}
    original = (root / "train" / "aaaaaaaaaaa_000010_000020.mp4").read_bytes()
    assert samples["aaaaaaaaaaa_000010_000020"]["mp4"] == original
    assert sorted(p.name for p in out.glob("*.tar")) == [
        "test-000000.tar",
        "train-000000.tar",
        "val-000000.tar",
    ]
    meta = json.loads(samples["ddddddddddd_000030_000040"]["json"])
    assert (meta["label"], meta["class_name"], meta["frames"]) == (2, "zumba", 12)


def test_folder_cli_skips_non_videos(
    tmp_path: Path, capsys: pytest.CaptureFixture, make_video: Callable[..., Path]
) -> None:
    make_video(tmp_path / "in" / "cats" / "a.mp4", seed=1, frames=4)
    (tmp_path / "in" / "cats" / "readme.md").write_text("hi")
    assert main(["folder", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert "readme.md: not a video file" in capsys.readouterr().out
    (key,) = keys_by_shard(tmp_path / "out")["train-000000.tar"]
    assert key == sanitize_key("cats/a") and key.startswith("cats_a-")


class _InterruptAfter:
    """Reader wrapper that raises KeyboardInterrupt (as Ctrl-C would) on one task."""

    def __init__(self, task: ClipTask) -> None:
        self.task = task

    def __call__(self, size: int | None) -> RawClip:
        raise KeyboardInterrupt


def test_interrupted_run_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    tasks = synthetic_tasks(14, seed=0, num_frames=6, val_fraction=0.25)
    options = ShardOptions(size=16, shard_samples=3)
    reference = tmp_path / "reference"
    write_shards(tasks, reference, options, progress=False)

    out = tmp_path / "resumed"
    broken = list(tasks)
    broken[8] = ClipTask(**{**tasks[8].__dict__, "read": _InterruptAfter(tasks[8])})
    with pytest.raises(KeyboardInterrupt):
        write_shards(broken, out, options, progress=False)
    finished = keys_by_shard(out)
    assert finished and not list(out.glob(".*.tmp"))
    assert len({k for keys in finished.values() for k in keys}) < 14
    (out / ".train-000009.tar.tmp").write_bytes(b"left over by a killed run")

    summary = write_shards(tasks, out, options, progress=False)
    assert sum(summary.already_present.values()) == sum(len(k) for k in finished.values())
    assert sum(summary.written.values()) + sum(summary.already_present.values()) == 14
    assert keys_by_shard(out) == keys_by_shard(reference)
    assert not list(out.glob(".*.tmp"))
    again = write_shards(tasks, out, options, progress=False)
    assert sum(again.written.values()) == 0 and keys_by_shard(out) == keys_by_shard(reference)


def test_rerun_with_other_options_is_refused(tmp_path: Path) -> None:
    tasks = synthetic_tasks(2, seed=0, num_frames=4)
    write_shards(tasks, tmp_path, ShardOptions(size=16), progress=False)
    with pytest.raises(ValueError, match="other options"):
        write_shards(tasks, tmp_path, ShardOptions(size=32), progress=False)


def test_size_limit_and_worker_processes(tmp_path: Path) -> None:
    tasks = synthetic_tasks(6, seed=4, num_frames=8, val_fraction=0.0)
    write_shards(tasks, tmp_path / "one", ShardOptions(size=32, shard_mb=1e-6), progress=False)
    assert len(list((tmp_path / "one").glob("train-*.tar"))) == 6
    write_shards(tasks, tmp_path / "pool", ShardOptions(size=32, workers=2), progress=False)
    write_shards(tasks, tmp_path / "serial", ShardOptions(size=32), progress=False)
    assert read_shards(tmp_path / "pool") == read_shards(tmp_path / "serial")


def test_unreadable_source_is_skipped_and_reported(
    tmp_path: Path, make_video: Callable[..., Path]
) -> None:
    bad = tmp_path / "in" / "cats" / "broken.mp4"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x00" * 1000)
    make_video(tmp_path / "in" / "cats" / "good.mp4", seed=3, frames=4)
    assert main(["folder", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    manifest = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())
    assert [s["source"] for s in manifest["skipped"]] == [str(bad)]
    assert "VideoDecodeError" in manifest["skipped"][0]["reason"]


def test_verify_reports_corrupt_samples(
    synthetic_shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["verify", str(synthetic_shards)]) == 0
    table = capsys.readouterr().out
    assert "train" in table and "corrupt: 0" in table
    damaged = tmp_path / "val-000000.tar"
    with tarfile.open(synthetic_shards / "val-000000.tar") as source:
        first_video = next(name for name in source.getnames() if name.endswith(".mp4"))
        with tarfile.open(damaged, "w") as target:
            for member in source.getmembers():
                data = source.extractfile(member).read()
                if member.name == first_video:
                    data = data[: len(data) // 2]
                member.size = len(data)
                target.addfile(member, io.BytesIO(data))
    assert main(["verify", str(tmp_path / "*.tar")]) == 1
    report = capsys.readouterr().out
    assert "corrupt: 1" in report and first_video.split(".")[0] in report


def test_samples_cli_real_footage(tmp_path: Path) -> None:
    out = tmp_path / "samples"
    assert (
        main(["samples", "--out", str(out), "--size", "32", "--num-frames", "32", "--quiet"]) == 0
    )
    samples = {key: files for pairs in read_shards(out).values() for key, files in pairs}
    splits = {name.split("-")[0] for name in keys_by_shard(out)}
    assert splits == {"train", "val", "test"} and len(samples) == 17
    metas = [json.loads(files["json"]) for files in samples.values()]
    assert {m["class_name"] for m in metas} == {"carphone_pristine", "bikes", "bigbuckbunny"}
    frames = decode_video(samples["bikes_00032"]["mp4"])
    assert frames.shape[:3] == (32, 32, 76) and float(np.std(frames)) > 10.0
