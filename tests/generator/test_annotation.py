"""Token annotation: AnnotatorModule + VideoWindowsDataModule + AnnotationWriter, real runs."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import webdataset as wds
from token_helpers import annotate_args, read_annotations

from adaptok.data.video_io import encode_video
from callbacks.annotation_writer import AnnotationWriter
from datamodules.video_windows import VideoWindowsDataModule, window_starts
from modules.annotator import AnnotatorModule
from modules.cli import run_cli

pytestmark = pytest.mark.filterwarnings("ignore:num_workers=")


def test_window_starts() -> None:
    assert window_starts(16, 8, 4) == [0, 4, 8]
    assert window_starts(17, 8, 4) == [0, 4, 8]
    assert window_starts(7, 8, 1) == []
    assert window_starts(9, 4, 1, frame_stride=2) == [0, 1, 2]


def test_every_window_once_in_order(window_shards: Path) -> None:
    data = VideoWindowsDataModule(
        str(window_shards / "train-*.tar"), num_frames=8, stride=4, resolution=32, batch_size=4
    )
    data.num_workers = 0
    keys, starts = [], []
    for batch in data.predict_dataloader():
        assert batch["video"].shape[1:] == (3, 8, 32, 32)
        assert float(batch["video"].min()) >= 0.0 and float(batch["video"].max()) <= 1.0
        keys += batch["key"]
        starts += batch["window_start"].tolist()
    assert len(keys) == len(set(keys)) == 6 * 3 == data.expected_windows()
    assert sorted(set(starts)) == [0, 4, 8]
    assert all(k.endswith(f"_w{s:05d}") for k, s in zip(keys, starts, strict=True))


def test_annotations_identical_for_batch_sizes_1_and_8(
    tmp_path: Path, window_shards: Path, scorer_ckpt: Path, annotated_tokens: Path
) -> None:
    """Per-clip allocation: a window's annotation does not depend on its batch-mates."""
    out = tmp_path / "batch1"
    config = annotate_args(
        tmp_path, out, predict_urls=str(window_shards / "train-*.tar"), stride=4, batch_size=1
    )
    run_cli(["predict", *config, f"--model.init_args.scorer_ckpt={scorer_ckpt}"])
    single, batched = read_annotations(out), read_annotations(annotated_tokens)
    assert len(single) == len(batched) == 18
    assert single.keys() == batched.keys()
    lengths_vary = False
    for key, one in single.items():
        eight = batched[key]
        np.testing.assert_array_equal(one["codes.npy"], eight["codes.npy"])
        np.testing.assert_array_equal(one["lengths.npy"], eight["lengths.npy"])
        np.testing.assert_allclose(one["costs.npy"], eight["costs.npy"], rtol=1e-5, atol=1e-6)
        assert one["json"] == eight["json"]
        lengths_vary |= len(np.unique(one["lengths.npy"][1])) > 1
    # the format: dtypes, shapes, and budgets met exactly (equality IPAL, per clip)
    sample = next(iter(single.values()))
    meta = sample["json"]
    blocks, size = meta["num_blocks"], meta["tokens_per_block"]
    assert sample["codes.npy"].dtype == np.uint16 and sample["codes.npy"].shape == (blocks, size)
    assert sample["costs.npy"].dtype == np.float32
    assert sample["costs.npy"].shape == (blocks, len(meta["candidate_lengths"]))
    assert sample["lengths.npy"].dtype == np.int16
    assert sample["lengths.npy"].shape == (len(meta["budgets"]), blocks)
    assert int(sample["codes.npy"].max()) < meta["codebook_size"]
    assert len(meta["tokenizer"]["sha256"]) == 64
    for files in single.values():
        means = files["lengths.npy"].astype(float).mean(axis=1)
        np.testing.assert_allclose(means, np.asarray(meta["budgets"]) * size)
        assert set(np.unique(files["lengths.npy"])) <= set(meta["candidate_lengths"])
    assert lengths_vary, "every 50 % allocation is uniform: the test shows nothing"
    summary = (annotated_tokens / "annotation_summary.md").read_text()
    assert "- windows: 18" in summary and "Histogram" in summary
    # per_clip: every window spends exactly K x budget (no spread of clip totals)
    assert "| 0.5 | 16 | 16.0 | 0.0 | 16 | 16 | 16 | 16 | 16 |" in summary


