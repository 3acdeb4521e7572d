"""Real-world inputs, set 2: source properties that change what is stored (alpha,
HDR, field order, streams, timestamps), links, empty URLs, config files, failed writes.

Every input is made here with PyAV; nothing is read from outside ``tests/``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

from adaptok.alloc import InfeasibleBudgetError, StreamingAllocator, allocate
from adaptok.budget_planner import TokenBudgetPlanner
from adaptok.data import writer as writer_module
from adaptok.data.cli import main
from adaptok.data.clips import ClipDecoder
from adaptok.data.colour import hdr_to_sdr, parse_background
from adaptok.data.shards import ShardURLError, resolve_shards
from adaptok.data.video_io import count_frames, decode_video, decode_video_timed, probe_video
from adaptok.tokenize import read_windows
from datamodules import VideoShardsDataModule
from datamodules.token_shards import TokenShardsDataModule
from datamodules.video_windows import VideoWindowsDataModule
from modules.cli import ConfigFileError, check_config_files
from modules.preflight import PreflightError, check_data_urls

REPO = Path(__file__).resolve().parents[2]


def make_video(
    path: Path,
    frames: np.ndarray,
    codec: str = "libx264",
    fps: int = 10,
    pix: str = "yuv420p",
    fmt: str | None = None,
    options: dict | None = None,
    src: str = "rgb24",
    setup: Callable | None = None,
) -> Path:
    """Encode ``frames`` (T, H, W, C) with PyAV."""
    if codec not in av.codecs_available:
        pytest.skip(f"this FFmpeg has no {codec} encoder")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=fps, options=options or {})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix
        if setup is not None:
            setup(stream)
        for index, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format=src)
            if src != pix:
                frame = frame.reformat(format=pix, threads=1)
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def metas(folder: Path) -> dict[str, dict]:
    found = {}
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as archive:
            for member in archive.getmembers():
                if member.name.endswith(".json"):
                    found[member.name[:-5]] = json.loads(archive.extractfile(member).read())
    return found


def stored_frames(folder: Path) -> dict[str, np.ndarray]:
    found = {}
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as archive:
            for member in archive.getmembers():
                if member.name.endswith(".mp4"):
                    found[member.name[:-4]] = decode_video(archive.extractfile(member).read())
    return found


def folder(root: Path, out: Path, *extra: str) -> int:
    return main(["folder", str(root), "--out", str(out), "--quiet", *extra])


# ------------------------------------------------------------------ 1: alpha
def _rgba(frames: int = 12) -> np.ndarray:
    """Opaque red left half, fully transparent green right half."""
    rgba = np.zeros((frames, 32, 32, 4), np.uint8)
    rgba[..., 1] = 255
    rgba[:, :, :16] = (255, 0, 0, 255)
    return rgba


def test_alpha_sources_are_composited_recorded_and_counted(tmp_path: Path, capsys) -> None:
    make_video(tmp_path / "in/train/s/a.mov", _rgba(), "png", pix="rgba", src="rgba")
    make_video(tmp_path / "in/train/s/b.webm", _rgba(), "libvpx-vp9", pix="yuva420p", src="rgba")
    assert folder(tmp_path / "in", tmp_path / "out", "--background", "white") == 0
    printed = capsys.readouterr()
    assert "alpha: 2" in printed.out
    assert printed.err.count("alpha channel composited over background [255, 255, 255]") == 2
    found = stored_frames(tmp_path / "out")
    for key, meta in metas(tmp_path / "out").items():
        assert meta["source_video"]["alpha"] is True
        assert meta["adjustments"]["alpha"]["background"] == [255, 255, 255]
        frame = found[key][0].astype(int)
        assert frame[16, 28].min() > 235  # transparent green -> white background, not green
        assert frame[16, 4, 0] > 235 and frame[16, 4, 1:].max() < 30  # opaque red kept
    # The same conversion in `adaptok tokenize`'s reader, over the default black background.
    windows = read_windows(tmp_path / "in/train/s/b.webm", 4, 32)
    assert windows.frames[0, 16, 28].max() < 20 and "alpha" in windows.adjustments
    assert parse_background("#ff8000") == (255, 128, 0)
    with pytest.raises(ValueError, match="'pink' is not"):
        parse_background("pink")


# ------------------------------------------------------------------ 2: HDR and colour
def test_hdr10_is_tone_mapped_to_sdr_and_the_source_colour_recorded(tmp_path: Path) -> None:
    frames = np.full((8, 32, 32, 3), 130, np.uint8)  # PQ code of ~100 nits (SDR white)
    frames[:, :, 24:] = 192  # ~1000 nits

    def tag(stream: av.video.stream.VideoStream) -> None:
        context = stream.codec_context
        context.color_primaries, context.color_trc, context.colorspace = 9, 16, 9

    source = tmp_path / "in/train/h/pq.mkv"
    make_video(
        source, frames, "libx265", pix="yuv420p10le", setup=tag,
        options={"x265-params": "log-level=error"},
    )  # fmt: skip
    assert folder(tmp_path / "in", tmp_path / "out") == 0
    (meta,) = metas(tmp_path / "out").values()
    assert meta["source_video"]["color_transfer"] == "smpte2084"
    assert meta["source_video"]["color_primaries"] == "bt2020"
    assert meta["source_video"]["bit_depth"] == 10
    assert "bt2390" in meta["adjustments"]["tone_mapped"]["method"]
    (stored,) = stored_frames(tmp_path / "out").values()
    assert stored[0, 16, 4].min() > 200  # 100-nit white is light, not grey 129
    assert stored[0, 16, 28].min() > 245  # the 1000-nit peak is white
    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    assert manifest["adjusted"] == {"tone_mapped": 1}


def test_tone_mapping_curve_is_monotonic_and_hlg_is_handled() -> None:
    codes = np.linspace(0, 65535, 64).astype(np.uint16)
    ramp = np.repeat(codes[None, :, None], 3, axis=2)
    for transfer in (16, 18):
        mapped = hdr_to_sdr(ramp, transfer, 9)[0, :, 0].astype(int)
        assert mapped[0] == 0 and mapped[-1] == 255 and np.all(np.diff(mapped) >= 0)


# ------------------------------------------------------------------ field order
def test_interlaced_sources_are_deinterlaced_and_recorded(tmp_path: Path) -> None:
    frames = np.zeros((8, 32, 32, 3), np.uint8)
    for t in range(8):
        frames[t, :, 4 * t : 4 * t + 8] = 255
    source = tmp_path / "in/train/tv/i.mp4"
    make_video(source, frames, options={"x264-params": "interlaced=1:tff=1"}, fps=25)
    assert probe_video(source).properties.interlaced
    assert folder(tmp_path / "in", tmp_path / "out") == 0
    (meta,) = metas(tmp_path / "out").values()
    assert meta["adjustments"]["deinterlaced"]["field_order"] == "tt"
    assert meta["frames"] == 8


# ------------------------------------------------------------------ 4: timestamps jump back
def _concatenated_mpeg(path: Path) -> Path:
    parts = []
    for value in (40, 200):
        part = path.parent / f"part{value}.mpg"
        frames = np.full((25, 32, 32, 3), value, np.uint8)
        parts.append(make_video(part, frames, "mpeg2video", 25, fmt="mpeg").read_bytes())
        part.unlink()
    path.write_bytes(b"".join(parts))
    return path


def test_timestamps_that_jump_back_are_rebased_not_lost(tmp_path: Path) -> None:
    source = _concatenated_mpeg((tmp_path / "in/train/cam").joinpath("cat.mpg"))
    decoded = decode_video_timed(source)
    assert len(decoded.frames) == 50 and np.all(np.diff(decoded.times) > 0)
    assert decoded.adjustments["timestamps"]["backward_jumps"] == 1
    assert folder(tmp_path / "in", tmp_path / "out", "--fps", "5") == 0
    (meta,) = metas(tmp_path / "out").values()
    (stored,) = stored_frames(tmp_path / "out").values()
    assert meta["frames"] == 10  # 2 s at 5 fps, not 5 frames of the second half
    assert stored[0].mean() < 80 and stored[-1].mean() > 160  # both halves kept, in order
    assert meta["adjustments"]["timestamps"]["backward_jumps"] == 1
    assert len(read_windows(source, 8, 32).frames) == 50  # `adaptok tokenize` keeps all 50


# ------------------------------------------------------------------ 5: several video streams
def _two_streams(path: Path) -> Path:
    """A 32x32, 8-frame preview first (no disposition), then the 64x64 main stream."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        streams = [out.add_stream("libx264", rate=10) for _ in range(2)]
        for stream, side in zip(streams, (32, 64)):
            stream.width = stream.height = side
            stream.pix_fmt = "yuv420p"
        streams[0].disposition, streams[1].disposition = 0, av.stream.Disposition.default
        for i in range(24):
            for stream, side, value in ((streams[0], 32, 255), (streams[1], 64, 60)):
                if side == 64 or i < 8:
                    frame = av.VideoFrame.from_ndarray(
                        np.full((side, side, 3), value, np.uint8), format="rgb24"
                    )
                    frame.pts = i
                    out.mux(stream.encode(frame))
        for stream in streams:
            out.mux(stream.encode(None))
    return path


