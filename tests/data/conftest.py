"""Session fixtures: tiny real video datasets (PyAV-encoded files) and synthetic shards."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import pytest

from adaptok.data.synthetic import generate_clip, synthetic_tasks
from adaptok.data.writer import ShardOptions, write_shards

UCF_CLASSES = ("ApplyEyeMakeup", "Basketball", "HandstandPushups")
KINETICS_ROWS = (
    ("abseiling", "aaaaaaaaaaa", 10, 20, "train"),
    ("abseiling", "bbbbbbbbbbb", 0, 10, "train"),
    ("zumba", "ccccccccccc", 5, 15, "train"),
    ("zumba", "ddddddddddd", 30, 40, "validate"),
    ("zumba", "missingclip", 0, 10, "validate"),
    ("bowling", "eeeeeeeeeee", 1, 11, "test"),
)


def write_video_file(
    path: Path, seed: int, frames: int = 12, height: int = 48, width: int = 64
) -> Path:
    """Encode a small synthetic clip with PyAV (mpeg4 for .avi, libx264 otherwise)."""
    clip = generate_clip(seed, num_frames=frames, height=height, width=width).frames
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = "mpeg4" if path.suffix == ".avi" else "libx264"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in clip:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="session")
def ucf101_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """UCF-101 official layout: 3 classes x 3 clips; split 1 lists one missing clip and uses
    the official spelling quirk ``HandStandPushups`` for the HandstandPushups folder."""
    base = tmp_path_factory.mktemp("ucf101")
    root, splits = base / "UCF-101", base / "ucfTrainTestlist"
    splits.mkdir()
    train, test = [], []
    for label, name in enumerate(UCF_CLASSES):
        for group in (1, 2, 3):
            file_name = f"v_{name}_g{group:02d}_c01.avi"
            write_video_file(root / name / file_name, seed=10 * label + group)
            listed = name.replace("Handstand", "HandStand")
            entry = f"{name}/v_{listed}_g{group:02d}_c01.avi"
            (test if group == 1 else train).append((entry, label + 1))
    train.append(("Basketball/v_Basketball_g09_c01.avi", 2))
    (splits / "classInd.txt").write_text(
        "".join(f"{i + 1} {name}\n" for i, name in enumerate(UCF_CLASSES))
    )
    (splits / "trainlist01.txt").write_text("".join(f"{e} {n}\n" for e, n in train))
    (splits / "testlist01.txt").write_text("".join(f"{e}\n" for e, _ in test))
    return root, splits


@pytest.fixture(scope="session")
def kinetics_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Kinetics layout with a CSV (one listed clip missing) and clips in split folders."""
    base = tmp_path_factory.mktemp("kinetics")
    root = base / "videos"
    csv_path = base / "annotations.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        for seed, (label, youtube_id, start, end, split) in enumerate(KINETICS_ROWS):
            writer.writerow([label, youtube_id, start, end, split])
            if youtube_id != "missingclip":
                name = f"{youtube_id}_{start:06d}_{end:06d}.mp4"
                write_video_file(root / split / name, seed=100 + seed)
    return root, csv_path


@pytest.fixture(scope="session")
def synthetic_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 synthetic 16x32x32 clips: train (18 clips, 5 shards) and val (6 clips, 2 shards)."""
    out = tmp_path_factory.mktemp("synthetic_shards")
    tasks = synthetic_tasks(24, seed=3, num_frames=16, val_fraction=0.25)
    write_shards(tasks, out, ShardOptions(size=32, shard_samples=4), progress=False)
    return out


@pytest.fixture
def shard_copy(synthetic_shards: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic shards (for tests that damage them)."""
    target = tmp_path / "shards"
    shutil.copytree(synthetic_shards, target)
    return target


@pytest.fixture(scope="session")
def make_video() -> Callable[..., Path]:
    """The :func:`write_video_file` helper, for tests that build their own folders."""
    return write_video_file


@pytest.fixture(scope="session")
def ucf101_classes() -> tuple[str, ...]:
    return UCF_CLASSES
