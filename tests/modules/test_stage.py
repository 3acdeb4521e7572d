"""StageModule: the optimizer, schedule, frozen parts and checkpoints the stages share.

The generator's default optimizer and schedule are pinned to the numbers it has always used
(AdamW 6e-4, betas (0.9, 0.95), weight decay 0.05 on linear weights only, warm-up then cosine
to 0.01), and a checkpoint written with the older ``lr`` / ``warmup_steps`` settings still
loads and trains with them.
"""

from __future__ import annotations

import types
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers.logger import Logger
from torch import nn
from torch.utils.data import DataLoader

from adaptok.nn.generator import ARGenerator
from adaptok.nn.generator_sequence import build_sequence, collate_sequences
from adaptok.schedules import WarmupCosineLR
from modules.generator import GeneratorModule
from modules.loading import load_stage
from modules.stage import OptimizerParameters, StageModule

TOKENIZER_SPEC = {
    "class_path": "adaptok.nn.AdapTokTokenizer",
    "init_args": {
        "num_frames": 16,
        "image_size": 32,
        "patch_size": [4, 8, 8],
        "frames_per_block": 4,
        "tokens_per_block": 8,
        "width": 32,
        "depth": 1,
        "heads": 2,
        "codebook_size": 64,
        "code_dim": 8,
    },
}
GENERATOR_ARGS = {
    "codebook_size": 64,
    "num_blocks": 4,
    "tokens_per_block": 8,
    "num_classes": 4,
    "num_budgets": 4,
    "width": 32,
    "depth": 1,
    "heads": 2,
    "mlp_hidden": 64,
}
GEOMETRY = ("codebook_size", "num_blocks", "tokens_per_block")  # the tokenizer's
OWN_GENERATOR_ARGS = {k: v for k, v in GENERATOR_ARGS.items() if k not in GEOMETRY}
OLDER_DEMO_SETTINGS = {
    "lr": 0.002,
    "betas": [0.9, 0.95],
    "weight_decay": 0.05,
    "warmup_steps": 5,
    "min_lr_ratio": 0.01,
}


class _Stage(StageModule):
    """A linear layer trained by the stage base, with a frozen part."""

    frozen_parts = ("frozen",)

    def __init__(self, optimizer: Any = None, scheduler: Any = None) -> None:
        super().__init__(optimizer, scheduler)
        self.layer = nn.Linear(4, 4)
        self.frozen = nn.Dropout(0.5).eval()

    def optimizer_parameters(self) -> OptimizerParameters:
        return list(self.layer.parameters())

    def default_optimizer(self, parameters: OptimizerParameters) -> torch.optim.Optimizer:
        return torch.optim.SGD(parameters, lr=0.1)


def _attach(module: pl.LightningModule, estimated_steps: float | None) -> None:
    """A stand-in trainer that only knows the run's length (or nothing, when None)."""
    trainer = types.SimpleNamespace()
    if estimated_steps is not None:
        trainer.estimated_stepping_batches = estimated_steps
    module._trainer = trainer


def _generator(**options: Any) -> GeneratorModule:
    torch.manual_seed(0)
    return GeneratorModule(
        partial(ARGenerator, **OWN_GENERATOR_ARGS),
        tokenizer_spec=TOKENIZER_SPEC,
        candidate_lengths=[2, 4, 6, 8],
        **options,
    )


def _lr_trace(module: GeneratorModule, steps: int = 12) -> dict[str, Any]:
    """Groups (with the parameters' names), the learning rates over ``steps`` and the schedule."""
    _attach(module, 10)
    configured = module.configure_optimizers()
    optimizer = configured["optimizer"]
    scheduler = configured["lr_scheduler"]["scheduler"]
    names = {id(p): name for name, p in module.named_parameters()}
    groups = [
        {
            **{k: v for k, v in group.items() if k != "params"},
            "params": [names[id(p)] for p in group["params"]],
        }
        for group in optimizer.param_groups
    ]
    rates = []
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        rates.append([group["lr"] for group in optimizer.param_groups])
    state = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    return {
        "optimizer": type(optimizer).__name__,
        "groups": groups,
        "rates": rates,
        "schedule": state,
        "interval": configured["lr_scheduler"]["interval"],
    }


# ---------------------------------------------------------------------------- the base
def test_without_a_schedule_the_default_optimizer_is_returned_alone() -> None:
    module = _Stage()
    _attach(module, None)
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["lr"] == 0.1


def test_a_schedule_without_total_steps_gets_the_trainers_estimate() -> None:
    module = _Stage(
        optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3),
        scheduler=lambda optimizer: WarmupCosineLR(optimizer, warmup_steps=2),
    )
    _attach(module, 40)
    configured = module.configure_optimizers()
    assert isinstance(configured["optimizer"], torch.optim.AdamW)
    assert configured["lr_scheduler"]["interval"] == "step"
    assert configured["lr_scheduler"]["scheduler"].total_steps == 40


