"""The ``adaptok`` command: one LightningCLI for every stage.

``adaptok fit|validate|test|predict --config experiments/<set>/<stage>.yaml``. The model and
the datamodule are chosen by ``class_path`` in the YAML (subclass mode), so the tokenizer,
scorer and generator stages share this entry point. The CLI lives here, next to the
LightningModules, because ``adaptok/`` stays free of Lightning.
"""

from __future__ import annotations

import os
import sys

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from typing_extensions import override

from modules.checkpoint_args import with_model_from_checkpoint
from modules.preflight import check_run, check_settings

__all__ = ["AdapTokCLI", "main", "run_cli"]


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
        check_settings(self.model, self.datamodule)

    def before_test(self) -> None:
        """Settings checks of an evaluation run."""
        check_settings(self.model, self.datamodule)

    def before_predict(self) -> None:
        """Settings checks of a prediction run."""
        check_settings(self.model, self.datamodule)


def run_cli(args: list[str] | None = None, run: bool = True) -> AdapTokCLI:
    """Build (and by default run) the CLI on ``args`` (default ``sys.argv[1:]``); returns it."""
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
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
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def main() -> None:
    """Console entry point of ``adaptok``: a LightningCLI subcommand, or another command.

    The others: ``tokenize``, ``export`` (``adaptok.export``) and ``convert-official``
    (``modules.convert_official``).
    """
    if sys.argv[1:2] == ["tokenize"]:
        from modules.tokenize_cli import main as tokenize

        raise SystemExit(tokenize(sys.argv[2:]))
    if sys.argv[1:2] == ["export"]:
        from adaptok.export import main as export

        raise SystemExit(export(sys.argv[2:]))
    if sys.argv[1:2] == ["convert-official"]:
        from modules.convert_official import main as convert

        raise SystemExit(convert(sys.argv[2:]))
    run_cli()


if __name__ == "__main__":
    main()