def test_the_main_stream_is_chosen_recorded_and_can_be_asked_for(tmp_path: Path) -> None:
    source = _two_streams(tmp_path / "in/train/cam/p.mkv")
    assert folder(tmp_path / "in", tmp_path / "best") == 0
    (meta,) = metas(tmp_path / "best").values()
    assert (meta["frames"], meta["height"], meta["source_stream"]) == (24, 64, 1)
    assert meta["adjustments"]["stream"] == {"chosen": 1, "of": 2, "rule": "best"}
    assert folder(tmp_path / "in", tmp_path / "asked", "--stream", "0") == 0
    (meta,) = metas(tmp_path / "asked").values()
    assert (meta["frames"], meta["height"], meta["adjustments"]["stream"]["rule"]) == (
        8,
        32,
        "asked",
    )
    assert folder(tmp_path / "in", tmp_path / "missing", "--stream", "5") == 2  # 0 written
    assert len(read_windows(source, 8, 32).frames) == 24  # tokenize: the main stream
    # Original files kept as they are: the loader decodes the recorded stream.
    assert folder(tmp_path / "in", tmp_path / "orig", "--keep-original", "--stream", "0") == 0
    (meta,) = metas(tmp_path / "orig").values()
    assert meta["stream"] == 0 and meta["frames"] == 8
    with tarfile.open(next((tmp_path / "orig").glob("*.tar"))) as archive:
        sample = {"__key__": "p"}
        for member in archive.getmembers():
            sample[member.name.rsplit(".", 1)[1]] = archive.extractfile(member).read()
    clip = ClipDecoder(8, 1, "first", 32, "center", False)(sample, np.random.default_rng(0))
    assert clip["video"].mean() > 200  # the white preview stream, as recorded


