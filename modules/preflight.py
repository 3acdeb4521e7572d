"""Start-up checks of ``adaptok``.

Settings that contradict each other, unwritable output folders and too little disk fail
before the first step, naming the settings involved.

Called by :class:`modules.cli.AdapTokCLI` after the classes are built and before the trainer
runs. Only attributes are read (models and datamodules are not changed), and a check is
skipped when a module does not have the attributes it compares.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = [
    "MODEL_VALUE_RANGE",
    "PreflightError",
    "check_data_urls",
    "check_disk_space",
    "check_run",
    "check_settings",
    "check_writable",
    "estimate_checkpoint_bytes",
]

MODEL_VALUE_RANGE = (0.0, 1.0)
"""Pixel range every AdapTok module expects (videos in [0, 1], docs/METHOD.md section 1); a
module may declare another one in an ``input_value_range`` attribute."""

_CHECKPOINT_OVERHEAD = 3.0
"""Checkpoint bytes per parameter byte: weights plus Adam's two moment buffers."""


class PreflightError(ValueError):
    """A setting cannot work; the message names the settings and how to fix them."""


def _model_setting(model: LightningModule, *names: str) -> Any | None:
    """First attribute found along ``model.tokenizer`` / ``model`` (None when absent)."""
    for owner in (getattr(model, "tokenizer", None), model):
        for name in names:
            value = getattr(owner, name, None) if owner is not None else None
            if isinstance(value, int | float | tuple | list):
                return value
    return None


_STAGE_SPLITS = {"fit": "train", "validate": "val", "test": "test", "predict": "predict"}


def check_data_urls(datamodule: LightningDataModule | None, stage: str | None) -> None:
    """Refuse a stage whose shard URL setting is null, empty or blank, in one line.

    Reads the datamodule's ``urls`` mapping (``VideoShardsDataModule``,
    ``TokenShardsDataModule``) or its ``{split}_urls`` attribute (``VideoWindowsDataModule``).

    Raises:
        PreflightError: Naming the setting and the stage that needs it.
    """
    split = _STAGE_SPLITS.get(stage or "")
    if datamodule is None or split is None:
        return
    urls = getattr(datamodule, "urls", None)
    if isinstance(urls, dict) and split in urls:
        value, known = urls[split], True
    else:
        value, known = (
            getattr(datamodule, f"{split}_urls", None),
            hasattr(datamodule, f"{split}_urls"),
        )
    if not known:
        return
    setting = f"data.init_args.{split}_urls"
    blank = isinstance(value, str) and not value.strip()
    empty_list = isinstance(value, list | tuple) and (
        not value or any(v is None or not str(v).strip() for v in value)
    )
    if value is None or blank or empty_list:
        raise PreflightError(
            f"{setting} is {value!r}: `adaptok {stage}` needs {split} shards; give a shard "
            "pattern, folder or URL (e.g. data/demo/synthetic/train-*.tar)"
        )


def check_settings(
    model: LightningModule, datamodule: LightningDataModule | None, stage: str | None = None
) -> None:
    """Refuse data settings the model cannot accept.

    Checks that the stage's shard URL setting names shards, the datamodule's ``value_range``
    against the model's input range, and its ``num_frames`` / ``resolution`` against the
    tokenizer's ``num_frames`` / ``image_size``. A size left ``None`` is not a contradiction:
    the stage gives the datamodule the tokenizer's when it sets up
    (``modules.stage.configure_data_clip``).

    Raises:
        PreflightError: Naming both settings and their values.
    """
    if datamodule is None:
        return
    check_data_urls(datamodule, stage)
    data_range = getattr(datamodule, "value_range", None)
    expected = tuple(float(v) for v in getattr(model, "input_value_range", MODEL_VALUE_RANGE))
    if data_range is not None and tuple(float(v) for v in data_range) != expected:
        raise PreflightError(
            f"data.init_args.value_range={list(data_range)} contradicts the model "
            f"({type(model).__name__}), which takes videos in {list(expected)}: set "
            f"data.init_args.value_range to {list(expected)}"
        )
    pairs = (("num_frames", ("num_frames",)), ("resolution", ("image_size",)))
    for data_name, model_names in pairs:
        data_value = getattr(datamodule, data_name, None)
        model_value = _model_setting(model, *model_names)
        if (
            isinstance(data_value, int)
            and isinstance(model_value, int)
            and data_value != model_value
        ):
            raise PreflightError(
                f"data.init_args.{data_name}={data_value} contradicts the model's "
                f"{model_names[0]}={model_value} ({type(model).__name__}): the clips would not "
                "fit the network; make them equal"
            )


def check_writable(folder: str | Path, setting: str) -> None:
    """Create ``folder`` if needed and write and delete a probe file in it.

    Raises:
        PreflightError: The folder cannot be created or written, naming ``setting``.
    """
    path = Path(folder).expanduser()
    probe = path / f".adaptok-write-test-{uuid.uuid4().hex}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise PreflightError(
            f"{setting}={str(folder)!r} is not a writable folder ({type(error).__name__}: "
            f"{error}); choose another folder before training"
        ) from error


def check_disk_space(folder: str | Path, needed_bytes: int, setting: str) -> None:
    """Require ``needed_bytes`` free on the file system of ``folder`` (which must exist).

    Raises:
        PreflightError: Less is free, with both figures in MB.
    """
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise PreflightError(
            f"{setting}={str(folder)!r}: {free / 1e6:.1f} MB free, the configured checkpoints "
            f"need about {needed_bytes / 1e6:.1f} MB; free space or keep fewer checkpoints"
        )


def estimate_checkpoint_bytes(model: LightningModule) -> int:
    """Approximate size of one checkpoint: parameters and buffers times weights + Adam state."""
    tensors = [*model.parameters(), *model.buffers()]
    size = sum(t.numel() * t.element_size() for t in tensors)
    return int(size * _CHECKPOINT_OVERHEAD)


def _kept_checkpoints(callback: ModelCheckpoint, trainer: Trainer) -> int:
    kept = callback.save_top_k
    if kept < 0:  # every checkpoint is kept: count the saves the run will make
        every = callback._every_n_train_steps or 0
        kept = trainer.max_steps // every if every and trainer.max_steps > 0 else 1
    return max(kept, 1) + int(bool(callback.save_last))


def check_run(
    trainer: Trainer, model: LightningModule, datamodule: LightningDataModule | None
) -> None:
    """All fit-time checks: settings, writable log/checkpoint folders, disk for checkpoints.

    Raises:
        PreflightError: The first problem found.
    """
    check_settings(model, datamodule, "fit")
    folders: list[tuple[Path, str]] = [(Path(trainer.default_root_dir), "trainer.default_root_dir")]
    for logger in trainer.loggers:
        save_dir = getattr(logger, "save_dir", None)
        if save_dir:
            folders.append((Path(save_dir), f"trainer.logger ({type(logger).__name__}).save_dir"))
    checkpoints = [cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)]
    for callback in checkpoints:
        if callback.dirpath is not None:
            folders.append((Path(callback.dirpath), "ModelCheckpoint dirpath"))
    for folder, setting in folders:
        check_writable(folder, setting)
    if checkpoints:
        one = estimate_checkpoint_bytes(model)
        for callback in checkpoints:
            folder = Path(callback.dirpath or trainer.default_root_dir)
            check_disk_space(
                folder, one * _kept_checkpoints(callback, trainer), "ModelCheckpoint dirpath"
            )
