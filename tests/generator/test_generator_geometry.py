"""GeneratorModule: its network is sized by the tokenizer, its candidates read from the shards."""

from __future__ import annotations

import types
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adaptok.nn.generator import ARGenerator
from modules.generator import GeneratorModule

OWN_ARGS = {"num_classes": 4, "num_budgets": 2, "width": 16, "depth": 1, "heads": 2}


def _module(tokenizer_spec: dict, **options: Any) -> GeneratorModule:
    return GeneratorModule(
        partial(ARGenerator, **OWN_ARGS, mlp_hidden=32),
        tokenizer_spec=tokenizer_spec,
        budgets=[0.25, 1.0],
        **options,
    )


def _attach(module: GeneratorModule, shards: list[str], spec: dict | None = None) -> None:
    """A stand-in trainer whose datamodule resolved ``shards`` for training."""
    datamodule = types.SimpleNamespace(shards={"train": shards}, spec=spec)
    module._trainer = types.SimpleNamespace(datamodule=datamodule)


def _shard(folder: Path, writer: Any, candidates: tuple[int, ...], block_size: int = 8) -> str:
    rng = np.random.default_rng(0)
    path = folder / "train-000000.tar"
    writer(
        path,
        rng.integers(0, 64, (2, 4, block_size)),
        np.stack([np.full((2, 4), 2), np.full((2, 4), block_size)], 1),
        labels=[0, 1],
        budgets=[0.25, 1.0],
        candidate_lengths=candidates,
    )
    return str(path)


def test_generator_geometry_is_the_tokenizers(tiny_tokenizer_spec: dict) -> None:
    module = _module(tiny_tokenizer_spec)
    network = module.generator
    assert (network.codebook_size, network.num_blocks, network.tokens_per_block) == (64, 4, 8)
    assert module.hparams["generator_spec"]["class_path"] == "adaptok.nn.generator.ARGenerator"
    assert module.hparams["generator_spec"]["init_args"] == {
        "codebook_size": 64,
        "num_blocks": 4,
        "tokens_per_block": 8,
        **OWN_ARGS,
        "mlp_hidden": 32,
    }
    other = {**tiny_tokenizer_spec}
    other["init_args"] = {**other["init_args"], "tokens_per_block": 16, "codebook_size": 128}
    resized = _module(other).generator
    assert (resized.codebook_size, resized.num_blocks, resized.tokens_per_block) == (128, 4, 16)


def test_candidate_lengths_come_from_the_token_shards(
    tmp_path: Path, tiny_tokenizer_spec: dict, annotation_shard_writer: Any
) -> None:
    shard = _shard(tmp_path, annotation_shard_writer, (2, 4, 6, 8))
    module = _module(tiny_tokenizer_spec)
    assert module.candidate_lengths is None
    _attach(module, [shard])
    assert module.resolve_candidate_lengths() == [2, 4, 6, 8]
    assert module.hparams["candidate_lengths"] == [2, 4, 6, 8]  # saved in the checkpoint
    agreeing = _module(tiny_tokenizer_spec, candidate_lengths=[2, 4, 6, 8])
    _attach(agreeing, [shard])
    assert agreeing.resolve_candidate_lengths() == [2, 4, 6, 8]
    contradicting = _module(tiny_tokenizer_spec, candidate_lengths=[4, 8])
    _attach(contradicting, [shard])
    with pytest.raises(ValueError, match=r"candidate_lengths=\[4, 8\] but token shard .*=\[2, 4"):
        contradicting.resolve_candidate_lengths()
    without = _module(tiny_tokenizer_spec)
    _attach(without, [])
    assert without.resolve_candidate_lengths() is None  # no shards: 1..M at sampling


def test_shards_of_other_sizes_than_the_tokenizer_are_refused(tiny_tokenizer_spec: dict) -> None:
    module = _module(tiny_tokenizer_spec)
    sizes = {"num_blocks": 4, "tokens_per_block": 8, "codebook_size": 64, "budgets": [0.25, 1]}
    _attach(module, [], sizes)
    module.check_shard_sizes()
    _attach(module, [], {**sizes, "tokens_per_block": 16})
    with pytest.raises(ValueError, match="shards hold tokens_per_block=16 but the generator's"):
        module.check_shard_sizes()


@pytest.mark.parametrize(
    ("stage", "option"),
    [
        ("scorer", "--model.init_args.scorer.init_args.tokens_per_block=32"),
        ("generator", "--model.init_args.generator.init_args.codebook_size=512"),
    ],
)
def test_a_restated_geometry_is_refused_by_the_parser(
    stage: str, option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The YAML cannot restate what the tokenizer decides: the factory does not accept it."""
    from modules.cli import run_cli
    from tests.helpers import EXPERIMENTS

    config = EXPERIMENTS / "demo" / f"{stage}.yaml"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "--config", str(config), option, "--print_config"])
    assert exit_info.value.code != 0
    name = option.split(".")[-1].split("=")[0]
    assert f"'{name}' is not accepted" in capsys.readouterr().err
