"""``adaptok tokenize``: what ``--ckpt`` takes, and one-line refusals of files it cannot use.

The networks are the tiny converted official ones (``conftest.converted``: 8 frames, 4 blocks
x 8 tokens, candidates 2/4/6/8, an LPIPS scorer), so nothing is trained here; clips are
encoded with the suite's own encoder (:func:`adaptok.data.video_io.encode_video`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from adaptok import load_pretrained
from adaptok.data.video_io import VideoDecodeError, encode_video
from adaptok.export import export
from adaptok.tokenize import VideoTooShortError, load_npz, read_windows
from modules.tokenize_cli import build_parser, describe_source, load_model, main

torch.set_num_threads(1)


def _clip(path: Path, num_frames: int) -> Path:
    frames = np.random.default_rng(0).integers(0, 255, (num_frames, 24, 32, 3), dtype=np.uint8)
    path.write_bytes(encode_video(frames, 10.0, crf=0))
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _clip(tmp_path_factory.mktemp("clips") / "clip.mp4", 16)


@pytest.fixture(scope="module")
def exports(converted, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exports")
    return {name: export(converted[name], root / name) for name in ("scorer", "tokenizer")}


def _tokenize(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ------------------------------------------------------------------------------ --ckpt
def test_a_scorer_export_folder_works_like_its_checkpoint(
    converted, exports, clip: Path, tmp_path: Path, capsys
) -> None:
    outs = {}
    for name, source in (("ckpt", converted["scorer"]), ("export", exports["scorer"])):
        outs[name] = tmp_path / f"{name}.npz"
        argv = [str(clip), "--ckpt", str(source), "--budget", "0.5", "--out", str(outs[name])]
        code, _, err = _tokenize([*argv, "--quiet"], capsys)
        assert code == 0, err
    from_ckpt, from_export = load_npz(outs["ckpt"]), load_npz(outs["export"])
    assert np.array_equal(from_ckpt.codes, from_export.codes)
    assert np.array_equal(from_ckpt.lengths, from_export.lengths)
    assert (from_export.lengths.sum(axis=1) == 16).all()
    assert from_ckpt.metric == from_export.metric == "lpips"


@pytest.mark.parametrize("kind", ["checkpoint", "export"])
def test_a_source_without_a_scorer_says_what_it_is_and_what_would_work(
    converted, exports, clip: Path, tmp_path: Path, capsys, kind: str
) -> None:
    source = converted["tokenizer"] if kind == "checkpoint" else exports["tokenizer"]
    out = tmp_path / "t.npz"
    code, _, err = _tokenize([str(clip), "--ckpt", str(source), "--out", str(out)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"--ckpt {source} is a" in err and "with networks: tokenizer (no scorer)" in err
    assert "--mode per_clip allocates by a scorer's predicted costs" in err
    assert "a scorer stage checkpoint" in err and "`adaptok export`" in err
    assert "--mode uniform" in err and "not found" not in err
    assert not out.exists()

    # what the message offers works: uniform keeps round(0.5 * 8) = 4 tokens in every block
    argv = [str(clip), "--ckpt", str(source), "--mode", "uniform", "--budget", "0.5"]
    code, printed, err = _tokenize([*argv, "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    assert "mode uniform (budget 0.5 = 4 tokens in every block, no scorer" in printed
    saved = load_npz(out)
    assert (saved.lengths == 4).all() and saved.mode == "uniform" and saved.metric == ""
    assert saved.candidate_lengths.tolist() == list(range(1, 9))


def test_a_missing_path_a_plain_folder_or_another_file_is_named_with_what_ckpt_takes(
    clip: Path, tmp_path: Path, capsys
) -> None:
    out = str(tmp_path / "t.npz")
    folder = tmp_path / "plain"
    folder.mkdir()
    cases = {
        tmp_path / "none.ckpt": "none.ckpt: no such file or folder; --ckpt takes a scorer stage",
        folder: "is not an adaptok export (needs spec.json and model.safetensors",
        clip: "is not a checkpoint (torch.save writes a zip archive",  # the video, twice
    }
    for source, message in cases.items():
        code, _, err = _tokenize([str(clip), "--ckpt", str(source), "--out", out], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"--ckpt {source}" in err and message in err, err
        assert "runs/demo/scorer/checkpoints/last.ckpt" in err and "--mode uniform" in err


@pytest.mark.parametrize("mode", ["per_clip", "uniform"])
def test_a_file_that_is_not_a_checkpoint_is_refused_in_one_line(
    clip: Path, tmp_path: Path, capsys, mode: str
) -> None:
    notes = tmp_path / "notes.ckpt"
    notes.write_text("weights: see the wiki\n" * 10)
    argv = [str(clip), "--ckpt", str(notes), "--mode", mode, "--out", str(tmp_path / "t.npz")]
    code, printed, err = _tokenize(argv, capsys)
    assert code == 2 and printed == "", err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith(f"adaptok tokenize: error: --ckpt {notes} is not a checkpoint "), err
    assert "Weights only" not in err and "pickle" in err, err  # why, not torch.load's advice
    works = "--mode uniform takes any stage's checkpoint" if mode == "uniform" else "scorer stage"
    assert works in err, err


def test_load_model_reads_stage_networks_and_metric_once(converted, exports) -> None:
    cpu = torch.device("cpu")
    scorer = load_model(converted["scorer"], "per_clip", cpu)
    assert scorer.scorer is not None and scorer.generator is None
    assert scorer.info["metric"] == "lpips"
    assert describe_source(converted["scorer"], scorer) == (
        "a ScorerModule checkpoint with networks: tokenizer, scorer"
    )
    folder = load_model(exports["tokenizer"], "uniform", cpu)
    assert folder.scorer is None and "metric" not in folder.info
    assert describe_source(exports["tokenizer"], folder).endswith(
        "export folder with networks: tokenizer"
    )


def test_uniform_mode_takes_a_scorer_checkpoint_and_prints_the_count_kept(
    converted, clip: Path, tmp_path: Path, capsys
) -> None:
    """0.3 * 8 = 2.4 tokens: every block keeps round(2.4) = 2, and the summary says 2."""
    out = tmp_path / "t.npz"
    argv = [str(clip), "--ckpt", str(converted["scorer"]), "--mode", "uniform"]
    code, printed, err = _tokenize([*argv, "--budget", "0.3", "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    assert "mode uniform (budget 0.3 = 2 tokens in every block, no scorer" in printed, printed
    assert "2.4" not in printed.splitlines()[0], printed
    saved = load_npz(out)
    assert (saved.lengths == 2).all() and saved.mode == "uniform" and saved.metric == ""
    assert saved.candidate_lengths.tolist() == list(range(1, 9))  # the scorer is not used


# ------------------------------------------------------------------------------ target
def test_target_threshold_units_are_the_scorers_metric(
    converted, clip: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "t.npz"
    argv = [str(clip), "--ckpt", str(converted["scorer"]), "--mode", "target", "--out", str(out)]
    code, _, err = _tokenize(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "target mode needs --threshold" in err
    assert "the metric this scorer was trained on, lpips (LPIPS distance" in err
    code, printed, err = _tokenize([*argv, "--threshold", "0.3", "--quiet"], capsys)
    assert code == 0, err
    assert "mode target (threshold 0.3 of the scorer's cost metric lpips" in printed
    assert load_npz(out).metric == "lpips"
    code, _, err = _tokenize(
        [*argv[:4], "per_clip", "--threshold", "0.3", "--out", str(out)], capsys
    )
    assert code == 2 and "--threshold is only used in target mode, not per_clip" in err


def test_threshold_help_names_every_metrics_units() -> None:
    text = " ".join(build_parser().format_help().split())
    assert "mse: mean squared error of pixels in [0, 1]" in text and "e.g. 0.01" in text
    assert "lpips: LPIPS distance" in text and "-PSNR in dB" in text
    assert "The demo scorer predicts MSE, the paper's LPIPS" in text
    assert "a scorer stage checkpoint" in text and "with --mode uniform also a tokenizer" in text


# ------------------------------------------------------------------------------ video files
def test_files_that_are_no_usable_video_are_refused_in_one_line_before_any_progress(
    converted, tmp_path: Path, capsys
) -> None:
    garbage = tmp_path / "notes.mp4"
    garbage.write_text("not a video at all\n" * 20)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    short = _clip(tmp_path / "short.mp4", 5)
    cases = {
        garbage: (
            f"{garbage} is not a video FFmpeg can read (Invalid data found when processing "
            "input); give a video file FFmpeg can decode, e.g. .mp4"
        ),
        empty: f"{empty} is empty (0 bytes), not a video; give a video file FFmpeg can decode",
        tmp_path / "gone.mp4": f"video file not found: {tmp_path / 'gone.mp4'} (no such file",
        tmp_path: f"{tmp_path} is a folder, not a video file",
        short: (
            f"{short} is too short: it has 5 frames at 10 fps (0.5 s, 5 decoded), and one "
            "tokenizer window needs 8 frames; give a video of at least 8 frames (0.8 s at 10 "
            "fps), or take frames at a higher rate with `fps=` (`--fps` on the command line)"
        ),
    }
    out = tmp_path / "t.npz"
    for video, message in cases.items():
        # no --quiet: a progress bar would start here, but a refusal comes before it
        argv = [str(video), "--ckpt", str(converted["scorer"]), "--out", str(out)]
        code, printed, err = _tokenize(argv, capsys)
        assert code == 2, video
        assert err.startswith("adaptok tokenize: error: "), err
        # a progress bar (tqdm, on stderr) would add "\r" redraws or lines to the refusal
        assert err.count("\n") == 1 and err.endswith("\n") and "\r" not in err, err
        assert message in err, err
        assert "Errno" not in err and err.count("cannot") == 0, err
        assert printed == ""
    assert not out.exists()


def test_the_library_refuses_the_same_files_with_the_same_messages(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mkv"
    empty.write_bytes(b"")
    with pytest.raises(VideoDecodeError, match=r"empty\.mkv is empty \(0 bytes\)"):
        read_windows(empty, 8, 16)
    with pytest.raises(VideoTooShortError, match=r"at least 8 frames \(0\.8 s at 10 fps\)"):
        read_windows(_clip(tmp_path / "short.mp4", 6), 8, 16)
    # the window count a longer clip needs is met at a higher rate (frames repeated)
    assert len(read_windows(tmp_path / "short.mp4", 8, 16, fps=15.0).starts) == 1


# ------------------------------------------------------------------------------ the npz
def test_the_npz_holds_what_the_readme_documents(
    converted, clip: Path, tmp_path: Path, capsys
) -> None:
    """Keys, dtypes, shapes and the pad value of README "Tokenize your own video"."""
    out = tmp_path / "t.npz"
    argv = [str(clip), "--ckpt", str(converted["scorer"]), "--budget", "0.5", "--stride", "4"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0, capsys.readouterr().err
    windows, blocks, tokens = 3, 4, 8  # 16 frames, windows of 8 every 4
    expected = {
        "codes": ("uint16", (windows, blocks, tokens)),
        "lengths": ("int16", (windows, blocks)),
        "window_starts": ("int64", (windows,)),
        "candidate_lengths": ("int64", (4,)),
        "psnr": ("float64", (windows,)),
        "ssim": ("float64", (windows,)),
        "budget": ("float64", ()),
        "threshold": ("float64", ()),
        "metric": ("str", ()),
        "mode": ("str", ()),
        "solver": ("str", ()),
        "source": ("str", ()),
        "checkpoint": ("str", ()),
        "fps": ("float64", ()),
        "tokens_per_block": ("int64", ()),
        "num_frames": ("int64", ()),
        "image_size": ("int64", ()),
        "total_frames": ("int64", ()),
        "upscale": ("float64", ()),
        "source_video": ("str", ()),
        "adjustments": ("str", ()),
    }
    with np.load(out, allow_pickle=False) as saved:
        found = {
            key: (
                "str" if saved[key].dtype.kind == "U" else str(saved[key].dtype),
                saved[key].shape,
            )
            for key in saved.files
        }
        assert found == expected
        lengths, codes = saved["lengths"], saved["codes"]
        dropped = np.arange(tokens)[None, None, :] >= lengths[:, :, None]
        assert (codes[dropped] == 65535).all() and (codes[~dropped] < 65535).all()
        assert saved["window_starts"].tolist() == [0, 4, 8]
        assert np.isnan(saved["threshold"].item()) and saved["budget"].item() == 0.5
        assert saved["metric"].item() == "lpips" and saved["mode"].item() == "per_clip"
        assert saved["total_frames"].item() == 16 and saved["num_frames"].item() == 8
        # decoded back as the README says, from the arrays as stored (pads included)
        model = load_pretrained(converted["scorer"])
        video = model.detokenize(codes, lengths)
        size = model.image_size
        assert video.shape == (windows, 3, 8, size, size) and torch.isfinite(video).all()