class _CrashAfterFirstShard(pl.Callback):
    """Fault injection: raise once the writer has renamed its first finished shard."""

    def __init__(self, writer: AnnotationWriter) -> None:
        self.writer = writer

    def on_predict_batch_end(self, *args: object, **kwargs: object) -> None:
        if self.writer.sink is not None and self.writer.sink.finished:
            raise RuntimeError("simulated crash")


def _annotate(
    scorer_ckpt: Path,
    shards: Path,
    out: Path,
    batch_size: int,
    crash: bool = False,
    budgets: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0),
    on_mismatch: str = "error",
) -> AnnotationWriter:
    writer = AnnotationWriter(
        str(out), samples_per_shard=4, progress=False, on_mismatch=on_mismatch
    )  # type: ignore[arg-type]
    callbacks: list[pl.Callback] = [writer]
    if crash:
        callbacks.append(_CrashAfterFirstShard(writer))
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=callbacks
    )
    data = VideoWindowsDataModule(str(shards / "train-*.tar"), stride=4, batch_size=batch_size)
    data.num_workers = 0
    module = AnnotatorModule(str(scorer_ckpt), budgets=list(budgets))
    trainer.predict(module, datamodule=data, return_predictions=False)
    return writer


def test_interrupted_writer_resumes_without_loss_or_duplicates(
    tmp_path: Path, window_shards: Path, scorer_ckpt: Path, annotated_tokens: Path
) -> None:
    out = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        _annotate(scorer_ckpt, window_shards, out, batch_size=3, crash=True)
    finished = sorted(p.name for p in out.glob("*.tar"))
    assert finished == ["train-000000.tar"]
    assert not list(out.glob(".*.tmp")), "the unfinished shard must not be left behind"
    first = read_annotations(out)
    assert len(first) == 4
    # A killed process leaves its temporary shard: the next run must drop it.
    stale = out / ".train-000001.tar.tmp"
    stale.write_bytes(b"half a tar")
    writer = _annotate(scorer_ckpt, window_shards, out, batch_size=5)
    assert not stale.exists()
    assert writer.written == 18 - 4 and writer.duplicates == 0
    resumed, reference = read_annotations(out), read_annotations(annotated_tokens)
    assert resumed.keys() == reference.keys()
    for key, files in resumed.items():
        np.testing.assert_array_equal(files["codes.npy"], reference[key]["codes.npy"])
        np.testing.assert_array_equal(files["lengths.npy"], reference[key]["lengths.npy"])
    for key in first:  # what the first run finished is kept as it was
        np.testing.assert_array_equal(first[key]["codes.npy"], resumed[key]["codes.npy"])
    assert "train-000000.tar" in {p.name for p in out.glob("*.tar")}
    # A third run finds everything done and writes nothing new.
    again = _annotate(scorer_ckpt, window_shards, out, batch_size=8)
    assert again.written == 0
    assert read_annotations(out).keys() == reference.keys()
    summary = (out / "annotation_summary.md").read_text()
    assert "- windows: 18" in summary


def test_frame_prediction_stores_condition_codes(scorer_ckpt: Path) -> None:
    module = AnnotatorModule(str(scorer_ckpt), budgets=[0.5, 1.0], condition_frames=3)
    clips = np.random.default_rng(0).random((2, 3, 8, 32, 32), dtype=np.float32)
    video = torch.from_numpy(clips)
    batch = {
        "video": video,
        "key": ["a_w00000", "b_w00000"],
        "label": torch.tensor([0, 1]),
        "class_name": ["x", "y"],
        "window_start": torch.tensor([0, 0]),
    }
    out = module.predict_step(batch, 0)
    assert out["cond"].shape == out["codes"].shape == (2, 4, 8) and out["cond"].dtype == np.uint16
    condition = module.condition_clip(video)
    assert torch.equal(condition[:, :, 3:], video[:, :, 2:3].expand(-1, -1, 5, -1, -1))
    expected, _ = module.encode_codes(condition)
    np.testing.assert_array_equal(out["cond"], expected.numpy())
    np.testing.assert_array_equal(out["lengths"][:, 1], np.full((2, 4), 8))