# ------------------------------------------------------------------ 6: large frames, streaming
def test_large_frames_are_warned_and_counted_and_files_are_streamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    make_video(tmp_path / "in/train/big/u.mp4", np.zeros((6, 64, 96, 3), np.uint8))
    monkeypatch.setattr(writer_module, "LARGE_FRAME_PIXELS", 64 * 64)
    calls = []
    original = writer_module.VideoFileReader.__call__
    monkeypatch.setattr(
        writer_module.VideoFileReader,
        "__call__",
        lambda self, size: calls.append(size) or original(self, size),
    )
    assert folder(tmp_path / "in", tmp_path / "out") == 0
    assert not calls  # never decoded whole into memory: streamed frame by frame
    (meta,) = metas(tmp_path / "out").values()
    assert meta["adjustments"]["large_frames"] == {"height": 64, "width": 96, "limit": 4096}
    assert "--size resizes while decoding" in capsys.readouterr().err


# ------------------------------------------------------------------ 7: linked folders
def test_linked_class_and_split_folders_are_followed_and_cycles_listed(tmp_path: Path) -> None:
    clip = np.zeros((10, 32, 32, 3), np.uint8)
    make_video(tmp_path / "sym/train/birds/1.mp4", clip)
    for name in ("cats", "dogs"):
        make_video(tmp_path / f"elsewhere/{name}/1.mp4", clip)
        (tmp_path / f"sym/train/{name}").symlink_to(tmp_path / f"elsewhere/{name}")
    (tmp_path / "sym/train/birds/loop").symlink_to(tmp_path / "sym/train")
    assert folder(tmp_path / "sym", tmp_path / "out") == 0
    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    assert manifest["class_names"] == ["birds", "cats", "dogs"]
    assert manifest["splits"]["train"]["samples"] == 3
    assert any("cycle" in s["reason"] for s in manifest["skipped"])
    # A split folder that is a link.
    make_video(tmp_path / "real_train/cls/1.mp4", clip)
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked/train").symlink_to(tmp_path / "real_train")
    assert folder(tmp_path / "linked", tmp_path / "out2") == 0
    assert len(metas(tmp_path / "out2")) == 1
    # Shard folders that are links resolve too.
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards/part").symlink_to(tmp_path / "out2")
    assert len(resolve_shards(str(tmp_path / "shards"))) == 1


