"""TokenizerModule through the real CLI on the demo YAML with tiny overrides."""

from __future__ import annotations

from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from modules import TokenizerModule
from modules.cli import run_cli
from tests.conftest import EXPERIMENTS, TINY_TOKENIZER, working_directory


def _scalars(log_dir: Path) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {}
    for events in sorted(log_dir.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            values.setdefault(tag, []).extend(e.value for e in accumulator.Scalars(tag))
    return values


def test_fit_writes_checkpoint_and_logs(tokenizer_ckpt: Path, workspace: Path) -> None:
    scalars = _scalars(workspace / "runs" / "demo" / "tokenizer")
    for expected in ("train/loss", "train/psnr", "train/code_usage", "val/psnr", "val/lpips"):
        assert expected in scalars, sorted(scalars)
    assert "train/disc_adversarial" in scalars, sorted(scalars)
    # both schedules are stepped: the generator warms up, the discriminator rate is constant
    generator_lr = scalars["lr-Adam"]
    assert generator_lr[0] < max(generator_lr), generator_lr
    assert len(set(scalars["lr-Adam-1"])) == 1


def test_checkpoint_reload_through_cli_reproduces_outputs(
    tokenizer_ckpt: Path, workspace: Path
) -> None:
    reloaded = TokenizerModule.load_from_checkpoint(tokenizer_ckpt, map_location="cpu").eval()
    with working_directory(workspace):
        cli = run_cli(
            [
                "validate",
                "--config",
                str(EXPERIMENTS / "demo" / "tokenizer.yaml"),
                *[a for a in TINY_TOKENIZER if not a.startswith("--trainer.val_check_interval")],
                f"--ckpt_path={tokenizer_ckpt}",
            ]
        )
    via_cli = cli.model.eval()
    video = torch.rand(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([[8, 4, 2, 1], [1, 2, 4, 8]])
    with torch.no_grad():
        codes_a = reloaded.tokenizer.encode(video).codes
        codes_b = via_cli.tokenizer.encode(video).codes
        assert torch.equal(codes_a, codes_b)
        assert torch.equal(
            reloaded.tokenizer.decode(codes_a, lengths), via_cli.tokenizer.decode(codes_b, lengths)
        )


def test_reconstruction_media_callback_logs_every_token_count(
    tokenizer_ckpt: Path, workspace: Path
) -> None:
    """experiments/demo/tokenizer.yaml asks for 1/8, 1/2 and all of the tiny M = 8 tokens."""
    tags = set()
    for events in sorted(
        (workspace / "runs" / "demo" / "tokenizer").rglob("events.out.tfevents.*")
    ):
        accumulator = EventAccumulator(str(events), size_guidance={"images": 0})
        accumulator.Reload()
        tags.update(accumulator.Tags()["images"])
    assert "val/reconstructions_real_then_1,4,8_tokens" in tags, sorted(tags)


def test_uint8_batches_train_and_validate(workspace: Path, tmp_path: Path) -> None:
    """video_dtype: uint8 ships bytes; the datamodule converts after transfer, once for all."""
    (tmp_path / "data").symlink_to(workspace / "data")
    with working_directory(tmp_path):
        cli = run_cli(
            [
                "fit",
                "--config",
                str(EXPERIMENTS / "demo" / "tokenizer.yaml"),
                *TINY_TOKENIZER,
                "--data.init_args.video_dtype=uint8",
                "--trainer.max_steps=2",
                "--trainer.val_check_interval=2",
            ]
        )
    assert cli.trainer.global_step >= 2
    assert (tmp_path / "runs" / "demo" / "tokenizer" / "checkpoints" / "last.ckpt").is_file()
