"""VideoShardsDataModule on real shards: batch contract, splitting, order, bad data, errors."""

from __future__ import annotations

import io
import json
import tarfile
import warnings
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer

from adaptok.data.cli import main
from adaptok.data.synthetic import synthetic_tasks
from adaptok.data.writer import ShardOptions, write_shards
from datamodules import VideoShardsDataModule
from datamodules.video_shards import SkippedSamplesWarning


def run_pass(datamodule: VideoShardsDataModule, split: str) -> list[dict]:
    """All batches of one pass, each through the datamodule's transfer hook (as Lightning does)."""
    loader = getattr(datamodule, f"{split}_dataloader")()
    return [datamodule.on_before_batch_transfer(batch, 0) for batch in loader]


def keys_of(batches: list[dict]) -> list[str]:
    return [key for batch in batches for key in batch["key"]]


def metadata(folder: Path, pattern: str = "*.tar") -> dict[str, dict]:
    found = {}
    for path in sorted(folder.glob(pattern)):
        with tarfile.open(path) as archive:
            for member in archive.getmembers():
                if member.name.endswith(".json"):
                    found[member.name[:-5]] = json.loads(archive.extractfile(member).read())
    return found


def make_datamodule(shards: Path, **overrides) -> VideoShardsDataModule:
    settings = {
        "train_urls": str(shards / "train-*.tar"),
        "val_urls": str(shards / "val-{000000..000001}.tar"),
        "num_frames": 6,
        "resolution": 32,
        "batch_size": 4,
        "num_workers": 0,
        "shuffle_buffer": 8,
        **overrides,
    }
    datamodule = VideoShardsDataModule(**settings)
    datamodule.setup("fit")
    return datamodule


def test_batch_contract_and_complexity_follow_the_sampled_frames(synthetic_shards: Path) -> None:
    datamodule = make_datamodule(synthetic_shards, frame_stride=2)
    batches = run_pass(datamodule, "val")
    meta = metadata(synthetic_shards, "val-*.tar")
    assert sorted(keys_of(batches)) == sorted(meta)
    batch = batches[0]
    assert set(batch) == {"video", "label", "key", "complexity"}
    assert batch["video"].shape == (4, 3, 6, 32, 32) and batch["video"].dtype == torch.float32
    assert batch["video"].min() >= 0.0 and batch["video"].max() <= 1.0
    assert batch["label"].dtype == torch.long and batch["complexity"].shape == (4, 6)
    for i, key in enumerate(batch["key"]):
        assert batch["label"][i] == meta[key]["label"]
        expected = torch.tensor(meta[key]["frame_complexity"][0:12:2])
        torch.testing.assert_close(batch["complexity"][i], expected)