def test_zero_clips_written_is_an_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "in/train/x").mkdir(parents=True)
    (tmp_path / "in/train/x/notes.txt").write_text("not a video")
    assert folder(tmp_path / "in", tmp_path / "out") == 2
    assert "no clips written" in capsys.readouterr().err


# ------------------------------------------------------------------ 8: empty URLs, folders
def test_empty_shard_urls_are_refused_and_globbed_folders_expanded(tmp_path: Path, capsys) -> None:
    for bad in ("", "  ", ["a.tar", ""], [], [None]):
        datamodule = VideoShardsDataModule(test_urls=bad, num_workers=0)
        with pytest.raises(ShardURLError, match="test_urls"):
            datamodule.setup("test")
    with pytest.raises(ShardURLError, match="val_urls"):
        TokenShardsDataModule(val_urls="").setup("validate")
    with pytest.raises(ShardURLError, match="predict_urls"):
        VideoWindowsDataModule(predict_urls="").setup("predict")
    assert main(["verify", ""]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    make_video(tmp_path / "in/train/c/1.mp4", np.zeros((8, 32, 32, 3), np.uint8))
    assert folder(tmp_path / "in", tmp_path / "data/set") == 0
    assert len(resolve_shards(str(tmp_path / "data/*"))) == 1  # a folder matched by a glob
    assert main(["verify", str(tmp_path / "data/*")]) == 0


def test_a_folder_url_gives_only_its_splits_shards(tmp_path: Path) -> None:
    """`test_urls: data/demo` once evaluated on every tar below it, training shards included."""
    for name in ("a/train-000000.tar", "a/val-000000.tar", "b/test-000000.tar", "c/x.tar"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tmp_path / name, "w"):
            pass
    names = lambda shards: sorted(Path(x).relative_to(tmp_path).as_posix() for x in shards)  # noqa: E731
    assert names(resolve_shards(str(tmp_path), "test_urls", "test")) == ["b/test-000000.tar"]
    with pytest.warns(UserWarning, match=r"holds no test-\*\.tar shards: reading its 2 shards"):
        matched = resolve_shards(str(tmp_path / "*"), "test_urls", "test")
    # a: no test shards (read whole, warned); c: no split prefix (read whole)
    assert names(matched) == [
        "a/train-000000.tar",
        "a/val-000000.tar",
        "b/test-000000.tar",
        "c/x.tar",
    ]
    assert len(resolve_shards(str(tmp_path))) == 4  # no split: every shard
    datamodule = VideoShardsDataModule(test_urls=str(tmp_path), num_workers=0)
    datamodule.setup("test")
    assert names(datamodule.shards["test"]) == ["b/test-000000.tar"]


# ------------------------------------------------------------------ 10: config files, null URLs
def test_config_files_that_cannot_be_settings_name_the_file_and_line(tmp_path: Path) -> None:
    empty, tab, listed = tmp_path / "empty.yaml", tmp_path / "tab.yaml", tmp_path / "list.yaml"
    empty.write_text("# nothing\n")
    tab.write_text("trainer:\n\tmax_steps: 1\n")
    listed.write_text("- 1\n")
    with pytest.raises(ConfigFileError, match=r"empty.yaml is empty"):
        check_config_files(["fit", "--config", str(empty)])
    with pytest.raises(ConfigFileError, match=r"tab.yaml line 2 column 1: .*tabs"):
        check_config_files(["fit", "-c", str(tab)])
    with pytest.raises(ConfigFileError, match=r"list.yaml holds a YAML list"):
        check_config_files(["fit", f"--config={listed}"])
    check_config_files(["fit", "--config", "{trainer: {max_steps: 1}}"])  # inline YAML is fine
    # The `adaptok` entry point prints it in one line, exit 2.
    result = subprocess.run(
        [sys.executable, "-c", "from modules.cli import main; main()", "fit", "--config", str(empty)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"adaptok fit: error: config file {empty} is empty (no settings): remove it from the "
        "command or add settings"
    ]


def test_a_stage_without_shard_urls_is_refused_before_it_starts() -> None:
    datamodule = VideoShardsDataModule(train_urls=None, num_workers=0)
    with pytest.raises(PreflightError, match=r"data.init_args.train_urls is None: `adaptok fit`"):
        check_data_urls(datamodule, "fit")
    with pytest.raises(PreflightError, match="predict_urls"):
        check_data_urls(datamodule, "predict")


# ------------------------------------------------------------------ 11: disk full / file size
def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (40 * 1024, 40 * 1024))


def test_a_failed_shard_write_is_one_line_leaves_no_debris_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "full"
    command = [
        sys.executable, "-c", "from adaptok.data.cli import main; raise SystemExit(main())",
        "synthetic", "--num-clips", "12", "--shard-samples", "6", "--out", str(out), "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
        preexec_fn=_limit_file_size,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write" in lines[0] and "re-run" in lines[0], lines
    assert "Traceback" not in result.stderr
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False and "cannot write" in manifest["error"]
    finished = sum(s["samples"] for s in manifest["splits"].get("train", {}).get("shards", []))
    rerun = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True
    assert sum(split["samples"] for split in manifest["splits"].values()) == 12
    assert f"{finished:>7}" in rerun.stdout  # the finished shards were kept, not rewritten


# ------------------------------------------------------------------ 12: one-frame files (guard)
def test_one_frame_files_are_written_and_counted_too_short_by_the_loader(tmp_path: Path) -> None:
    make_video(tmp_path / "in/val/c/one.mp4", np.zeros((1, 32, 32, 3), np.uint8))
    make_video(tmp_path / "in/val/c/ok.mp4", np.zeros((8, 32, 32, 3), np.uint8))
    assert folder(tmp_path / "in", tmp_path / "out") == 0
    datamodule = VideoShardsDataModule(
        val_urls=str(tmp_path / "out"), num_frames=8, resolution=32, num_workers=0
    )
    datamodule.setup("validate")
    with pytest.warns(UserWarning, match="too short: 1"):
        assert sum(len(b["key"]) for b in datamodule.val_dataloader()) == 1


# ------------------------------------------------------------------ 15: NaN / inf budgets
def _planner_of_8_tokens(candidates: list[int]) -> TokenBudgetPlanner:
    """A planner of 4 blocks x 8 tokens (only the geometry is read: no networks)."""
    geometry = SimpleNamespace(tokens_per_block=8, num_blocks=4)
    return TokenBudgetPlanner(geometry, candidates=candidates)  # type: ignore[arg-type]


@pytest.mark.parametrize("budget", [float("nan"), float("inf"), [4.0, float("nan")]])
def test_non_finite_budgets_are_refused_in_one_line(budget: object) -> None:
    costs = np.random.default_rng(0).random((2, 4, 3))
    for mode in ("batch", "per_clip", "streaming"):
        with pytest.raises(InfeasibleBudgetError, match=r"not a valid budget.*\[2, 8\]") as error:
            allocate(costs, [2, 4, 8], budget, mode=mode, equality=False)
        assert "\n" not in str(error.value)
    if isinstance(budget, float):
        with pytest.raises(InfeasibleBudgetError, match="not a valid budget"):
            StreamingAllocator([2, 4, 8], budget, num_blocks=4)
        with pytest.raises(InfeasibleBudgetError, match=r"budget (nan|inf) is not a fraction"):
            _planner_of_8_tokens([2, 4, 8]).budget_from_fraction(budget)


# ------------------------------------------------------------------ 16: header frame counts
def _avi_with_dropped_frames(path: Path) -> Path:
    """20 pictures, plus an empty (dropped) packet after every 4th: the header says 25."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        pts = 0
        for i in range(20):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 10 * i, np.uint8), "rgb24")
            frame.pts = pts
            pts += 1
            out.mux(stream.encode(frame))
            if i % 4 == 3:
                packet = av.Packet(b"")
                packet.stream, packet.pts, packet.dts = stream, pts, pts
                packet.time_base = stream.time_base
                pts += 1
                out.mux(packet)
        out.mux(stream.encode(None))
    return path


def test_kept_originals_record_the_decoded_frame_count(tmp_path: Path) -> None:
    source = _avi_with_dropped_frames(tmp_path / "avi/train/jump/v_drop.avi")
    header = probe_video(source).frames
    decoded, _ = count_frames(source)
    assert decoded == 20
    assert folder(tmp_path / "avi", tmp_path / "out", "--keep-original") == 0
    (meta,) = metas(tmp_path / "out").values()
    assert meta["frames"] == 20
    if header != 20:
        assert meta["adjustments"]["header_frames"] == {"header": header, "decoded": 20}
    assert main(["verify", str(tmp_path / "out")]) == 0
    # A shard from elsewhere whose metadata keeps the header count: the loader re-plans.
    data = source.read_bytes()
    sample = {
        "__key__": "x",
        "avi": data,
        "json": json.dumps({"frames": 25, "height": 32, "width": 32, "label": 0}),
    }
    clip = ClipDecoder(16, 1, "uniform", 32, "center", False)(
        {**sample, "json": sample["json"].encode()}, np.random.default_rng(0)
    )
    assert clip["video"].shape == (3, 16, 32, 32)
    assert clip["notes"] == ["metadata frame count above the decoded frames"]


def test_a_video_shard_written_here_round_trips_through_the_loader(tmp_path: Path) -> None:
    """The stored clips of a mixed folder load as ordinary clips (no notes, no skips)."""
    make_video(tmp_path / "in/val/s/a.mov", _rgba(8), "png", pix="rgba", src="rgba")
    _two_streams(tmp_path / "in/val/cam/p.mkv")
    assert folder(tmp_path / "in", tmp_path / "out", "--size", "32") == 0
    datamodule = VideoShardsDataModule(
        val_urls=str(tmp_path / "out"), num_frames=8, resolution=32, num_workers=0, batch_size=2
    )
    datamodule.setup("validate")
    batches = list(datamodule.val_dataloader())
    assert sum(len(b["key"]) for b in batches) == 2 and not datamodule.skip_counts
    assert not datamodule.ledger.note_totals
