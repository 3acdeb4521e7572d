"""Helpers shared by the tests: tiny stage configs and a working-directory switch.

Every experiment YAML ``experiments/<set>/<stage>.yaml`` has a tiny overlay
``tests/conf/<set>/<stage>.yaml`` that shrinks the networks, steps and data to seconds on
2 CPU cores. It only overrides: run the shipped YAML, then the overlay, as LightningCLI
composes several ``--config`` files (a later one merges into the earlier ones; a list of
callbacks of the same length and ``class_path`` at each position merges element by element;
another length replaces the list)::

    run_cli(["fit", *tiny_args("demo/tokenizer.yaml"), "--trainer.max_steps=2"])

Paths in the overlays stay relative, like the shipped ones: run inside a folder laid out
as the repository (``data/demo/...``, ``runs/demo/...``), such as the ``workspace`` fixture.
A variant ``<stage>.<variant>.yaml`` is composed with its base ``<stage>.yaml``:
base, variant, tiny base, tiny variant. A stage that reads the datamodule of its set's
``data.yaml`` (the shard URLs) is composed with it first: data, base, ..., tiny data, tiny base.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import Callback

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
CONF = Path(__file__).resolve().parent / "conf"

__all__ = [
    "CONF",
    "EXPERIMENTS",
    "REPO",
    "RankRecorder",
    "overlay",
    "overlay_flags",
    "stage_configs",
    "tiny_args",
    "tiny_overlay",
    "working_directory",
    "write_overlay",
]


@contextmanager
def working_directory(path: Path) -> Iterator[None]:
    """Run the body with ``path`` as the current directory (restored afterwards)."""
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _experiment(stage_yaml: str | Path) -> Path:
    path = Path(stage_yaml)
    if not path.is_absolute():
        path = EXPERIMENTS / path
    if not path.is_file():
        raise FileNotFoundError(f"no experiment config {path}")
    return path


def _data_class(config: Path) -> str | None:
    """``data.class_path`` of a YAML file (``None`` where it names none)."""
    data = (yaml.safe_load(config.read_text()) or {}).get("data") or {}
    return data.get("class_path")


def stage_configs(stage_yaml: str | Path) -> list[Path]:
    """The shipped files a stage runs with, in ``--config`` order.

    ``[base]``, or ``[base, variant]`` for a variant, preceded by the set's ``data.yaml``
    when the base reads the datamodule class that ``data.yaml`` gives the shard URLs of
    (the command in each stage YAML's header).

    Args:
        stage_yaml: ``"demo/tokenizer.yaml"`` (relative to ``experiments/``) or a path.
    """
    path = _experiment(stage_yaml)
    stem, _, variant = path.name.removesuffix(".yaml").partition(".")
    files = [_experiment(path.with_name(f"{stem}.yaml")), path] if variant else [path]
    data = path.with_name("data.yaml")
    if data != path and data.is_file() and _data_class(files[0]) == _data_class(data):
        files.insert(0, data)
    return files


def tiny_overlay(stage_yaml: str | Path) -> Path:
    """``tests/conf/<set>/<stage>.yaml`` of an experiment YAML (it must exist)."""
    path = _experiment(stage_yaml)
    tiny = CONF / path.relative_to(EXPERIMENTS)
    if not tiny.is_file():
        raise FileNotFoundError(f"{path.relative_to(REPO)} has no tiny overlay {tiny}")
    return tiny


def tiny_args(stage_yaml: str | Path) -> list[str]:
    """``--config`` arguments running an experiment YAML shrunk by its tiny overlay.

    Args:
        stage_yaml: ``"demo/tokenizer.yaml"`` (relative to ``experiments/``) or a path.

    Returns:
        ``["--config", shipped, ..., "--config", tiny, ...]``: the shipped files (base, then
        variant) followed by their overlays in the same order.
    """
    shipped = stage_configs(stage_yaml)
    files = [*shipped, *(tiny_overlay(p) for p in shipped)]
    return [arg for path in files for arg in ("--config", str(path))]


def overlay(stage_yaml: str | Path) -> dict[str, Any]:
    """The tiny overlay of an experiment YAML, as a dict (to read its sizes in assertions)."""
    return yaml.safe_load(tiny_overlay(stage_yaml).read_text())


def overlay_flags(stage_yaml: str | Path) -> list[str]:
    """The tiny overlay as ``--a.b.c=value`` flags (for tests written before the overlays).

    Raises:
        ValueError: The overlay holds a list of mappings (callbacks), which flags cannot say.
    """

    def flatten(prefix: str, value: Any) -> Iterator[str]:
        if isinstance(value, Mapping):
            for key, item in value.items():
                yield from flatten(f"{prefix}.{key}" if prefix else str(key), item)
        elif isinstance(value, list) and any(isinstance(v, Mapping) for v in value):
            raise ValueError(f"{prefix} is a list of mappings: use tiny_args() instead")
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            yield f"--{prefix}={text}"

    return list(flatten("", overlay(stage_yaml)))


def write_overlay(path: Path, content: Mapping[str, Any]) -> list[str]:
    """Write a test's own overlay (applied after the tiny one) and return its ``--config``.

    Use it for settings inside a list of callbacks, which command-line flags cannot reach;
    a scalar setting is simpler as a flag.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(content), sort_keys=False))
    return ["--config", str(path)]


class RankRecorder(Callback):
    """Writes ``<folder>/rank<R>.json`` at the end of a run: what this process saw.

    For multi-process tests, which then assert on files instead of log text: the rank and
    world size, the process-group backend, the global step, the clip keys of the training
    and validation batches this rank drew, and the validation metrics it ended with.

    Args:
        folder: Where to write (created).
    """

    def __init__(self, folder: str = "ranks") -> None:
        self.folder = Path(folder)
        self.train_keys: list[str] = []
        self.val_keys: list[str] = []
        self.val_batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.train_keys += [str(k) for k in batch.get("key", [])]

    def on_validation_batch_end(  # noqa: ANN001
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self.val_batches += 1
        self.val_keys += [str(k) for k in batch.get("key", [])]

    def on_fit_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        import torch.distributed as dist

        backend = dist.get_backend() if dist.is_available() and dist.is_initialized() else None
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "backend": backend,
            "global_step": trainer.global_step,
            "train_keys": self.train_keys,
            "val_keys": self.val_keys,
            "val_batches": self.val_batches,
            "metrics": {
                name: float(value)
                for name, value in trainer.callback_metrics.items()
                if name.startswith("val/")
            },
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