def test_value_range_and_missing_complexity_is_nan(
    synthetic_shards: Path, tmp_path: Path, make_video
) -> None:
    batch = run_pass(make_datamodule(synthetic_shards, value_range=(-1.0, 1.0)), "val")[0]
    assert -1.0 <= batch["video"].min() < -0.5 and batch["video"].max() <= 1.0
    make_video(tmp_path / "in" / "cats" / "a.mp4", seed=1, frames=8)
    assert main(["folder", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    datamodule = VideoShardsDataModule(
        val_urls=str(tmp_path / "out"), num_frames=4, resolution=16, num_workers=0
    )
    datamodule.setup("validate")
    batch = run_pass(datamodule, "val")[0]
    assert batch["video"].shape == (1, 3, 4, 16, 16) and torch.isnan(batch["complexity"]).all()


def test_val_order_is_deterministic(synthetic_shards: Path) -> None:
    serial = make_datamodule(synthetic_shards)
    first = keys_of(run_pass(serial, "val"))
    assert keys_of(run_pass(serial, "val")) == first
    assert len(first) == len(set(first)) == 6
    parallel = make_datamodule(synthetic_shards, num_workers=2)
    batches = run_pass(parallel, "val")
    assert keys_of(run_pass(parallel, "val")) == keys_of(batches)
    assert sorted(keys_of(batches)) == sorted(first)
    again = run_pass(make_datamodule(synthetic_shards, num_workers=2), "val")
    torch.testing.assert_close(
        torch.cat([b["video"] for b in again]), torch.cat([b["video"] for b in batches])
    )


@pytest.mark.filterwarnings("ignore:val. num_workers=2 > 1 shard")
def test_two_ranks_see_disjoint_samples_covering_the_set(
    synthetic_shards: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = {}
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        datamodule = make_datamodule(synthetic_shards, num_workers=2)
        seen[rank] = (keys_of(run_pass(datamodule, "train")), keys_of(run_pass(datamodule, "val")))
    train = metadata(synthetic_shards, "train-*.tar")
    val = metadata(synthetic_shards, "val-*.tar")
    for index, everything in ((0, train), (1, val)):
        rank0, rank1 = seen[0][index], seen[1][index]
        assert rank0 and rank1 and not set(rank0) & set(rank1)
        assert sorted(rank0 + rank1) == sorted(everything)


def test_resampled_training_epochs_and_random_clips(
    ucf101_root: tuple[Path, Path], tmp_path: Path
) -> None:
    root, splits = ucf101_root
    out = tmp_path / "ucf"
    args = ["ucf101", str(root), "--splits", str(splits), "--out", str(out), "--size", "32"]
    assert main([*args, "--shard-samples", "2", "--quiet"]) == 0
    datamodule = VideoShardsDataModule(
        train_urls=str(out / "train-*.tar"),
        val_urls=str(out / "test-*.tar"),
        num_frames=4,
        resolution=24,
        crop="random",
        hflip=True,
        epoch_length=10,
        batch_size=4,
        num_workers=0,
        shuffle_buffer=0,
    )
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    clips: dict[str, list[torch.Tensor]] = {}
    for _ in range(3):
        epoch = [datamodule.on_before_batch_transfer(batch, 0) for batch in loader]
        assert sum(len(b["key"]) for b in epoch) == 12  # 10 rounded up to whole batches
        for batch in epoch:
            for key, video in zip(batch["key"], batch["video"]):
                clips.setdefault(key, []).append(video)
    assert any(
        not torch.equal(videos[0], other) for videos in clips.values() for other in videos[1:]
    ), "random start, crop and flip never changed a clip"
    first, second = run_pass(datamodule, "val"), run_pass(datamodule, "val")
    torch.testing.assert_close(first[0]["video"], second[0]["video"])
    assert first[0]["video"].shape == (3, 3, 4, 24, 24)


def _damage_sample(shard: Path) -> str:
    """Truncate the first video of a shard (the tar itself stays valid); returns its key."""
    with tarfile.open(shard) as source:
        members = [(m, source.extractfile(m).read()) for m in source.getmembers()]
    victim = next(m.name for m, _ in members if m.name.endswith(".mp4"))
    with tarfile.open(shard, "w") as target:
        for member, data in members:
            if member.name == victim:
                data = data[: len(data) // 3]
            member.size = len(data)
            target.addfile(member, io.BytesIO(data))
    return victim.split(".")[0]


def test_corrupt_sample_and_shard_are_skipped_counted_and_reported_once(shard_copy: Path) -> None:
    bad_key = _damage_sample(shard_copy / "train-000001.tar")
    broken_shard = shard_copy / "train-000003.tar"
    broken_shard.write_bytes(broken_shard.read_bytes()[: broken_shard.stat().st_size // 2])
    intact = metadata(shard_copy, "train-00000[0124].tar")
    datamodule = make_datamodule(shard_copy, num_workers=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keys = keys_of(run_pass(datamodule, "train"))
        datamodule.teardown("fit")
    reports = [w for w in caught if issubclass(w.category, SkippedSamplesWarning)]
    assert len(reports) == 1, [str(w.message) for w in caught]
    assert set(intact) - {bad_key} <= set(keys) and bad_key not in keys
    assert datamodule.skip_counts["corrupt video"] == 1
    assert any(reason.startswith("unreadable shard") for reason in datamodule.skip_counts)
    assert "corrupt video: 1" in str(reports[0].message)


def test_clips_shorter_than_num_frames_are_skipped(tmp_path: Path) -> None:
    tasks = synthetic_tasks(3, seed=1, num_frames=8, val_fraction=0.0)
    tasks += synthetic_tasks(3, seed=2, num_frames=16, val_fraction=0.0)
    write_shards(tasks, tmp_path, ShardOptions(size=16), progress=False)
    datamodule = VideoShardsDataModule(
        train_urls=str(tmp_path), num_frames=12, resolution=16, num_workers=0
    )
    datamodule.setup("fit")
    keys = keys_of(run_pass(datamodule, "train"))
    assert sorted(keys) == [t.key for t in tasks[3:]]
    assert datamodule.skip_counts == {"too short": 3}


def test_bad_shard_specifications_fail_early_and_clearly(tmp_path: Path) -> None:
    pattern = str(tmp_path / "nothing-*.tar")
    with pytest.raises(FileNotFoundError, match="nothing-\\*.tar"):
        VideoShardsDataModule(train_urls=pattern).setup("fit")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VideoShardsDataModule(val_urls=str(tmp_path / "missing" / "val-*.tar")).setup("validate")
    not_tar = tmp_path / "train-000000.tar"
    not_tar.write_text("this is not a tar archive")
    with pytest.raises(ValueError, match="train-000000.tar.*not a tar"):
        VideoShardsDataModule(train_urls=[str(not_tar)]).setup("fit")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .tar shards under folder.*empty"):
        VideoShardsDataModule(test_urls=str(tmp_path / "empty")).setup("test")
    datamodule = VideoShardsDataModule(test_urls=str(not_tar.parent / "*.tar"))
    with pytest.raises(ValueError, match="train_urls is not set"):
        datamodule.train_dataloader()
    assert datamodule.val_dataloader() == []  # no val_urls: training without validation


def test_more_workers_than_shards_are_clamped(synthetic_shards: Path) -> None:
    datamodule = make_datamodule(synthetic_shards, num_workers=4)
    with pytest.warns(UserWarning, match="using 2 worker"):
        loader = datamodule.val_dataloader()
    assert loader.num_workers == 2
    keys = [key for batch in loader for key in batch["key"]]
    assert sorted(keys) == sorted(metadata(synthetic_shards, "val-*.tar"))


class _MeanRegressor(LightningModule):
    """Smallest module that trains on the batches (and checks the counts were taken out)."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        assert "skipped" not in batch
        return (batch["video"].mean() - self.bias).pow(2).sum()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        assert batch["video"].shape[1:] == (3, 6, 32, 32)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_reports_skips_once_per_epoch(shard_copy: Path) -> None:
    _damage_sample(shard_copy / "train-000002.tar")
    datamodule = make_datamodule(shard_copy)
    trainer = Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(_MeanRegressor(), datamodule=datamodule)
    reports = [str(w.message) for w in caught if issubclass(w.category, SkippedSamplesWarning)]
    assert reports == [
        "skipped 1 sample(s) in train epoch 0 (corrupt video: 1)",
        "skipped 1 sample(s) in train epoch 1 (corrupt video: 1)",
    ]
    assert datamodule.skip_counts == {"corrupt video": 2}


def test_clip_size_left_unset_is_the_tokenizers(synthetic_shards: Path) -> None:
    """The data sections do not restate the tokenizer's clip size."""
    from types import SimpleNamespace

    from modules.stage import configure_data_clip

    datamodule = make_datamodule(synthetic_shards, num_frames=None, resolution=None)  # setup runs
    with pytest.raises(
        ValueError, match=r"num_frames and data.init_args.resolution are not set: .*tokenizer's"
    ):
        datamodule.val_dataloader()
    tokenizer = SimpleNamespace(num_frames=6, image_size=32)
    configure_data_clip(
        SimpleNamespace(_trainer=SimpleNamespace(datamodule=datamodule), tokenizer=tokenizer)
    )
    assert (datamodule.num_frames, datamodule.resolution) == (6, 32)
    assert (datamodule.hparams["num_frames"], datamodule.hparams["resolution"]) == (6, 32)
    assert run_pass(datamodule, "val")[0]["video"].shape[2:] == (6, 32, 32)
    datamodule.configure_clip(6, 32)  # the same size again: nothing to refuse
    with pytest.raises(ValueError, match=r"num_frames=6 contradicts the tokenizer's num_frames=8"):
        datamodule.configure_clip(8, 32)
    given = make_datamodule(synthetic_shards, num_frames=None, resolution=24)
    with pytest.raises(
        ValueError, match=r"resolution=24 contradicts the tokenizer's image_size=32"
    ):
        given.configure_clip(6, 32)
    assert given.num_frames is None  # a refused size changes nothing
    with pytest.raises(ValueError, match=r"data.init_args.num_frames is not set: .*tokenizer"):
        given.val_dataloader()
