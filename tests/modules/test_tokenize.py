"""``adaptok tokenize``: a user's own video, window by window, through scorer + allocator.

Real, tiny: the session's tiny scorer checkpoint (8 frames, 32x32, 4 blocks x 8 tokens,
candidates 2/4/6/8) and short clips encoded here with PyAV.
"""

from __future__ import annotations

import errno
import json
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from adaptok.alloc import InfeasibleBudgetError
from adaptok.data.video_io import VideoDecodeError, decode_video, encode_video
from adaptok.tokenize import (
    CODE_PAD,
    VideoTooShortError,
    load_npz,
    read_windows,
    tokenize_video,
    write_side_by_side,
)
from modules.checkpoint_args import with_model_from_checkpoint
from modules.loading import CheckpointError, load_frozen_scorer
from modules.tokenize_cli import main

torch.set_num_threads(1)

HEIGHT, WIDTH = 40, 48


def moving_shapes(num_frames: int, seed: int = 0) -> np.ndarray:
    """``(T, 40, 48, 3)`` uint8: a square sliding right, a bar sliding down, noise texture."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 60, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    frames = np.repeat(texture[None], num_frames, axis=0)
    for t in range(num_frames):
        x, y = (3 * t) % (WIDTH - 10), (2 * t) % (HEIGHT - 6)
        frames[t, 12:22, x : x + 10] = (230, 40, 40)
        frames[t, y : y + 6, 30:44] = (40, 200, 230)
    return frames


def write_clip(path: Path, num_frames: int, fps: float = 10.0) -> Path:
    """A lossless (crf 0) H.264 mp4 of :func:`moving_shapes`, so any prefix decodes the same."""
    path.write_bytes(encode_video(moving_shapes(num_frames), fps, crf=0))
    return path


@pytest.fixture(scope="module")
def scorer(scorer_ckpt: Path):
    return load_frozen_scorer(scorer_ckpt)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clips") / "shapes.mp4", 20)


def run(scorer, path: Path, **kwargs):
    return tokenize_video(path, scorer.tokenizer, scorer.scorer, **kwargs)


def test_cli_round_trip_per_clip_budget_and_side_by_side_video(
    scorer, scorer_ckpt: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out, mp4 = tmp_path / "tokens.npz", tmp_path / "recon.mp4"
    argv = [str(clip), "--ckpt", str(scorer_ckpt), "--budget", "0.5", "--stride", "4"]
    code = main([*argv, "--out", str(out), "--reconstruct", str(mp4), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "mean tokens per block: 4.000 of 8" in printed and "PSNR" in printed
    assert "not tokenized" not in printed and "enlarged" not in printed

    saved = load_npz(out)
    with np.load(out, allow_pickle=False) as raw:
        assert raw["codes"].dtype == np.uint16 and raw["codes"].shape == (4, 4, 8)
        assert raw["lengths"].dtype == np.int16 and raw["lengths"].shape == (4, 4)
        assert raw["window_starts"].tolist() == [0, 4, 8, 12]
        assert str(raw["mode"]) == "per_clip" and float(raw["budget"]) == 0.5
        assert str(raw["source"]) == str(clip) and str(raw["checkpoint"]) == str(scorer_ckpt)
        assert float(raw["fps"]) == pytest.approx(10.0)
        assert raw["candidate_lengths"].tolist() == [2, 4, 6, 8]
    # per_clip: every window spends exactly K * 0.5 * M = 16 tokens, on candidate lengths
    assert saved.lengths.sum(axis=1).tolist() == [16, 16, 16, 16]
    assert set(saved.lengths.ravel().tolist()) <= {2, 4, 6, 8}
    dropped = np.arange(8)[None, None, :] >= saved.lengths[:, :, None]
    assert (saved.codes[dropped] == CODE_PAD).all() and (saved.codes[~dropped] < 64).all()

    # codes + lengths from the file -> tokenizer.decode reproduces the library's reconstruction
    library = run(scorer, clip, budget=0.5, stride=4)
    assert np.array_equal(library.lengths, saved.lengths)
    assert np.array_equal(library.codes, saved.codes)
    recon = scorer.tokenizer.decode(saved.flat_codes(), torch.from_numpy(saved.lengths).long())
    frames = recon.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 4, 1).numpy()
    assert np.abs(frames.astype(int) - library.reconstruction.astype(int)).max() <= 1
    np.testing.assert_allclose(saved.psnr, library.psnr, rtol=1e-4)

    video = decode_video(mp4)  # 4 + 4 + 4 + 8 frames shown: input | reconstruction
    assert video.shape == (20, 32, 64, 3)
    left, right = video[:4, :, :32].astype(int), video[:4, :, 32:].astype(int)
    assert np.abs(left - library.inputs[0, :4]).mean() < 6
    assert np.abs(right - library.reconstruction[0, :4]).mean() < 6
    # FFmpeg's own mpeg4 encoder (builds without libx264), enlarged 2x
    scaled = decode_video(write_side_by_side(library, tmp_path / "m.mp4", 2, codec="mpeg4"))
    assert scaled.shape == (20, 64, 128, 3)
    assert np.abs(scaled[:4, ::2, 64::2].astype(int) - library.reconstruction[0, :4]).mean() < 10


def test_streaming_is_causal_over_windows_and_meets_each_window_budget(
    scorer, tmp_path: Path
) -> None:
    full = write_clip(tmp_path / "full.mp4", 24)
    prefix = write_clip(tmp_path / "prefix.mp4", 12)
    whole = run(scorer, full, budget=0.5, mode="streaming", stride=4, keep_frames=False)
    start = run(scorer, prefix, budget=0.5, mode="streaming", stride=4, keep_frames=False)
    assert whole.num_windows == 5 and start.num_windows == 2
    assert (whole.lengths.sum(axis=1) == 16).all()
    # later frames never change earlier decisions (the price only carries forward)
    assert np.array_equal(whole.lengths[:2], start.lengths)
    assert np.array_equal(whole.codes[:2], start.codes)


def test_target_mode_takes_the_fewest_tokens_that_reach_the_threshold(scorer, clip) -> None:
    easy = run(scorer, clip, budget=None, mode="target", threshold=1e6, keep_frames=False)
    assert (easy.lengths == 2).all() and np.isnan(easy.budget)
    # the threshold is in the metric's units: the scorer's own label mean/std convert it
    windows = read_windows(clip, 8, scorer.tokenizer.image_size)
    video = torch.from_numpy(windows.frames[windows.starts[0] : windows.starts[0] + 8])
    video = video.permute(3, 0, 1, 2)[None].float() / 255.0
    encoding = scorer.tokenizer.encode(video)
    full = torch.full((1, 4), 8, dtype=torch.long)
    costs = scorer.scorer.to_label_units(scorer.scorer(encoding.latents, encoding.quantized, full))[
        0
    ]  # (K, J) in the metric's units
    ordered = costs.flatten().sort().values
    threshold = float(ordered[7] + ordered[8]) / 2  # between two costs: no ties
    first = run(scorer, clip, budget=None, mode="target", threshold=threshold, keep_frames=False)
    grid = torch.tensor(scorer.scorer.candidate_lengths)
    for block in range(4):
        reached = costs[block] <= threshold
        if reached.any():
            assert first.lengths[0, block] == int(grid[reached].min()), block
    assert easy.window_starts.tolist() == [0, 8] and easy.uncovered_frames == 4
    with pytest.raises(ValueError, match="target mode takes a threshold"):
        run(scorer, clip, budget=0.25, mode="target", threshold=0.2)


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        (0.0, r"budget 0.0 is not a fraction .* in \(0, 1\]; feasible budgets lie in \[0.25, 1\]"),
        (1.5, r"not a fraction .* feasible budgets lie in \[0.25, 1\]"),
        (0.125, r"budget 0.125 \(1 tokens per block\) is infeasible: feasible budgets lie in"),
        (0.3, r"cannot be spent exactly.*not a whole number"),
    ],
)
def test_bad_budgets_are_refused_with_the_feasible_range(scorer, clip, budget, message) -> None:
    with pytest.raises(InfeasibleBudgetError, match=message):
        run(scorer, clip, budget=budget)


def test_bad_inputs_are_refused_with_clear_errors(
    scorer, scorer_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(FileNotFoundError, match="video file not found: .*nothing.mp4"):
        run(scorer, tmp_path / "nothing.mp4")
    short = write_clip(tmp_path / "short.mp4", 5)
    with pytest.raises(VideoTooShortError, match="has 5 frames .* needs 8 frames"):
        run(scorer, short)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 20)
    with pytest.raises(VideoDecodeError, match="notes.mp4 is not a video FFmpeg can read"):
        run(scorer, text)
    with pytest.raises(ValueError, match="unknown mode 'batch'"):
        run(scorer, short, mode="batch")

    out = str(tmp_path / "t.npz")
    cases = [
        ([str(short)], "has 5 frames at 10 fps (0.5 s, 5 decoded), and one tokenizer window"),
        ([str(tmp_path / "gone.mp4")], "video file not found"),
        ([str(text)], "is not a video FFmpeg can read"),
        ([str(short), "--budget", "2"], "feasible budgets lie in [0.25, 1]"),
        ([str(short), "--mode", "fast"], "unknown mode 'fast': choose one of per_clip"),
        ([str(short), "--mode", "target"], "target mode needs --threshold"),
    ]
    for args, message in cases:
        assert main([*args, "--ckpt", str(scorer_ckpt), "--out", out, "--quiet"]) == 2
        assert message in capsys.readouterr().err, args
    assert main([str(short), "--ckpt", str(tmp_path / "no.ckpt"), "--out", out]) == 2
    assert "no.ckpt: no such file or folder; --ckpt takes a scorer" in capsys.readouterr().err
    assert not Path(out).exists()


def test_variable_frame_rate_video_is_sampled_by_time_and_small_video_noted(
    tmp_path: Path,
) -> None:
    """A 30 fps burst then 5 fps: at --fps 5 each frame is the one on screen at k / 5 s."""
    times_ms = [33 * i for i in range(20)] + [860 + 200 * i for i in range(10)]
    path = tmp_path / "vfr.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 24, 20, "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for index, stamp in enumerate(times_ms):
            gray = np.full((20, 24, 3), 8 * index, np.uint8)
            frame = av.VideoFrame.from_ndarray(gray, format="rgb24")
            frame.pts, frame.time_base = stamp, Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    windows = read_windows(path, num_frames=8, image_size=32, stride=2, fps=5.0)
    on_screen = [max(i for i, t in enumerate(times_ms) if t <= 200 * k) for k in range(14)]
    assert len(windows.frames) == 14 and windows.fps == 5.0
    assert windows.frames.shape[1:] == (32, 32, 3) and windows.upscale == pytest.approx(1.6)
    levels = windows.frames.reshape(14, -1).mean(axis=1)
    np.testing.assert_allclose(levels, [8 * i for i in on_screen], atol=3)
    assert windows.starts.tolist() == [0, 2, 4, 6] and windows.uncovered_frames == 0


# ------------------------------------------------------------ checkpoint version and spec
def test_checkpoints_of_another_version_or_an_edited_spec_are_refused_in_one_line(
    scorer_ckpt: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    checkpoint = torch.load(scorer_ckpt, map_location="cpu", weights_only=False)
    hparams = checkpoint["hyper_parameters"]
    hparams["target_mean"] = np.float64(float(hparams["target_mean"]))
    torch.save(checkpoint, tmp_path / "numpy.ckpt")
    hparams["target_mean"] = float(hparams["target_mean"])
    init_args = hparams["tokenizer_spec"]["init_args"]
    size, width = init_args["image_size"], init_args["width"]
    init_args["image_size"] = 2 * size
    torch.save(checkpoint, tmp_path / "size.ckpt")
    init_args["image_size"], init_args["width"] = size, width + 16
    torch.save(checkpoint, tmp_path / "width.ckpt")
    # (adaptok tokenize: load_pretrained, no unpickling; adaptok test|fit --ckpt_path: Lightning)
    shape = r"'{}' has the shape .* in the stored weights but .* in the spec's network"
    mismatch = r"\(tokenizer\): weights do not match the spec; first: " + shape
    expected = {
        "numpy": (
            r"holds a numpy\S+ object, which a safe load refuses; re-save it with plain Python",
            r"hyper_parameters\['target_mean'\] is a numpy.float64",
        ),
        # with token_mixing (the demo recipe) the routes' shapes follow image_size, so the
        # weight-shape check refuses it first; without it only the data-size check can
        "size": (
            mismatch.format(r"\S+_mixing"),
            rf"image_size={2 * size} but the network was trained on data with resolution={size}"
            r"|gives tokenizer\.\S+_mixing the shape .* but the stored weights have",
        ),
        "width": (
            mismatch.format(r"\S+"),
            r"gives tokenizer\.\S+ the shape .* but the stored weights have",
        ),
    }
    out = str(tmp_path / "t.npz")
    for name, (message, lightning) in expected.items():
        path = tmp_path / f"{name}.ckpt"
        assert main([str(clip), "--ckpt", str(path), "--out", out, "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and re.search(message, err), err
        assert err.startswith(f"adaptok tokenize: error: --ckpt {path}"), err
        if name != "numpy":  # an unusable source: no mode would take it, none is suggested
            assert "use the checkpoint as its fit wrote it" in err and "--mode" not in err, err
            argv = [str(clip), "--ckpt", str(path), "--out", out, "--mode", "uniform"]
            assert main([*argv, "--quiet"]) == 2
            assert "--mode" not in capsys.readouterr().err
        with pytest.raises(CheckpointError, match=lightning):  # adaptok test|fit --ckpt_path
            with_model_from_checkpoint(["test", "--ckpt_path", str(path)])
    assert not Path(out).exists()


def test_a_two_stream_file_is_tokenized_from_its_main_stream_and_noted(
    scorer_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "two.mkv"
    with av.open(str(path), "w") as out:
        streams = [out.add_stream("libx264", rate=10) for _ in range(2)]
        for stream, (height, width) in zip(streams, ((16, 16), (HEIGHT, WIDTH))):
            stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        streams[1].disposition = av.stream.Disposition.default
        frames = moving_shapes(16)
        for i in range(16):
            if i < 4:
                small = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), "rgb24")
                small.pts = i
                out.mux(streams[0].encode(small))
            frame = av.VideoFrame.from_ndarray(frames[i], "rgb24")
            frame.pts = i
            out.mux(streams[1].encode(frame))
        for stream in streams:
            out.mux(stream.encode(None))
    out_path = tmp_path / "two.npz"
    assert main([str(path), "--ckpt", str(scorer_ckpt), "--out", str(out_path), "--quiet"]) == 0
    assert "note: 2 video streams; stored stream 1 (best)" in capsys.readouterr().out
    saved = load_npz(out_path)
    assert saved.total_frames == 16
    assert json.loads(saved.adjustments)["stream"]["chosen"] == 1
    assert json.loads(saved.source_video)["video_streams"] == 2
    assert (
        main([str(path), "--ckpt", str(scorer_ckpt), "--out", str(out_path), "--stream", "0"]) == 2
    )
    assert "too short" in capsys.readouterr().err  # the 4-frame preview, as asked
    assert (
        main([str(path), "--ckpt", str(scorer_ckpt), "--out", str(out_path), "--stream", "3"]) == 2
    )
    assert "stream 3 does not exist (choose 0..1)" in capsys.readouterr().err


def test_a_failed_output_write_is_one_line_and_leaves_nothing(
    scorer_ckpt: Path, clip: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", full)
    out = tmp_path / "t.npz"
    assert main([str(clip), "--ckpt", str(scorer_ckpt), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"adaptok tokenize: error: [Errno 28] cannot write {out}: No space left on device; nothing was written"
    )
    assert list(tmp_path.iterdir()) == []