def test_bad_settings_are_refused(scorer_ckpt: Path) -> None:
    with pytest.raises(ValueError, match="budgets must be fractions"):
        AnnotatorModule(str(scorer_ckpt), budgets=[0.5, 1.5])
    with pytest.raises(ValueError, match="independent of batch-mates"):
        AnnotatorModule(str(scorer_ckpt), allocation="batch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="infeasible|cannot be met"):
        AnnotatorModule(str(scorer_ckpt), budgets=[0.125])  # 1 token < the shortest candidate (2)
    data = VideoWindowsDataModule("unused", num_frames=16)
    with pytest.raises(ValueError, match="num_frames=16 but the tokenizer"):
        data.configure_clip(8, 32)


def test_bad_videos_are_counted_skips(tmp_path: Path, window_shards: Path) -> None:
    source = next(iter(wds.DataPipeline(
        wds.SimpleShardList([str(sorted(window_shards.glob("train-*.tar"))[0])]),
        wds.tarfile_to_samples(),
    )))  # fmt: skip
    short = encode_video(np.zeros((4, 32, 32, 3), dtype=np.uint8), fps=25.0)
    samples = [
        {"__key__": "corrupt", "mp4": b"not a video at all", "json": b'{"label": 0}'},
        {"__key__": "short", "mp4": short, "json": json.dumps({"label": 1}).encode()},
        {"__key__": "novideo", "json": b"{}"},
        {"__key__": "badmeta", "mp4": short, "json": b"[1, 2]"},
        {"__key__": "good", "mp4": source["mp4"], "json": source["json"]},
    ]
    shard = tmp_path / "bad-000000.tar"
    with wds.TarWriter(str(shard)) as sink:
        for sample in samples:
            sink.write(sample)
    data = VideoWindowsDataModule(str(shard), num_frames=8, stride=4, resolution=32)
    data.num_workers = 0
    keys = []
    for batch in data.predict_dataloader():
        keys += data.on_before_batch_transfer(batch, 0)["key"]
    assert keys == ["good_w00000", "good_w00004", "good_w00008"]
    assert dict(data.skip_counts) == {
        "corrupt video": 1,
        "too short": 1,
        "missing video": 1,
        "bad metadata": 1,
    }


@pytest.mark.parametrize("allocation", ["per_clip", "streaming"])
def test_allocation_does_not_depend_on_batch_mates(scorer_ckpt: Path, allocation: str) -> None:
    module = AnnotatorModule(str(scorer_ckpt), allocation=allocation)  # type: ignore[arg-type]
    size, frames = module.tokenizer.image_size, module.tokenizer.num_frames
    video = torch.rand(8, 3, frames, size, size, generator=torch.Generator().manual_seed(4))
    video[:4] *= 0.1  # calm clips beside busy ones

    def lengths(clips: torch.Tensor) -> np.ndarray:
        _, predictions, encoding = module._encode(clips)
        return module.allocate_lengths(clips, encoding, predictions)

    together = lengths(video)
    alone = np.concatenate([lengths(video[i : i + 1]) for i in range(8)])
    np.testing.assert_array_equal(together, alone)
    assert together.shape == (8, 4, 4)
    np.testing.assert_array_equal(together.sum(axis=2), np.tile([8, 16, 24, 32], (8, 1)))


def test_writer_refuses_a_folder_of_other_shards(window_shards: Path, scorer_ckpt: Path) -> None:
    with pytest.raises(ValueError, match="not a token annotation shard"):
        _annotate(scorer_ckpt, window_shards, window_shards, batch_size=4)
    assert sorted(p.name for p in window_shards.glob("*.tar")) == [
        f"train-{i:06d}.tar" for i in range(3)
    ]


def test_shards_of_other_settings_stop_the_run_or_are_replaced(
    tmp_path: Path, window_shards: Path, scorer_ckpt: Path, annotated_tokens: Path
) -> None:
    out = tmp_path / "changed"
    _annotate(scorer_ckpt, window_shards, out, batch_size=8)
    before = sorted(p.name for p in out.glob("*.tar"))
    with pytest.raises(ValueError, match="budgets differ"):
        _annotate(scorer_ckpt, window_shards, out, batch_size=8, budgets=(0.5, 1.0))
    assert sorted(p.name for p in out.glob("*.tar")) == before  # nothing touched
    writer = _annotate(
        scorer_ckpt, window_shards, out, batch_size=8, budgets=(0.5, 1.0), on_mismatch="overwrite"
    )
    assert writer.written == 18
    stored = read_annotations(out)
    assert len(stored) == 18
    assert all(files["json"]["budgets"] == [0.5, 1.0] for files in stored.values())
    assert all(files["lengths.npy"].shape == (2, 4) for files in stored.values())


def test_shards_planned_by_another_allocation_procedure_stop_the_run(
    tmp_path: Path,
    window_shards: Path,
    scorer_ckpt: Path,
    annotated_tokens: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Same weights, budgets and mode, but lengths planned by another version of the planning
    code (or shards from before the version was recorded): resuming must not mix them."""
    import modules.annotator
    from callbacks.annotation_writer import annotation_fingerprint

    out = tmp_path / "planned"
    _annotate(scorer_ckpt, window_shards, out, batch_size=8, budgets=(0.5,))
    stored = next(iter(read_annotations(out).values()))["json"]
    assert stored["allocation_version"] == modules.annotator.PLANNING_VERSION
    assert (stored["allocation"], stored["equality"], stored["solver"]) == (
        "per_clip",
        True,
        "fast",
    )
    before = sorted(p.name for p in out.glob("*.tar"))
    monkeypatch.setattr(modules.annotator, "PLANNING_VERSION", stored["allocation_version"] + 1)
    with pytest.raises(ValueError, match=r"\(allocation_version differ\)"):
        _annotate(scorer_ckpt, window_shards, out, batch_size=8, budgets=(0.5,))
    assert sorted(p.name for p in out.glob("*.tar")) == before  # nothing touched
    older = {
        k: v for k, v in stored.items() if k not in ("allocation_version", "equality", "solver")
    }
    assert annotation_fingerprint(older) != annotation_fingerprint(stored)


def test_class_names_give_one_label_space(window_shards: Path) -> None:
    names = ["hectic", "busy", "moderate", "calm"]
    full = VideoWindowsDataModule(
        str(window_shards / "train-*.tar"), num_frames=8, stride=4, resolution=32
    )
    full.num_workers = 0
    stored = {}
    for batch in full.predict_dataloader():
        stored.update(zip(batch["key"], batch["class_name"], strict=True))
    present = sorted(set(stored.values()))
    assert len(present) >= 2, present
    kept_names = [n for n in names if n != present[0]]
    data = VideoWindowsDataModule(
        str(window_shards / "train-*.tar"),
        num_frames=8,
        stride=4,
        resolution=32,
        class_names=kept_names,
    )
    data.num_workers = 0
    seen = 0
    for batch in data.predict_dataloader():
        batch = data.on_before_batch_transfer(batch, 0)
        for name, label in zip(batch["class_name"], batch["label"].tolist(), strict=True):
            assert kept_names[label] == name
            seen += 1
    dropped = sum(1 for name in stored.values() if name == present[0])
    assert seen == len(stored) - dropped
    assert data.skip_counts["unknown class"] == dropped // 3  # videos, 3 windows each
    with pytest.raises(ValueError, match="distinct"):
        VideoWindowsDataModule("unused", class_names=["a", "a"])