def test_a_schedule_that_knows_its_length_never_asks_the_trainer() -> None:
    module = _Stage(scheduler=lambda optimizer: WarmupCosineLR(optimizer, total_steps=7))
    _attach(module, None)  # asking for the estimate would raise AttributeError
    assert module.configure_optimizers()["lr_scheduler"]["scheduler"].total_steps == 7
    module = _Stage(scheduler=lambda optimizer: WarmupCosineLR(optimizer))
    _attach(module, float("inf"))
    with pytest.raises(ValueError, match="cannot size the schedule"):
        module.configure_optimizers()


def test_frozen_parts_go_back_to_eval_at_every_training_epoch() -> None:
    module = _Stage()
    module.train()
    assert module.frozen.training
    module.on_train_epoch_start()
    assert not module.frozen.training and module.layer.training


# ---------------------------------------------------------------------------- the generator
def test_generator_default_is_adamw_with_two_groups_and_a_warmup_cosine() -> None:
    module = _generator()
    trace = _lr_trace(module)
    assert trace["optimizer"] == "AdamW" and trace["interval"] == "step"
    decayed, plain = trace["groups"]
    linear = {
        f"generator.{name}.weight"
        for name, child in module.generator.named_modules()
        if isinstance(child, nn.Linear)
    }
    assert set(decayed["params"]) == linear
    assert not set(plain["params"]) & linear
    assert len(decayed["params"]) + len(plain["params"]) == len(list(module.generator.parameters()))
    for group in (decayed, plain):
        assert "name" not in group  # unnamed: the learning-rate monitor's tags stay pg1, pg2
        assert group["initial_lr"] == 6e-4 and tuple(group["betas"]) == (0.9, 0.95)
    assert (decayed["weight_decay"], plain["weight_decay"]) == (0.05, 0.0)
    assert trace["schedule"]["warmup_steps"] == 0
    assert trace["schedule"]["total_steps"] == 10  # the trainer's estimate
    assert trace["schedule"]["min_lr_ratio"] == 0.01
    assert trace["rates"][-1] == pytest.approx([6e-6, 6e-6])


def test_generator_yaml_optimizer_reproduces_the_older_settings_exactly() -> None:
    older = _lr_trace(_generator(**OLDER_DEMO_SETTINGS))
    stated = _lr_trace(
        _generator(
            optimizer=lambda params: torch.optim.AdamW(
                params, lr=0.002, betas=(0.9, 0.95), weight_decay=0.05
            ),
            scheduler=lambda optimizer: WarmupCosineLR(
                optimizer, warmup_steps=5, min_lr_ratio=0.01
            ),
        )
    )
    assert stated == older
    assert older["groups"][0]["initial_lr"] == 0.002
    assert older["schedule"]["warmup_steps"] == 5


def test_generator_warns_that_older_settings_yield_to_a_stated_optimizer() -> None:
    with pytest.warns(UserWarning, match="lr, weight_decay ignored because `optimizer` is given"):
        module = _generator(
            optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3),
            lr=0.5,
            weight_decay=0.3,
        )
    assert _lr_trace(module)["groups"][0]["initial_lr"] == 1e-3


def test_checkpoint_with_the_older_optimizer_settings_loads(tmp_path: Path) -> None:
    """Checkpoints written before ``optimizer``/``scheduler`` keep their lr and schedule."""
    module = _generator()
    hparams = {
        "_class_path": "modules.GeneratorModule",
        "_instantiator": "lightning.pytorch.cli.instantiate_module",
        "generator": {"class_path": "adaptok.nn.ARGenerator", "init_args": GENERATOR_ARGS},
        "tokenizer_ckpt": None,
        "tokenizer_spec": TOKENIZER_SPEC,
        "budgets": [0.25, 0.5, 0.75, 1.0],
        "candidate_lengths": [2, 4, 6, 8],
        "condition_frames": 5,
        **OLDER_DEMO_SETTINGS,
        "total_steps": None,
        "temperature": 1.0,
        "top_k": None,
        "top_p": None,
        "cfg_scale": None,
    }
    path = tmp_path / "older.ckpt"
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": hparams,
            "pytorch-lightning_version": pl.__version__,
        },
        path,
    )
    restored = load_stage(path)
    for key, value in module.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key
    restored.requires_grad_(True)  # load_stage freezes it
    assert _lr_trace(restored) == _lr_trace(_generator(**OLDER_DEMO_SETTINGS))


class _Recorder(Logger):
    """Keeps the names of the logged metrics."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: set[str] = set()

    @property
    def name(self) -> str:
        return "recorder"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.keys.update(metrics)


def test_generator_fit_logs_the_same_learning_rate_tags(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    samples = []
    for index in range(4):
        codes = torch.randint(0, 64, (4, 8), generator=generator)
        lengths = torch.randint(1, 9, (4,), generator=generator)
        sequence = build_sequence(codes, lengths, codebook_size=64)
        sequence["label"] = torch.tensor(index)
        sequence["budget_level"] = torch.tensor(index)
        samples.append(sequence)
    batch = collate_sequences(samples, pad_id=64)
    recorder = _Recorder()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=recorder,
        callbacks=[LearningRateMonitor(logging_interval="step")],
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(_generator(), train_dataloaders=DataLoader([batch, batch], batch_size=None))
    assert {key for key in recorder.keys if key.startswith("lr-")} == {
        "lr-AdamW/pg1",
        "lr-AdamW/pg2",
    }
