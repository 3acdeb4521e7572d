"""Real-world inputs, set 2, the kinds left after ``test_field_inputs_2.py``: token shards next
to video shards in ``verify``, the source checks of ``--keep-original``, containers with
dropped or duplicated frames, bounded memory while tokenizing, and a quiet ``tokenize``.

Every input is made here (PyAV, numpy); nothing is read from outside ``tests/``.
"""

from __future__ import annotations

import io
import json
import tarfile
from functools import partial
from pathlib import Path

import numpy as np

from adaptok.data.cli import main
from adaptok.data.synthetic import synthetic_tasks
from adaptok.data.writer import ClipTask, ShardOptions, read_video_file, write_shards
from adaptok.tokenize import read_windows
from callbacks.annotation_writer import AnnotationWriter, _AnnotationSink
from tests.data.test_field_inputs_2 import (
    _avi_with_dropped_frames,
    _concatenated_mpeg,
    _rgba,
    folder,
    make_video,
    metas,
    stored_frames,
)

# ------------------------------------------------------------------ token shards in verify
_TOKEN_INFO = {
    "budgets": [0.25, 1.0],
    "candidate_lengths": [2, 4, 6, 8],
    "num_blocks": 4,
    "tokens_per_block": 8,
    "codebook_size": 64,
    "allocation": "per_clip",
    "condition_frames": None,
    "tokenizer": {"ckpt": "x.ckpt", "sha256": "0" * 64, "scorer_sha256": "1" * 64},
}


def _prediction(count: int, seed: int = 0) -> dict:
    """What ``AnnotatorModule.predict_step`` returns for ``count`` windows."""
    rng = np.random.default_rng(seed)
    return {
        "key": [f"clip{i}_w00000" for i in range(count)],
        "source_key": [f"clip{i}" for i in range(count)],
        "label": [i % 2 for i in range(count)],
        "class_name": [f"class{i % 2}" for i in range(count)],
        "window_start": [0] * count,
        "codes": rng.integers(0, 64, (count, 4, 8)),
        "costs": rng.random((count, 4, 4)),
        "lengths": rng.choice([2, 4, 6, 8], size=(count, 2, 4)),
    }


def _token_shard(folder: Path, count: int = 3) -> Path:
    """A finished annotation shard (and its sidecar) written by the annotation writer."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = AnnotationWriter(str(folder), progress=False, summary=False)
    writer.info = dict(_TOKEN_INFO)
    sink = _AnnotationSink(folder, "train", 0, 100, writer.info)
    prediction = _prediction(count)
    for i, key in enumerate(prediction["key"]):
        sink.add(key, writer._sample_files(prediction, i))
    sink.close()
    return folder / "train-000000.tar"


def _rewrite(shard: Path, change: dict[str, bytes | None]) -> None:
    """Replace (bytes) or drop (None) members of a shard, keeping the member order."""
    with tarfile.open(shard) as archive:
        members = [(m.name, archive.extractfile(m).read()) for m in archive.getmembers()]
    with tarfile.open(shard, "w") as archive:
        for name, data in members:
            data = change.get(name, data)
            if data is None:
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_verify_checks_token_shards_as_token_shards(tmp_path: Path, capsys) -> None:
    """A data folder after annotation holds video and token shards: neither is corrupt."""
    tasks = synthetic_tasks(2, seed=0, num_frames=8, val_fraction=0.0)
    write_shards(tasks, tmp_path / "data/synthetic", ShardOptions(size=32), progress=False)
    shard = _token_shard(tmp_path / "data/tokens")
    assert main(["verify", str(tmp_path / "data")]) == 0
    report = capsys.readouterr().out
    assert "corrupt: 0" in report
    assert "tokens 4x8, 2 budgets (3)" in report and "tokens/train 3" in report
    assert "synthetic/train" in report and "32x32 (2)" in report

    # Inconsistent token samples are corrupt, each with its reason.
    _rewrite(
        shard,
        {
            "clip0_w00000.lengths.npy": _npy(np.full((2, 4), 9, np.int16)),
            "clip1_w00000.codes.npy": _npy(np.zeros((4, 8, 2), np.uint16)),
            "clip2_w00000.json": None,
        },
    )
    assert main(["verify", str(tmp_path / "data")]) == 1
    report = capsys.readouterr().out
    assert "corrupt: 3" in report, report
    assert "clip0_w00000: lengths.npy holds 9..9, outside 1..8" in report
    assert "clip1_w00000: codes.npy is uint16 (4, 8, 2), not integer (K, M)" in report
    assert "clip2_w00000: token sample without json" in report
    assert "no video member" not in report


def test_verify_reports_a_token_shard_its_sidecar_disagrees_with(tmp_path: Path, capsys) -> None:
    shard = _token_shard(tmp_path / "tokens", count=2)
    sidecar = shard.with_name(shard.name + ".keys.json")
    index = json.loads(sidecar.read_text())
    index["keys"] = index["keys"][:1]
    sidecar.write_text(json.dumps(index))
    assert main(["verify", str(tmp_path / "tokens")]) == 1
    assert "train-000000.tar.keys.json lists 1 keys, the shard holds 2" in capsys.readouterr().out


def test_the_shard_writer_refuses_a_folder_of_token_shards(tmp_path: Path, capsys) -> None:
    """The mirror case: video shards written into an annotation folder would take its
    windows for finished clips and delete an annotation run's temporary file as stale."""
    _token_shard(tmp_path / "tokens")
    running = tmp_path / "tokens/.train-000001.tar.tmp"
    running.write_bytes(b"an annotation run writing")
    argv = ["synthetic", "--num-clips", "2", "--num-frames", "8", "--size", "32", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "tokens")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train-000000.tar is a token annotation shard" in err
    assert running.is_file()


