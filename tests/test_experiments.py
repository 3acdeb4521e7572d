"""Every YAML in experiments/ is parsed against the code, and each is smoke-run.

The demo configs are run by the session fixtures (``tokenizer_ckpt``, ``scorer_ckpt``) and the
TokenAllocator test; the paper-scale configs are run here with tiny overrides on CPU.
"""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import yaml

from modules.cli import run_cli
from tests.conftest import EXPERIMENTS, TINY_SCORER, TINY_TOKENIZER, working_directory

CONFIGS = sorted(EXPERIMENTS.rglob("*.yaml"))
ON_CPU = [
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.strategy=auto",
    "--trainer.precision=32",
]


def subcommand(config: Path) -> str:
    if config.stem.startswith("annotate"):
        return "predict"
    return "test" if config.stem.startswith("eval") else "fit"


def test_there_are_configs_for_every_stage() -> None:
    names = {str(c.relative_to(EXPERIMENTS)) for c in CONFIGS}
    for stage in ("tokenizer", "scorer", "eval_recon"):
        assert {f"demo/{stage}.yaml", f"ucf101/{stage}.yaml"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: str(c.relative_to(EXPERIMENTS)))
def test_config_parses_against_the_code(config: Path, scorer_ckpt: Path) -> None:
    args = [subcommand(config), "--config", str(config), "--print_config"]
    if "model" not in yaml.safe_load(config.read_text()):
        # evaluation configs take the model from the checkpoint they name
        args.append(f"--ckpt_path={scorer_ckpt}")
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        run_cli(args)
    assert exit_info.value.code in (0, None)
    resolved = yaml.safe_load(out.getvalue())
    assert resolved["model"]["class_path"].startswith("modules.")
    assert resolved["data"]["class_path"] in {
        "datamodules.VideoShardsDataModule",
        "datamodules.VideoWindowsDataModule",
        "datamodules.TokenShardsDataModule",
    }


def test_typo_in_a_key_is_refused_with_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    config = EXPERIMENTS / "demo" / "tokenizer.yaml"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(
            [
                "fit",
                "--config",
                str(config),
                "--model.init_args.tokenizer.init_args.widht=64",
                "--print_config",
            ]
        )
    assert exit_info.value.code != 0
    assert "widht" in capsys.readouterr().err


PAPER_TINY_TOKENIZER = [
    *ON_CPU,
    *TINY_TOKENIZER,
    "--trainer.max_epochs=1",
    "--trainer.limit_val_batches=0",
    "--model.init_args.tokenizer.init_args.prior_depth=1",
    "--model.init_args.tokenizer.init_args.prior_width=16",
    "--model.init_args.tokenizer.init_args.prior_heads=2",
    "--model.init_args.loss.init_args.disc_start=0",
    "--trainer.precision=bf16-mixed",  # mixed precision, as the paper config asks (fp16 on GPU)
]


@pytest.fixture(scope="module")
def paper_tokenizer_ckpt(workspace: Path) -> Path:
    """experiments/ucf101/tokenizer.yaml, shrunk, trained for a few steps in bf16-mixed."""
    config = EXPERIMENTS / "ucf101" / "tokenizer.yaml"
    with working_directory(workspace):
        run_cli(["fit", "--config", str(config), *PAPER_TINY_TOKENIZER])
    ckpt = workspace / "runs" / "ucf101" / "tokenizer" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    return ckpt


@pytest.fixture(scope="module")
def paper_scorer_ckpt(workspace: Path, paper_tokenizer_ckpt: Path) -> Path:
    """experiments/ucf101/scorer.yaml, shrunk, on the tokenizer above."""
    config = EXPERIMENTS / "ucf101" / "scorer.yaml"
    overrides = [a for a in TINY_SCORER if "val_check_interval" not in a]
    with working_directory(workspace):
        run_cli(
            [
                "fit",
                "--config",
                str(config),
                *ON_CPU,
                *overrides,
                "--trainer.max_epochs=1",
                "--trainer.limit_val_batches=0",
                "--model.init_args.lpips_net=alex",
                "--model.init_args.context_drop.init_args.mean=4",
                "--model.init_args.context_drop.init_args.std=2",
                "--model.init_args.context_drop.init_args.min_tokens=1",
                "--model.init_args.context_drop.init_args.max_tokens=8",
            ]
        )
    ckpt = workspace / "runs" / "ucf101" / "scorer" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    return ckpt


def test_paper_tokenizer_and_scorer_configs_train(
    paper_tokenizer_ckpt: Path, paper_scorer_ckpt: Path
) -> None:
    assert paper_scorer_ckpt.stat().st_mtime >= paper_tokenizer_ckpt.stat().st_mtime


def test_paper_eval_recon_config_smoke_runs(workspace: Path, paper_scorer_ckpt: Path) -> None:
    scorer = paper_scorer_ckpt
    config = EXPERIMENTS / "ucf101" / "eval_recon.yaml"
    # FVD needs 16-frame clips (the tiny ones have 8): same callback, FVD off
    allocator = (
        '[{"class_path": "callbacks.TokenAllocator", "init_args": '
        '{"budgets": [0.25, 0.5], "num_samples": 4, "fvd": false}}]'
    )
    overrides = [a for a in TINY_SCORER if a.startswith("--data.")]
    with working_directory(workspace):
        cli = run_cli(
            [
                "test",
                "--config",
                str(config),
                *ON_CPU,
                *overrides,
                "--trainer.limit_test_batches=1",
                f"--trainer.callbacks={allocator}",
                f"--ckpt_path={scorer}",
            ]
        )
        report = Path(cli.trainer.log_dir) / "allocation_report.csv"
        assert report.is_file()
