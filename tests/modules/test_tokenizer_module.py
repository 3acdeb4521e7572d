"""TokenizerModule through the real CLI on the demo YAML with tiny overrides."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader

from adaptok.losses.tokenizer_loss import TokenizerLoss
from adaptok.nn.tail_drop import TailDropSampler
from adaptok.nn.tokenizer import AdapTokTokenizer
from adaptok.schedules import WarmupCosineLR
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


def _tiny_module(**module_options: object) -> TokenizerModule:
    """A 2-block tokenizer (8 frames x 32 x 32) with a prior, no LPIPS, no discriminator."""
    torch.manual_seed(0)
    tokenizer = AdapTokTokenizer(
        num_frames=8,
        image_size=32,
        patch_size=(2, 8, 8),
        frames_per_block=4,
        tokens_per_block=8,
        width=32,
        depth=1,
        heads=2,
        codebook_size=64,
        code_dim=8,
        prior_depth=1,
        prior_width=16,
        prior_heads=2,
    )
    return TokenizerModule(
        tokenizer,
        TokenizerLoss(prior_weight=0.06),
        TailDropSampler(mean=4, std=2, min_tokens=1, max_tokens=8),
        **module_options,
    )


def _video_loader() -> DataLoader:
    videos = torch.rand(8, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0))
    return DataLoader([{"video": v} for v in videos], batch_size=2)


def test_networks_follow_the_trainers_mixed_precision() -> None:
    """Issue 16.8: a matmul inside the encoder runs in the trainer's autocast dtype."""
    seen: list[torch.dtype] = []

    def record(module: nn.Module, args: object, output: torch.Tensor) -> None:
        seen.append(output.dtype)

    for precision, expected in (("bf16-mixed", torch.bfloat16), ("32-true", torch.float32)):
        module = _tiny_module(prior_lr_mult=50.0, grad_clip_norm=None)
        assert module.tokenizer.precision == "auto"
        linear = module.tokenizer.encoder.blocks[0].mlp.fc1  # a matmul of the encoder
        linear.register_forward_hook(record)
        seen.clear()
        trainer = pl.Trainer(
            accelerator="cpu",
            precision=precision,
            max_steps=2,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(module, train_dataloaders=_video_loader())
        assert seen and set(seen) == {expected}, (precision, seen)
    # told otherwise: "fp32" switches the trainer's autocast off inside the networks
    module = _tiny_module()
    module.tokenizer.precision = "fp32"
    linear = module.tokenizer.encoder.blocks[0].mlp.fc1  # a matmul of the encoder
    linear.register_forward_hook(record)
    seen.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        module.tokenizer.encode(torch.rand(1, 3, 8, 32, 32))
    assert set(seen) == {torch.float32}


def test_prior_has_its_own_learning_rate_group_and_sampling_progress() -> None:
    """Issue 16.6: the prior trains at 50x the base lr (official prior_lr_mult), kept by the
    warm-up/cosine schedule, and its scheduled sampling follows the share of training done."""
    module = _tiny_module(
        prior_lr_mult=50.0,
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-4, betas=(0.5, 0.9)),
        scheduler=lambda opt: WarmupCosineLR(opt, warmup_steps=2),
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=_video_loader())
    main, prior = trainer.optimizers[0].param_groups
    assert (main["name"], prior["name"]) == ("main", "prior")
    assert {id(p) for p in prior["params"]} == {id(p) for p in module.tokenizer.prior.parameters()}
    assert prior["initial_lr"] == pytest.approx(50 * main["initial_lr"]) == pytest.approx(5e-3)
    assert prior["lr"] == pytest.approx(50 * main["lr"]) and main["lr"] != main["initial_lr"]
    assert 0 < module.tokenizer.prior.progress < 1
    with pytest.raises(ValueError, match="prior_lr_mult"):
        _tiny_module(prior_lr_mult=0.0)