def test_an_unreadable_shard_in_the_output_folder_is_named_in_one_line(
    tmp_path: Path, capsys
) -> None:
    """A re-run resumes from the finished shards of its folder; a damaged one was a traceback."""
    out = tmp_path / "shards"
    out.mkdir()
    (out / "train-000000.tar").write_bytes(b"not a tar archive" * 100)
    argv = ["synthetic", "--num-clips", "2", "--num-frames", "8", "--size", "32", "--quiet"]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "train-000000.tar is in the output folder but cannot be read as a shard" in err


# ------------------------------------------------------------------ --keep-original: same record
def _by_class(folder_path: Path) -> dict[str, dict]:
    return {meta["class_name"]: meta for meta in metas(folder_path).values()}


def test_kept_originals_record_the_source_as_the_re_encoding_does(tmp_path: Path, capsys) -> None:
    """Every frame is checked: all 12 frames are transparent, the timeline jumps back once."""
    make_video(tmp_path / "in/train/alpha/a.mov", _rgba(12), "png", pix="rgba", src="rgba")
    _concatenated_mpeg(tmp_path / "in/train/cat/cat.mpg")
    assert folder(tmp_path / "in", tmp_path / "encoded") == 0
    capsys.readouterr()
    assert folder(tmp_path / "in", tmp_path / "original", "--keep-original") == 0
    printed = capsys.readouterr().out
    encoded, original = _by_class(tmp_path / "encoded"), _by_class(tmp_path / "original")
    assert original["alpha"]["adjustments"]["alpha"]["transparent_frames"] == 12
    assert original["cat"]["adjustments"]["timestamps"]["backward_jumps"] == 1
    for name in ("alpha", "cat"):
        assert original[name]["source_video"] == encoded[name]["source_video"]
        for kind in ("alpha", "timestamps", "tone_mapped", "deinterlaced"):
            assert original[name]["adjustments"].get(kind) == encoded[name]["adjustments"].get(
                kind
            ), (name, kind)
    assert "alpha: 1" in printed and "timestamps: 1" in printed
    adjusted = json.loads((tmp_path / "original/manifest.json").read_text())["adjusted"]
    assert adjusted["alpha"] == 1 and adjusted["timestamps"] == 1


