"""The ``adaptok`` command: one LightningCLI for every stage, and the suite's own tools.

``adaptok fit|validate|test|predict --config experiments/<set>/<stage>.yaml``. The model and
the datamodule are chosen by ``class_path`` in the YAML (subclass mode), so the tokenizer,
scorer and generator stages share this entry point. ``adaptok tokenize|export|convert-official``
(:data:`SUITE_COMMANDS`) are dispatched to their own parsers by :func:`main`; ``adaptok --help``
lists both kinds. The CLI lives here, next to the LightningModules, because ``adaptok/`` stays
free of Lightning.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import yaml
from jsonargparse import DefaultHelpFormatter
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from typing_extensions import override

from adaptok.data.shards import ShardURLError
from adaptok.data.skips import NoUsableSamplesError
from adaptok.provenance import PROVENANCE_KEY, git_commit, training_record
from modules.checkpoint_args import with_model_from_checkpoint
from modules.loading import CheckpointError
from modules.preflight import PreflightError, check_run, check_settings

__all__ = [
    "LIGHTNING_COMMANDS",
    "SUITE_COMMANDS",
    "USER_ERRORS",
    "AdapTokCLI",
    "ConfigFileError",
    "SuiteCommand",
    "check_config_files",
    "main",
    "run_cli",
    "user_message",
]


class SuiteCommand(NamedTuple):
    """One of the suite's own commands.

    Attributes:
        module: The module whose ``main(argv) -> int`` runs it (imported when it runs).
        help: Its one-line description in ``adaptok --help``.
    """

    module: str
    help: str


SUITE_COMMANDS: dict[str, SuiteCommand] = {
    "tokenize": SuiteCommand(
        "modules.tokenize_cli",
        "a video file -> tokens per block (.npz) and input | reconstruction (.mp4), with a "
        "scorer checkpoint or export (--mode uniform: a tokenizer's)",
    ),
    "export": SuiteCommand(
        "adaptok.export",
        "a checkpoint -> a portable folder: model.safetensors, spec.json, model card",
    ),
    "convert-official": SuiteCommand(
        "modules.convert_official", "the official AdapTok release weights -> suite checkpoints"
    ),
}
"""The suite's own commands (not LightningCLI subcommands): ``adaptok --help`` lists them and
:func:`main` runs them from this one table."""
LIGHTNING_COMMANDS: tuple[str, ...] = ("fit", "validate", "test", "predict")
"""LightningCLI's subcommands, run on a stage's ``--config`` YAML files."""

_HELP_WIDTH = 79


def _description() -> str:
    """The top-level help's description: both kinds of command."""
    text = (
        f"AdapTok suite. Commands: {', '.join(LIGHTNING_COMMANDS)} (LightningCLI stages on "
        "experiments/<set>/<stage>.yaml, listed under subcommands) and "
        f"{', '.join(SUITE_COMMANDS)} (the suite's tools, listed at the end). "
        "`adaptok COMMAND --help` describes one."
    )
    return textwrap.fill(text, _HELP_WIDTH)


def _suite_commands_help() -> str:
    """The top-level help's epilog: the suite's own commands, one entry each."""
    width = max(len(name) for name in SUITE_COMMANDS) + 4
    lines = ["other commands (`adaptok COMMAND --help` for their options):"]
    for name, command in SUITE_COMMANDS.items():
        lines += textwrap.wrap(
            command.help,
            _HELP_WIDTH,
            initial_indent=f"  {name:<{width - 2}}",
            subsequent_indent=" " * width,
        )
    return "\n".join(lines)


def _is_command(name: str) -> bool:
    return name in LIGHTNING_COMMANDS or name in SUITE_COMMANDS


class _HelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help with the description and epilog kept as written (line breaks)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "".join(indent + line for line in text.splitlines(keepends=True))


class ConfigFileError(ValueError):
    """A ``--config`` file that cannot be read as settings; names the file (and line)."""


USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigFileError,
    CheckpointError,
    PreflightError,
    ShardURLError,
    NoUsableSamplesError,
)
"""Errors a user fixes in their command or files: ``adaptok`` prints them in one line."""


def user_message(error: Exception) -> str:
    """The one-line message of a :data:`USER_ERRORS` error.

    An error raised in a DataLoader worker reaches the main process re-raised with the
    worker's whole traceback as its message (``torch.utils.data._utils.ExceptionWrapper``:
    "Caught X in DataLoader worker process N. Original Traceback ..."); only the original
    message after the traceback's last ``X: `` (or ``package.module.X: ``) is kept, with the
    worker named.

    Args:
        error: The error caught.

    Returns:
        Its message on one line (runs of whitespace, newlines included, become one space).
    """
    text = str(error)
    name = type(error).__name__
    caught = f"Caught {name} "
    # the traceback's last line names the error by its qualified name: "pkg.mod.Name: message"
    last = list(re.finditer(rf"\n(?:[\w.]+\.)?{name}: ", text))
    if text.startswith(f"{caught}in DataLoader worker") and last:
        where = text.split(".", 1)[0].removeprefix(caught)  # "in DataLoader worker process 0"
        text = f"{text[last[-1].end() :]} ({where})"
    return " ".join(text.split())


def _config_paths(args: Sequence[str]) -> list[str]:
    paths = []
    for index, arg in enumerate(args):
        for flag in ("-c", "--config"):
            if arg == flag and index + 1 < len(args):
                paths.append(args[index + 1])
            elif arg.startswith(flag + "="):
                paths.append(arg.split("=", 1)[1])
    return paths


def check_config_files(args: Sequence[str]) -> None:
    """Refuse a ``--config`` file that is missing, empty, not YAML or not a mapping.

    LightningCLI reports an empty file as a bare "Unexpected config:" and a YAML syntax
    error without the file name; this names the file, the line and the column.

    Raises:
        ConfigFileError: In one line.
    """
    for name in _config_paths(args):
        path = Path(name)
        if not path.is_file():
            if name.lstrip().startswith(("{", "[")) or "\n" in name or ": " in name:
                continue  # an inline YAML/JSON string, which LightningCLI also accepts
            raise ConfigFileError(f"config file {name} not found")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigFileError(f"config file {name} cannot be read: {error}") from error
        try:
            content = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            tab = "\t" in problem or "\\t" in problem
            hint = " (YAML indents with spaces, not tabs)" if tab else ""
            problem = problem.replace("\t", "\\t")
            raise ConfigFileError(f"config file {name}{where}: {problem}{hint}") from error
        if content is None:
            raise ConfigFileError(
                f"config file {name} is empty (no settings): remove it from the command or "
                "add settings"
            )
        if not isinstance(content, dict):
            raise ConfigFileError(
                f"config file {name} holds a YAML {type(content).__name__}, not a mapping of "
                "settings (e.g. `trainer:`, `model:`, `data:`)"
            )


