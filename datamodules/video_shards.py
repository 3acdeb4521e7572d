"""The one LightningDataModule of every stage: video clips from WebDataset tar shards.

The pure parts live in ``adaptok.data``: shard resolution and per-epoch shard order
(:mod:`adaptok.data.shards`), tar member grouping (:mod:`adaptok.data.tar_samples`), clip
decoding and collation (:mod:`adaptok.data.clips`), skip accounting (:mod:`adaptok.data.skips`)
and the per-split stream and loader (:mod:`adaptok.data.shard_stream`,
:mod:`adaptok.data.clip_stream`). :class:`~datamodules.shard_data.ShardDataModule` wires them
to Lightning (ranks, the trainer's epoch, skip reports, resume state); this module says which
clips each split reads.

Bad data never stops a run by itself: unreadable shards, corrupt or truncated videos, bad
metadata and clips shorter than ``num_frames`` are skipped and counted by reason; each pass
reports its counts in one :class:`SkippedSamplesWarning` (totals in ``skip_counts``). A pass
that yields no batch, or ``max_consecutive_skips`` failures in a row, ends the run with
:class:`NoUsableSamplesError` naming the shards and the reasons.

Resume: :meth:`VideoShardsDataModule.state_dict` (saved in every checkpoint) holds the epoch
and the number of training batches consumed in it; every random choice of a pass is seeded by
its epoch, so a run restarted with ``--ckpt_path`` continues the data stream where it stopped
instead of replaying the first epoch.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

from adaptok.data.clip_stream import ClipLoader, ClipStream
from adaptok.data.clips import ClipDecoder, collate_clips, video_to_float
from adaptok.data.shards import resolve_shards
from adaptok.data.skips import NoUsableSamplesError, SkippedSamplesWarning
from datamodules.shard_data import ShardDataModule, Split

__all__ = [
    "ClipDecoder",
    "NoUsableSamplesError",
    "SkippedSamplesWarning",
    "VideoShardsDataModule",
    "collate_clips",
    "resolve_shards",
]


class VideoShardsDataModule(ShardDataModule):
    """Video clips from WebDataset shards for training, validation, test and prediction.

    Batches are dicts: ``video`` (B, C, T, H, W) float in ``value_range``; ``label`` (B,) long
    (-1 when unknown); ``key`` list[str]; ``complexity`` (B, T) float per-frame content
    complexity of the sampled frames (NaN when the shards carry none).

    Args:
        train_urls: Training shards: glob, brace pattern, folder, local path or any URL
            WebDataset opens (``pipe:``, ``http://``), or a list of those.
        val_urls: Validation shards (same forms); ``None`` trains without validation.
        test_urls: Test shards.
        predict_urls: Prediction shards.
        num_frames: Frames per clip ``T``; ``None``: the tokenizer's, given by the stage that
            runs (see :meth:`configure_clip`). A given value must equal the tokenizer's.
        frame_stride: Step between sampled frames.
        clip_sampling: Training clip choice: ``random`` start, ``first`` frames, or
            ``uniform`` over the whole clip. Evaluation always takes the first frames.
        resolution: Short side after resizing and side of the square crop ``H = W``;
            ``None``: the tokenizer's ``image_size``, like ``num_frames``.
        crop: Training crop, ``center`` or ``random``; evaluation always crops the center.
        hflip: Random horizontal flips in training.
        value_range: Pixel value range of ``video``.
        batch_size: Clips per batch.
        num_workers: DataLoader workers (clamped to the number of shards of a rank when the
            shards are split between workers).
        pin_memory: Pin batches in page-locked memory.
        epoch_length: Training samples per epoch over all ranks: shards are then drawn with
            replacement (an endless stream cut into epochs; every rank gets the same number of
            batches, which DDP needs). ``None``: one pass over the shuffled shards per epoch.
        shuffle_buffer: Training samples mixed in a shuffle buffer (0 or 1: no shuffling).
        seed: Seed of shard order, shuffle buffer, clip starts, crops and flips.
        max_consecutive_skips: Failed samples in a row (in one worker) that end the run with
            :class:`NoUsableSamplesError` naming the shards and reasons; ``None``: never (an
            all-bad resampled stream then never ends).
        max_upscale: Clips whose short side must be enlarged more than this factor to reach
            ``resolution`` are counted and reported as a warning per pass.
        video_dtype: ``float32`` (in ``value_range``) or ``uint8`` (0..255, a quarter of the
            bytes between processes; converted to float on the device after transfer).
        eval_shuffle: Read val/test shards in a seeded shuffled order through the shuffle
            buffer, so evaluation batches mix sources (batch-mode allocation shares a budget
            among batch-mates); off: shards in order, as listed.

    Raises:
        ValueError: A size or count below 1, or ``value_range`` with ``low >= high``.
    """

    _SIZE_SETTINGS = ("num_frames", "resolution")

    def __init__(
        self,
        train_urls: str | list[str] | None = None,
        val_urls: str | list[str] | None = None,
        test_urls: str | list[str] | None = None,
        predict_urls: str | list[str] | None = None,
        num_frames: int | None = None,
        frame_stride: int = 1,
        clip_sampling: Literal["random", "first", "uniform"] = "random",
        resolution: int | None = None,
        crop: Literal["center", "random"] = "random",
        hflip: bool = False,
        value_range: tuple[float, float] = (0.0, 1.0),
        batch_size: int = 8,
        num_workers: int = 2,
        pin_memory: bool = False,
        epoch_length: int | None = None,
        shuffle_buffer: int = 256,
        seed: int = 0,
        max_consecutive_skips: int | None = 100,
        max_upscale: float = 2.0,
        video_dtype: Literal["float32", "uint8"] = "float32",
        eval_shuffle: bool = False,
    ) -> None:
        super().__init__(
            {"train": train_urls, "val": val_urls, "test": test_urls, "predict": predict_urls},
            seed,
        )
        sizes = (num_frames, frame_stride, resolution, batch_size)
        if any(size is not None and size < 1 for size in sizes):
            raise ValueError("num_frames, frame_stride, resolution and batch_size must be >= 1")
        if epoch_length is not None and epoch_length < 1:
            raise ValueError(f"epoch_length must be >= 1 or None, got {epoch_length}")
        if len(value_range) != 2 or not float(value_range[0]) < float(value_range[1]):
            raise ValueError(f"value_range must be (low, high) with low < high, got {value_range}")
        if max_consecutive_skips is not None and max_consecutive_skips < 1:
            raise ValueError(
                f"max_consecutive_skips must be >= 1 or None, got {max_consecutive_skips}"
            )
        if max_upscale < 1:
            raise ValueError(f"max_upscale must be >= 1, got {max_upscale}")
        if video_dtype not in ("float32", "uint8"):
            raise ValueError(f"video_dtype must be 'float32' or 'uint8', got {video_dtype!r}")
        self.save_hyperparameters()
        self.num_frames = num_frames
        self.frame_stride = frame_stride
        self.clip_sampling = clip_sampling
        self.resolution = resolution
        self.crop = crop
        self.hflip = hflip
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.epoch_length = epoch_length
        self.shuffle_buffer = shuffle_buffer
        self.max_consecutive_skips = max_consecutive_skips
        self.max_upscale = float(max_upscale)
        self.video_dtype = video_dtype
        self.eval_shuffle = eval_shuffle

    # ------------------------------------------------------------------------------- clip size
    def configure_clip(self, num_frames: int, resolution: int) -> None:
        """Adopt the tokenizer's clip size where unset; refuse a contradicting one.

        Called by the stage that holds the tokenizer (``modules.stage.configure_data_clip``)
        before the loaders are built. The adopted size is also written to ``hparams``, so
        checkpoints record the clip size the network was trained on.

        Args:
            num_frames: The tokenizer's ``num_frames``.
            resolution: The tokenizer's ``image_size``.

        Raises:
            ValueError: ``num_frames`` or ``resolution`` was set to another value.
        """
        given = (("num_frames", "num_frames", num_frames), ("resolution", "image_size", resolution))
        for name, tokenizer_name, value in given:  # check both before changing either
            current = getattr(self, name)
            if current is not None and int(current) != int(value):
                raise ValueError(
                    f"data.init_args.{name}={current} contradicts the tokenizer's "
                    f"{tokenizer_name}={value}: remove {name} from the data section (it is "
                    "taken from the tokenizer) or make them equal"
                )
        for name, _, value in given:
            if getattr(self, name) is None:
                setattr(self, name, int(value))
                self.hparams[name] = int(value)

    def _clip_size(self) -> tuple[int, int]:
        """``(num_frames, resolution)``, or a clear error when the size is still unknown."""
        missing = [name for name in self._SIZE_SETTINGS if getattr(self, name) is None]
        if missing:
            names = " and ".join(f"data.init_args.{name}" for name in missing)
            raise ValueError(
                f"{names} {'is' if len(missing) == 1 else 'are'} not set: the clip size is the "
                "tokenizer's, given by the stage that runs this datamodule (tokenizer, scorer); "
                "run it under such a stage or set it when using the datamodule on its own"
            )
        return int(self.num_frames), int(self.resolution)  # type: ignore[arg-type]

    # ----------------------------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        """Resolve and check the shards the stage needs (errors name the pattern or file).

        Needs no clip size: Lightning calls it before the module's ``setup``, which gives the
        tokenizer's size (:meth:`configure_clip`); the loaders need it.
        """
        needed = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("predict",),
        }.get(stage or "", ("train", "val", "test", "predict"))
        for split in needed:
            self._resolve(split)

    def _stream(
        self, split: Split, shards: list[str], rank: int, world_size: int, workers: int
    ) -> ClipStream:
        train = split == "train"
        resampled = train and self.epoch_length is not None
        mix = self.eval_shuffle and not train
        num_frames, resolution = self._clip_size()
        decoder = ClipDecoder(
            num_frames=num_frames,
            frame_stride=self.frame_stride,
            sampling=self.clip_sampling if train else "first",
            resolution=resolution,
            crop=self.crop if train else "center",
            hflip=self.hflip and train,
        )
        return ClipStream(
            shards,
            order="resampled" if resampled else "shuffled" if train or mix else "ordered",
            decoder=decoder,
            seed=self.seed,
            rank=rank,
            world_size=world_size,
            shuffle_buffer=self.shuffle_buffer if train or mix else 0,
            samples_per_worker=self._samples_per_worker(world_size, workers) if resampled else None,
            max_consecutive_skips=self.max_consecutive_skips,
            max_upscale=self.max_upscale,
            split=split,
        )

    def _dataloader(self, split: Split) -> ClipLoader:
        collate = partial(collate_clips, value_range=self.value_range, video_dtype=self.video_dtype)
        return self._loader(split, collate)

    def train_dataloader(self) -> ClipLoader:
        """Training clips: random (or configured) sampling, crops and flips."""
        return self._dataloader("train")

    def val_dataloader(self) -> ClipLoader | list:
        """Validation clips in a fixed order: first frames, center crop (none: no ``val_urls``)."""
        return self._dataloader("val") if self.urls["val"] is not None else []

    def test_dataloader(self) -> ClipLoader:
        """Test clips in a fixed order: first frames, center crop."""
        return self._dataloader("test")

    def predict_dataloader(self) -> ClipLoader:
        """Prediction clips in a fixed order: first frames, center crop."""
        return self._dataloader("predict")

    # ---------------------------------------------------------------------------- batch hooks
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """uint8 batches (``video_dtype: uint8``) become float on the device, in one place.

        Steps and callbacks then always see float video in ``value_range``.
        """
        if isinstance(batch, dict) and "video" in batch:
            batch["video"] = video_to_float(batch["video"], self.value_range)
        return batch