# ------------------------------------------------------------------ dropped / duplicated frames
def test_a_timeline_with_dropped_frames_keeps_its_duration_and_is_recorded(
    tmp_path: Path, capsys
) -> None:
    """20 frames at 25 fps with a frame missing after every 4th: 0.96 s, not 0.8 s."""
    source = _avi_with_dropped_frames(tmp_path / "avi/train/jump/v_drop.avi")
    assert folder(tmp_path / "avi", tmp_path / "out") == 0
    printed = capsys.readouterr()
    assert "irregular_timestamps: 1" in printed.out
    assert "timestamps uneven at the nominal 25 fps (4 gap(s) leaving out 4" in printed.err
    (meta,) = metas(tmp_path / "out").values()
    assert (meta["frames"], meta["fps"], meta["source_frames"]) == (24, 25.0, 20)
    irregular = meta["adjustments"]["irregular_timestamps"]
    assert (irregular["gaps"], irregular["missing_frames"], irregular["close_frames"]) == (4, 4, 0)
    assert (irregular["frames_repeated"], irregular["frames_dropped"]) == (4, 0)
    assert irregular["rule"].startswith("resampled to the nominal 25 fps")
    shown = [0, 1, 2, 3, 3, 4, 5, 6, 7, 7, 8, 9, 10, 11, 11, 12, 13, 14, 15, 15, 16, 17, 18, 19]
    assert meta["source_frame_indices"] == shown  # each gap repeats the frame before it
    (stored,) = stored_frames(tmp_path / "out").values()
    np.testing.assert_allclose(stored.mean(axis=(1, 2, 3)), [10 * i for i in shown], atol=6)

    # --frame-stride applies to the resampled timeline
    assert folder(tmp_path / "avi", tmp_path / "stride", "--frame-stride", "2") == 0
    (meta,) = metas(tmp_path / "stride").values()
    assert meta["source_frame_indices"] == shown[::2] and meta["fps"] == 12.5

    # A reader that decodes into memory (not streamed) resamples the same way.
    task = ClipTask("v", "train", 0, "jump", str(source), partial(read_video_file, source))
    summary = write_shards([task], tmp_path / "memory", ShardOptions(), progress=False)
    assert summary.adjusted["irregular_timestamps"] == 1
    (meta,) = metas(tmp_path / "memory").values()
    assert meta["source_frame_indices"] == shown

    # Kept as is: recorded and counted, with what it means.
    assert folder(tmp_path / "avi", tmp_path / "orig", "--keep-original") == 0
    assert "irregular_timestamps: 1" in capsys.readouterr().out
    (meta,) = metas(tmp_path / "orig").values()
    assert meta["frames"] == 20
    assert meta["adjustments"]["irregular_timestamps"]["rule"].startswith("stored as is")

    # `adaptok tokenize` takes the same 24 frames and says so.
    windows = read_windows(source, 8, 32)
    assert len(windows.frames) == 24
    assert windows.adjustments["irregular_timestamps"]["frames_repeated"] == 4


# ------------------------------------------------------------------ one shard sink for both writers
def test_an_annotation_shard_that_fails_to_close_leaves_no_temporary_file(tmp_path: Path) -> None:
    """The annotation writer drops a failed shard as ``adaptok-shards`` does (disk full)."""
    writer = AnnotationWriter(str(tmp_path), progress=False, summary=False)
    writer.info = dict(_TOKEN_INFO)
    sink = _AnnotationSink(tmp_path, "train", 0, 100, writer.info)
    prediction = _prediction(1)
    sink.add("clip0_w00000", writer._sample_files(prediction, 0))
    assert sink.temporary().is_file()

    def full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    sink.archive.close = full  # what closing does when the disk is full
    sink.abandon()  # must not raise
    assert list(tmp_path.iterdir()) == []
    assert sink.stats.keys == [] and sink.count == 0


def test_resampling_a_timeline_the_reader_did_not_flag_is_recorded() -> None:
    """Jittered timestamps within the reader's tolerance can still repeat or drop frames."""
    from adaptok.data.video_io import note_resampling

    adjustments: dict = {}
    note_resampling(adjustments, 25.0, None, repeated=2, dropped=1)
    entry = adjustments["irregular_timestamps"]
    assert entry["frames_repeated"] == 2 and entry["frames_dropped"] == 1
    untouched: dict = {}
    note_resampling(untouched, 25.0, None, repeated=0, dropped=0)
    assert untouched == {}
