"""Real-world inputs: VFR and rotated phone videos, tiny frames, colliding names, odd tars,
streams where nothing decodes, and tools that must report instead of crash."""

from __future__ import annotations

import io
import json
import sys
import tarfile
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from adaptok.data.cli import main
from adaptok.data.skips import NoUsableSamplesError, SkippedSamplesWarning
from adaptok.data.tar_samples import member_key
from adaptok.data.video_io import decode_video, probe_video
from adaptok.data.writer import ClipTask, ShardOptions, read_video_file, sanitize_key, write_shards
from datamodules import VideoShardsDataModule


def _mp4(frames: int, height: int = 32, width: int = 32, rotation: int = 0) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(frames):
            picture = np.zeros((height, width, 3), np.uint8)
            picture[: height // 4, : width // 4] = 255  # marker in the stored top-left corner
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame = frame.reformat(format="yuv420p", threads=1)  # no swscale thread pool
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buffer.getvalue()


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _meta(label: int, frames: int = 16, size: int = 32) -> bytes:
    return json.dumps({"label": label, "frames": frames, "height": size, "width": size}).encode()


def _metas(folder: Path) -> dict[str, dict]:
    found = {}
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as archive:
            for member in archive.getmembers():
                if member.name.endswith(".json"):
                    found[member.name[:-5]] = json.loads(archive.extractfile(member).read())
    return found


def _labels(datamodule: VideoShardsDataModule, split: str = "val") -> list[int]:
    loader = getattr(datamodule, f"{split}_dataloader")()
    return [x for batch in loader for x in batch["label"].tolist()]


# ------------------------------------------------------------------ 1: time and geometry
def test_vfr_source_is_resampled_by_timestamp(tmp_path: Path) -> None:
    times_ms = [33 * i for i in range(20)] + [860 + 200 * i for i in range(10)]
    source = tmp_path / "in" / "cam" / "vfr.mp4"
    source.parent.mkdir(parents=True)
    with av.open(str(source), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(
                np.full((32, 32, 3), 8 * i, np.uint8), format="rgb24"
            )
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    raw = read_video_file(source, None)
    np.testing.assert_allclose(raw.times, np.array(times_ms) / 1000, atol=1e-3)
    assert (
        main(
            [
                "folder",
                str(tmp_path / "in"),
                "--out",
                str(tmp_path / "out"),
                "--fps",
                "5",
                "--quiet",
            ]
        )
        == 0
    )
    (meta,) = _metas(tmp_path / "out").values()
    kept = np.array([times_ms[i] for i in meta["source_frame_indices"]]) / 1000
    targets = np.arange(len(kept)) / 5.0
    assert meta["fps"] == 5.0 and len(kept) == 14  # 0 .. 2.6 s every 0.2 s
    # Each kept frame is the one on screen at its target time: shown at or before it, and
    # the next source frame comes after it (half a frame of slack).
    assert np.all(kept <= targets + 0.017)
    following = [
        times_ms[i + 1] / 1000 for i in meta["source_frame_indices"] if i + 1 < len(times_ms)
    ]
    assert np.all(np.array(following) > targets[: len(following)] - 0.017)
    np.testing.assert_allclose(meta["source_frame_times"], kept, atol=1e-6)


@pytest.mark.parametrize("keep_original", [False, True])
def test_rotation_metadata_is_applied_and_recorded(tmp_path: Path, keep_original: bool) -> None:
    source = tmp_path / "in" / "phone" / "portrait.mp4"
    source.parent.mkdir(parents=True)
    source.write_bytes(_mp4(6, height=32, width=48, rotation=90))
    info = probe_video(source)
    assert (info.height, info.width, info.rotation) == (48, 32, 90)
    frames = decode_video(source)
    assert frames.shape == (6, 48, 32, 3)
    # 90 degrees counter-clockwise moves the stored top-left marker to the bottom-left.
    assert frames[0, -4:, :4].mean() > 200 and frames[0, :4, :4].mean() < 50
    extra = ["--keep-original"] if keep_original else []
    assert (
        main(["folder", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--quiet", *extra])
        == 0
    )
    (meta,) = _metas(tmp_path / "out").values()
    assert (meta["height"], meta["width"], meta["source_rotation"]) == (48, 32, 90)
    datamodule = VideoShardsDataModule(
        val_urls=str(tmp_path / "out"), num_frames=4, resolution=32, num_workers=0
    )
    batch = next(iter(datamodule.val_dataloader()))
    assert tuple(batch["video"].shape) == (1, 3, 4, 32, 32)


def test_tiny_sources_are_skipped_and_listed_and_upscales_are_counted(
    tmp_path: Path, capsys
) -> None:
    tiny = tmp_path / "in" / "train" / "icons" / "thumb.mkv"
    tiny.parent.mkdir(parents=True)
    with av.open(str(tiny), "w") as out:
        stream = out.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = 5, 3, "yuv444p"
        for i in range(16):
            frame = av.VideoFrame.from_ndarray(np.full((3, 5, 3), 16 * i, np.uint8), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame.reformat(format="yuv444p")))
        out.mux(stream.encode(None))
    (tmp_path / "in" / "train" / "icons" / "small.mp4").write_bytes(_mp4(16, 16, 16))
    assert main(["folder", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    report = capsys.readouterr().out
    assert "skipped: 1" in report and "thumb.mkv" in report and "below min_side=16" in report
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [s["source"].endswith("thumb.mkv") for s in manifest["skipped"]] == [True]
    datamodule = VideoShardsDataModule(
        val_urls=str(tmp_path / "out"), num_frames=8, resolution=64, num_workers=0, max_upscale=3.0
    )
    with pytest.warns(
        SkippedSamplesWarning, match=r"warnings in val epoch 0: upscaled more than 3x: 1"
    ):
        assert len(_labels(datamodule)) == 1


# ------------------------------------------------------------------ 2: streams that yield nothing
@pytest.fixture
def short_shard(tmp_path: Path) -> Path:
    members = [
        (f"clip{k}.{ext}", _meta(0, 5) if ext == "json" else _mp4(5))
        for k in range(6)
        for ext in ("json", "mp4")
    ]
    return _tar(tmp_path / "short-000000.tar", members)


def test_a_pass_without_batches_is_an_error_naming_shards_and_reasons(short_shard: Path) -> None:
    datamodule = VideoShardsDataModule(
        train_urls=str(short_shard), num_frames=16, resolution=32, num_workers=0
    )
    with pytest.raises(
        NoUsableSamplesError,
        match=r"train epoch 0 produced no batch.*too short: 6.*short-000000.tar \(6\)",
    ):
        list(datamodule.train_dataloader())
    assert datamodule.skip_counts == {"too short": 6}  # the counts arrived without any clip


@pytest.mark.parametrize("workers", [0, 1])
def test_resampled_stream_of_bad_samples_stops_instead_of_looping(
    short_shard: Path, workers: int
) -> None:
    datamodule = VideoShardsDataModule(
        train_urls=str(short_shard),
        num_frames=16,
        resolution=32,
        num_workers=workers,
        epoch_length=64,
        max_consecutive_skips=20,
    )
    with pytest.raises(
        NoUsableSamplesError, match=r"20 samples in a row.*too short: 20.*short-000000.tar"
    ):
        next(iter(datamodule.train_dataloader()))


def test_counts_of_a_worker_that_yields_nothing_reach_the_main_process(
    short_shard: Path, tmp_path: Path
) -> None:
    good = _tar(
        tmp_path / "good-000000.tar",
        [
            (f"g{k}.{e}", _meta(1) if e == "json" else _mp4(16))
            for k in range(3)
            for e in ("json", "mp4")
        ],
    )
    datamodule = VideoShardsDataModule(
        val_urls=[str(good), str(short_shard)],
        num_frames=8,
        resolution=32,
        num_workers=2,
        batch_size=2,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _labels(datamodule) == [1, 1, 1]
    messages = [str(w.message) for w in caught if issubclass(w.category, SkippedSamplesWarning)]
    assert messages == ["skipped 6 sample(s) in val epoch 0 (too short: 6)"]
    assert datamodule.skip_counts == {"too short": 6}


def test_split_apart_and_dotted_samples_are_read_or_named(tmp_path: Path) -> None:
    video = _mp4(16)
    layouts = {
        "metadata_first": [(f"c{i}.json", _meta(i)) for i in range(4)]
        + [(f"c{i}.mp4", video) for i in range(4)],
        "dotted": [
            (f"clip.v{i}.{e}", _meta(i) if e == "json" else video)
            for i in range(4)
            for e in ("json", "mp4")
        ],
        "video_first": [(f"c{i}.mp4", video) for i in range(4)]
        + [(f"c{i}.json", _meta(i)) for i in range(4)],
        "orphan_metadata": [("a.json", _meta(7)), ("a.mp4", video), ("b.json", _meta(8))],
    }
    results = {}
    for name, members in layouts.items():
        datamodule = VideoShardsDataModule(
            val_urls=str(_tar(tmp_path / f"{name}-000000.tar", members)),
            num_frames=8,
            resolution=32,
            num_workers=0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SkippedSamplesWarning)
            results[name] = (_labels(datamodule), dict(datamodule.skip_counts))
    assert results["metadata_first"] == ([0, 1, 2, 3], {})
    assert results["dotted"] == ([0, 1, 2, 3], {})
    labels, skips = results["video_first"]
    assert labels == [-1, -1, -1, -1]
    assert skips == {
        "metadata after its video in the tar (files of one sample split apart; the video was read without it)": 4
    }
    assert results["orphan_metadata"] == (
        [7],
        {"no video member for this key in the shard (members: ['json'])": 1},
    )
    assert member_key("dir/clip.v0.mp4") == ("dir/clip.v0", "mp4")
    assert member_key("a.seg.npy") == ("a", "seg.npy")


def test_a_video_without_a_label_loads_as_unlabelled_with_a_counted_note(tmp_path: Path) -> None:
    """Case 11's other half: a video with no JSON (or a JSON without "label") is label -1,
    never silently, in both loaders."""
    from datamodules import VideoWindowsDataModule

    video = _mp4(16)
    shard = _tar(
        tmp_path / "mixed-000000.tar",
        [("a.mp4", video), ("b.json", _meta(3)), ("b.mp4", video)]
        + [("c.json", json.dumps({"frames": 16}).encode()), ("c.mp4", video)],
    )
    datamodule = VideoShardsDataModule(
        val_urls=str(shard), num_frames=8, resolution=32, num_workers=0
    )
    with pytest.warns(SkippedSamplesWarning, match=r"no label in the metadata \(label -1\): 2"):
        assert _labels(datamodule) == [-1, 3, -1]
    assert not datamodule.skip_counts  # used, not skipped
    windows = VideoWindowsDataModule(shard, num_frames=8, stride=8, resolution=32, num_workers=0)
    windows.setup("predict")
    labels = [int(x) for b in windows.predict_dataloader() for x in b["label"]]
    assert labels == [-1, -1, 3, 3, -1, -1]  # two windows a video
    # the annotation writer reports this loader's counts; the note is among them
    assert windows.ledger.note_totals == {"no label in the metadata (label -1)": 2}


def test_metadata_that_is_not_an_object_is_a_counted_skip(tmp_path: Path) -> None:
    shard = _tar(
        tmp_path / "bad-000000.tar",
        [("a.json", b"[1, 2]"), ("a.mp4", _mp4(16)), ("b.json", _meta(3)), ("b.mp4", _mp4(16))],
    )
    datamodule = VideoShardsDataModule(
        val_urls=str(shard), num_frames=8, resolution=32, num_workers=0
    )
    with pytest.warns(SkippedSamplesWarning, match=r"bad metadata \(JSON list, not an object\): 1"):
        assert _labels(datamodule) == [3]


# ------------------------------------------------------------------ 3: colliding names
def test_names_that_sanitize_alike_keep_distinct_keys(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "in" / "train" / "跑步"
    folder.mkdir(parents=True)
    names = ("视频一.mp4", "视频二.mp4", "a b.mp4", "a_b.mp4", "a.b.mp4")
    for name in names:
        (folder / name).write_bytes(_mp4(8))
    assert main(["folder", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    metas = _metas(tmp_path / "out")
    assert sorted(m["relative_path"] for m in metas.values()) == sorted(
        f"train/跑步/{n}" for n in names
    )
    assert all(
        key == sanitize_key(Path(m["relative_path"]).with_suffix("").as_posix())
        for key, m in metas.items()
    )
    assert sanitize_key("a_b") == "a_b" and sanitize_key("a b") != sanitize_key("a_b")


def test_duplicate_tasks_are_listed_not_fatal(tmp_path: Path) -> None:
    source = tmp_path / "clip.mp4"
    source.write_bytes(_mp4(8))
    tasks = [
        ClipTask(
            key="same",
            split="train",
            label=0,
            class_name="x",
            source=f"{source}#{i}",
            read=lambda size: read_video_file(source, size),
        )
        for i in range(2)
    ]
    summary = write_shards(tasks, tmp_path / "out", ShardOptions(), progress=False)
    assert summary.written["train"] == 1
    assert summary.skipped == [(f"{source}#1", f"duplicate sample key 'same' (as {source}#0)")]


# ------------------------------------------------------------------ 4: verify reports, never raises
def test_verify_lists_every_malformed_sample(tmp_path: Path, capsys) -> None:
    video = _mp4(8)
    members = [
        ("a.json", b"[1, 2]"),
        ("a.mp4", video),
        ("b.json", b'{"frames": "eight"}'),
        ("b.mp4", video),
        ("c.json", b"\xff\xfe not json"),
        ("c.mp4", video),
        ("d.json", _meta(0, frames=8)),
        ("d.mp4", video),
        ("e.json", _meta(0)),
    ]
    shard = _tar(tmp_path / "odd-000000.tar", members)
    (tmp_path / "broken-000000.tar").write_bytes(shard.read_bytes()[:700])
    assert main(["verify", str(tmp_path / "*.tar")]) == 1
    report = capsys.readouterr().out
    assert "corrupt: 5" in report
    for expected in (
        "a: metadata is JSON list",
        "b: metadata 'frames' is not an integer",
        "c: metadata is not valid JSON",
        "e: no video member",
        "broken-000000.tar",
    ):
        assert expected in report, report


# ------------------------------------------------------------------ uint8 batches
def test_uint8_batches_convert_to_the_float_batches_on_the_device(tmp_path: Path) -> None:
    import torch

    from adaptok.data.clips import video_to_float

    shard = _tar(
        tmp_path / "v-000000.tar",
        [
            (f"c{i}.{e}", _meta(i) if e == "json" else _mp4(16))
            for i in range(2)
            for e in ("json", "mp4")
        ],
    )
    batches = {}
    for dtype in ("float32", "uint8"):
        datamodule = VideoShardsDataModule(
            val_urls=str(shard),
            num_frames=8,
            resolution=32,
            num_workers=0,
            video_dtype=dtype,
            value_range=(0.0, 1.0),
        )
        batches[dtype] = next(iter(datamodule.val_dataloader()))["video"]
    assert batches["uint8"].dtype == torch.uint8
    torch.testing.assert_close(video_to_float(batches["uint8"]), batches["float32"])
    with pytest.raises(TypeError, match="uint8 or floating"):
        video_to_float(batches["uint8"].to(torch.int32))


@pytest.mark.parametrize("workers", [0, 1])
def test_fit_on_shards_without_a_usable_clip_is_a_one_line_error(
    short_shard: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, workers: int
) -> None:
    """`adaptok fit` names the reasons and shards in one line, also from a DataLoader worker."""
    from modules.cli import main
    from tests.helpers import EXPERIMENTS, tiny_args

    args = [
        "adaptok",
        "fit",
        *tiny_args(EXPERIMENTS / "demo" / "tokenizer.yaml"),
        f"--data.init_args.train_urls={short_shard}",
        "--data.init_args.val_urls=null",
        "--data.init_args.test_urls=null",
        f"--data.init_args.num_workers={workers}",
        "--trainer.max_steps=1",
        "--trainer.limit_val_batches=0",
        "--trainer.logger=false",
        "--trainer.callbacks=null",
        "--trainer.enable_checkpointing=false",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
    ]
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 1 and err[0].startswith("adaptok fit: error: "), err
    assert "too short" in err[0] and "short-000000.tar" in err[0], err[0]
    assert "Traceback" not in err[0]
    if workers:
        assert err[0].endswith("(in DataLoader worker process 0)"), err[0]
