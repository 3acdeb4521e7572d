"""TokenizerModule through the real CLI on the demo YAML with tiny overrides."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader

from adaptok.losses.tokenizer_loss import TokenizerLoss
from adaptok.nn.tail_drop import TailDropSampler
from adaptok.nn.tokenizer import AdapTokTokenizer
from adaptok.schedules import WarmupCosineLR
from modules import TokenizerModule
from modules.cli import run_cli
from modules.loading import CheckpointError, load_stage
from tests.conftest import EXPERIMENTS, TINY_TOKENIZER, working_directory
from tests.helpers import tiny_args

DISCRIMINATOR_ARGS = ("model", "init_args", "loss", "init_args", "discriminator", "init_args")
GEOMETRY = ("num_frames", "image_size", "in_channels", "patch_size")


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


def test_the_datamodule_takes_the_tokenizers_clip_size(tokenizer_ckpt: Path) -> None:
    """The tiny fit's data section states no clip size: the stage gave it the tokenizer's."""
    from tests.helpers import overlay

    data = overlay("demo/tokenizer.yaml")["data"]["init_args"]
    shipped = yaml.safe_load((EXPERIMENTS / "demo" / "tokenizer.yaml").read_text())
    assert not {"num_frames", "resolution"} & {*data, *shipped["data"]["init_args"]}
    checkpoint = torch.load(tokenizer_ckpt, map_location="cpu", weights_only=True)
    recorded = checkpoint["datamodule_hyper_parameters"]
    assert (recorded["num_frames"], recorded["resolution"]) == (8, 32)


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
    """A matmul inside the encoder runs in the trainer's autocast dtype."""
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
    """The prior trains at 50x the base lr (official prior_lr_mult), kept by the
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


def _discriminator_geometry(module: TokenizerModule) -> tuple[object, ...]:
    discriminator = module.loss.discriminator
    return discriminator.input_shape, discriminator.patch_size


def _tokenizer_geometry(module: TokenizerModule) -> tuple[object, ...]:
    tokenizer = module.tokenizer
    shape = (tokenizer.in_channels, tokenizer.num_frames, tokenizer.image_size)
    return (*shape, tokenizer.image_size), tuple(tokenizer.patch_size)


@pytest.mark.parametrize("config", ["demo/tokenizer.yaml", "ucf101/tokenizer.yaml"])
def test_the_geometry_is_said_once_in_the_tokenizer(config: str, tmp_path: Path) -> None:
    """The YAMLs state neither the discriminator's geometry nor tail_drop's
    max_tokens; the stage builds them from the tokenizer's."""
    for path in (EXPERIMENTS / config, EXPERIMENTS.parent / "tests" / "conf" / config):
        text = yaml.safe_load(path.read_text())
        discriminator = text
        for key in DISCRIMINATOR_ARGS:
            discriminator = (discriminator or {}).get(key)
        assert not set(GEOMETRY) & set(discriminator or {}), path
        tail = text["model"]["init_args"]["tail_drop"]["init_args"]
        assert "max_tokens" not in tail, path
    with working_directory(tmp_path):
        module = run_cli(tiny_args(config), run=False).model
    assert (
        _discriminator_geometry(module)
        == _tokenizer_geometry(module)
        == ((3, 8, 32, 32), (2, 8, 8))
    )
    assert module.tail_drop.max_tokens == module.tokenizer.tokens_per_block == 8


