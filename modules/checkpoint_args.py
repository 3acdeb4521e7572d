"""Let ``adaptok validate|test|predict --ckpt_path X`` run without a ``model:`` section.

LightningCLI requires a model class before it reads ``ckpt_path``; a self-describing
checkpoint already holds the LightningModule's class and init arguments. When a run names a
checkpoint (``--ckpt_path`` or ``ckpt_path:`` in a ``--config`` file) and nothing names a
model, the model is taken from the checkpoint, so an evaluation YAML holds only the checkpoint
and the evaluation settings. An explicit ``model:`` still wins.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from modules.loading import read_checkpoint_safely

__all__ = ["with_model_from_checkpoint"]

_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def _option(args: Sequence[str], index: int, name: str) -> str | None:
    arg = args[index]
    if arg == name and index + 1 < len(args):
        return args[index + 1]
    if arg.startswith(name + "="):
        return arg.split("=", 1)[1]
    return None


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return {}  # LightningCLI reports unreadable configs itself
    return loaded if isinstance(loaded, dict) else {}


def with_model_from_checkpoint(args: Sequence[str]) -> list[str]:
    """``args`` plus ``--model=<JSON>`` read from the checkpoint, when that is needed.

    Args:
        args: Command-line arguments after the program name.

    Returns:
        The arguments, with the checkpoint's ``{"class_path", "init_args"}`` inserted after
        the subcommand (so later ``--model.init_args.*`` overrides still apply) when a
        checkpoint is named, exists, records its class, and no model is given.

    Raises:
        modules.loading.CheckpointError: The named checkpoint (any subcommand, ``fit``
            resuming included) cannot be restored: unreadable, a hyperparameter that is not
            a plain value, or a network spec that disagrees with its stored weights. The
            message names the file and the field.
    """
    args = list(args)
    positions = [i for i, a in enumerate(args) if a in _SUBCOMMANDS]
    if not positions:
        return args
    start = positions[0] + 1
    ckpt_path: str | None = None
    has_model = False
    for index in range(start, len(args)):
        if args[index].startswith("--model"):
            has_model = True
        for flag in ("-c", "--config"):
            config = _option(args, index, flag)
            if config is not None:
                content = _read_yaml(config)
                has_model = has_model or content.get("model") is not None
                ckpt_path = content.get("ckpt_path") or ckpt_path
        given = _option(args, index, "--ckpt_path")
        if given is not None:
            ckpt_path = given
    if not ckpt_path or not Path(ckpt_path).is_file():
        return args
    checkpoint = read_checkpoint_safely(ckpt_path)  # one-line CheckpointError when unusable
    if has_model or args[positions[0]] == "fit":
        return args
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    hparams.pop("_instantiator", None)
    class_path = hparams.pop("_class_path", None)
    if class_path is None:
        return args
    model = json.dumps({"class_path": class_path, "init_args": hparams})
    return [*args[:start], f"--model={model}", *args[start:]]