class ProvenanceSaveConfigCallback(SaveConfigCallback):
    """Saves the resolved config next to the logs and records it in every checkpoint.

    Each checkpoint gets ``checkpoint["adaptok_provenance"] = {"commit", "config",
    "training_data"}``: the suite commit when the run started, i.e. the code it imported
    (``+dirty`` with uncommitted changes; the checkout may move on while a long run trains),
    the run's full config as YAML text, and (fit runs) the training shards with their content
    fingerprint taken at fit start on rank 0 (:func:`adaptok.provenance.training_record`), so
    ``adaptok export`` can ship the exact recipe and data record with the weights.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commit = git_commit()
        self.training_data: dict[str, Any] | None = None

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        datamodule = getattr(trainer, "datamodule", None)
        if stage == "fit" and trainer.is_global_zero and datamodule is not None:
            # once, on the rank that saves checkpoints: the shards this run trains on
            urls = datamodule.hparams.get("train_urls")
            self.training_data = training_record(urls, "fit start")

    @override
    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        config = self.parser.dump(self.config, skip_none=False)
        checkpoint[PROVENANCE_KEY] = {
            "commit": self.commit,
            "config": config,
            "training_data": self.training_data,
        }


class AdapTokCLI(LightningCLI):
    """LightningCLI with the suite's defaults.

    Modules own their optimizers (``OptimizerCallable`` init arguments), so automatic optimizer
    configuration is off; the resolved config is saved next to each run's logs. Before each
    stage runs, :mod:`modules.preflight` refuses contradictory settings (and, for ``fit``,
    unwritable output folders and too little disk) with a message naming the settings.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """``--threads``: PyTorch intra-op threads of the main process."""
        parser.add_argument(
            "--threads",
            type=int | None,
            default=None,
            help="PyTorch intra-op threads of the main process (default: CPU cores minus "
            "dataloader workers, at least 1; workers use 1 thread each). On a small machine "
            "more threads than free cores make every step many times slower.",
        )

    @override
    def before_instantiate_classes(self) -> None:
        torch.set_float32_matmul_precision("high")
        config = self.config[self.subcommand] if self.subcommand else self.config
        threads = config.get("threads")
        if threads is None:
            data = config.get("data")
            init_args = (data.get("init_args") if data is not None else None) or {}
            workers = int(init_args.get("num_workers") or 0)
            threads = max(1, (os.cpu_count() or 1) - workers)
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)

    def before_fit(self) -> None:
        """Start-up checks of a training run (settings, output folders, disk)."""
        check_run(self.trainer, self.model, self.datamodule)

    def before_validate(self) -> None:
        """Settings checks of an evaluation run."""
        check_settings(self.model, self.datamodule, "validate")

    def before_test(self) -> None:
        """Settings checks of an evaluation run."""
        check_settings(self.model, self.datamodule, "test")

    def before_predict(self) -> None:
        """Settings checks of a prediction run."""
        check_settings(self.model, self.datamodule, "predict")


def run_cli(args: list[str] | None = None, run: bool = True) -> AdapTokCLI:
    """Build (and by default run) the CLI on ``args`` (default ``sys.argv[1:]``); returns it."""
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    check_config_files(sys.argv[1:] if args is None else args)
    if args is None:  # LightningCLI reads sys.argv itself (passing it would warn)
        sys.argv[1:] = with_model_from_checkpoint(sys.argv[1:])
    else:
        args = with_model_from_checkpoint(args)
    return AdapTokCLI(
        model_class=LightningModule,
        datamodule_class=LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        parser_kwargs={
            "description": _description(),
            "epilog": _suite_commands_help(),
            "formatter_class": _HelpFormatter,
        },
        save_config_callback=ProvenanceSaveConfigCallback,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def main() -> None:
    """Console entry point of ``adaptok``: a LightningCLI subcommand, or another command.

    The others (:data:`SUITE_COMMANDS`: ``tokenize``, ``export``, ``convert-official``) run
    their module's ``main`` on the arguments after the command. No command, or one that is
    neither kind, is refused in one line naming all of them (exit status 2).

    Raises:
        SystemExit: A suite command's exit status when it ends, or 2 for no or an unknown
            command and for a LightningCLI error the user can fix (:data:`USER_ERRORS`).
    """
    first = sys.argv[1] if len(sys.argv) > 1 else None
    if first is None or not (first.startswith("-") or _is_command(first)):
        commands = ", ".join([*LIGHTNING_COMMANDS, *SUITE_COMMANDS])
        what = "no command given" if first is None else f"unknown command {first!r}"
        print(
            f"adaptok: error: {what}; choose one of {commands} (`adaptok --help` describes them)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    if first in SUITE_COMMANDS:
        command = importlib.import_module(SUITE_COMMANDS[first].module)
        raise SystemExit(command.main(sys.argv[2:]))
    try:
        run_cli()
    except USER_ERRORS as error:
        if os.environ.get("JSONARGPARSE_DEBUG"):
            raise
        command = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
        print(f"adaptok {command}: error: {user_message(error)}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