@pytest.mark.parametrize(
    "option",
    [
        f"--{'.'.join(DISCRIMINATOR_ARGS)}.num_frames=16",
        f"--{'.'.join(DISCRIMINATOR_ARGS)}.patch_size=[4, 8, 8]",
    ],
)
def test_a_restated_discriminator_geometry_is_refused_by_the_parser(
    option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The discriminator factory does not accept the tokenizer's geometry (as the scorer's)."""
    config = EXPERIMENTS / "demo" / "tokenizer.yaml"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "--config", str(config), option, "--print_config"])
    assert exit_info.value.code != 0
    name = option.split(".")[-1].split("=")[0]
    assert f"'{name}' is not accepted" in capsys.readouterr().err


def test_a_tail_drop_longer_than_the_tokenizers_blocks_is_refused(tmp_path: Path) -> None:
    with (
        working_directory(tmp_path),
        pytest.raises(ValueError, match=r"max_tokens=16 exceeds .* tokens_per_block M=8"),
    ):
        run_cli(
            [
                *tiny_args("demo/tokenizer.yaml"),
                "--model.init_args.tail_drop.init_args.max_tokens=16",
            ],
            run=False,
        )
    module = _tiny_module()  # a smaller max_tokens stays
    assert module.tail_drop.max_tokens == 8
    with pytest.raises(ValueError, match="max_tokens=16 exceeds"):
        TokenizerModule(
            module.tokenizer, TokenizerLoss(), TailDropSampler(min_tokens=1, max_tokens=16)
        )


def _weights(module: TokenizerModule) -> dict[str, torch.Tensor]:
    return {
        k: v for k, v in module.state_dict().items() if k.startswith(("tokenizer.", "loss.disc"))
    }


def test_checkpoints_record_only_the_discriminators_own_settings(tokenizer_ckpt: Path) -> None:
    hparams = torch.load(tokenizer_ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]
    own = hparams["loss"]["init_args"]["discriminator"]["init_args"]
    assert own == {"width": 32, "depth": 1, "heads": 2, "mlp_ratio": 4.0}
    assert hparams["tail_drop"]["init_args"]["max_tokens"] is None
    for restored in (
        TokenizerModule.load_from_checkpoint(tokenizer_ckpt),
        load_stage(tokenizer_ckpt),
    ):
        assert _discriminator_geometry(restored) == _tokenizer_geometry(restored)
        assert restored.tail_drop.max_tokens == 8
        assert any(k.startswith("loss.discriminator.") for k in _weights(restored))


def test_checkpoints_that_restate_the_geometry_still_load(
    tokenizer_ckpt: Path, tmp_path: Path
) -> None:
    """Checkpoints written before the geometry was derived: the same weights come back through
    Lightning, load_stage and --ckpt_path; a stated value not the tokenizer's is refused."""
    from modules.checkpoint_args import with_model_from_checkpoint

    checkpoint = torch.load(tokenizer_ckpt, map_location="cpu", weights_only=False)
    hparams = checkpoint["hyper_parameters"]
    stated = hparams["loss"]["init_args"]["discriminator"]["init_args"]
    stated.update(num_frames=8, image_size=32, in_channels=3, patch_size=[2, 8, 8])
    hparams["tail_drop"]["init_args"]["max_tokens"] = 8
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    reference = _weights(TokenizerModule.load_from_checkpoint(tokenizer_ckpt))
    for restored in (
        TokenizerModule.load_from_checkpoint(old, map_location="cpu"),
        load_stage(old),
    ):
        assert _discriminator_geometry(restored) == ((3, 8, 32, 32), (2, 8, 8))
        weights = _weights(restored)
        assert weights.keys() == reference.keys()
        assert all(torch.equal(weights[k], v) for k, v in reference.items())
    args = with_model_from_checkpoint(["test", "--ckpt_path", str(old)])
    model = json.loads(next(a for a in args if a.startswith("--model=")).split("=", 1)[1])
    own = model["init_args"]["loss"]["init_args"]["discriminator"]["init_args"]
    assert not set(GEOMETRY) & set(own) and own["width"] == 32
    stated["image_size"] = 64
    torch.save(checkpoint, old)
    message = r"gives the discriminator image_size=64 but .*'tokenizer'\] has image_size=32"
    with pytest.raises(CheckpointError, match=message):
        TokenizerModule.load_from_checkpoint(old)
    with pytest.raises(CheckpointError, match=message):
        with_model_from_checkpoint(["test", "--ckpt_path", str(old)])
