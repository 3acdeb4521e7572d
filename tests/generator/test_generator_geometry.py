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


def _shard(
    folder: Path,
    writer: Any,
    candidates: tuple[int, ...],
    block_size: int = 8,
    name: str = "train-000000.tar",
) -> str:
    rng = np.random.default_rng(0)
    path = folder / name
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


def test_every_shard_is_read_once_and_all_must_agree_on_the_candidates(
    tmp_path: Path,
    tiny_tokenizer_spec: dict,
    annotation_shard_writer: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fit start reads each shard's first annotation once, for the tokenizer hash and the
    candidate lengths; a shard of another scorer's candidates stops it, naming the shard."""
    import modules.generator as generator_module

    first = _shard(tmp_path, annotation_shard_writer, (2, 4, 6, 8))
    same = _shard(tmp_path, annotation_shard_writer, (2, 4, 6, 8), name="val-000000.tar")
    other = _shard(tmp_path, annotation_shard_writer, (4, 8), name="train-000001.tar")
    reads: list[str] = []
    original = generator_module.annotation_metadata

    def counting(shard: str) -> dict | None:
        reads.append(shard)
        return original(shard)

    monkeypatch.setattr(generator_module, "annotation_metadata", counting)
    module = _module(tiny_tokenizer_spec)
    datamodule = types.SimpleNamespace(shards={"train": [first], "val": [same]}, spec=None)
    module._trainer = types.SimpleNamespace(datamodule=datamodule)
    with pytest.warns(UserWarning, match="record no tokenizer hash"):
        module.on_fit_start()
    assert sorted(reads) == sorted([first, same]) and module.candidate_lengths == [2, 4, 6, 8]
    datamodule.shards["train"].append(other)
    mixed = _module(tiny_tokenizer_spec)
    mixed._trainer = types.SimpleNamespace(datamodule=datamodule)
    with pytest.raises(ValueError, match=r"train-000001.tar was annotated with candidate_lengths"):
        mixed.resolve_candidate_lengths(mixed.shard_metadata(("train", "val")))
    # testing a trained module compares, and does not adopt
    datamodule.shards["test"] = [other]
    no_hash = pytest.warns(UserWarning, match="record no tokenizer hash")
    contradicts = pytest.raises(ValueError, match=r"model candidate_lengths=\[2, 4, 6, 8\] but")
    with contradicts, no_hash:
        module.on_test_start()
    unset = _module(tiny_tokenizer_spec)
    unset._trainer = types.SimpleNamespace(datamodule=datamodule)
    with pytest.warns(UserWarning, match="record no tokenizer hash"):
        unset.on_test_start()
    assert unset.candidate_lengths is None


def test_an_old_generator_checkpoint_loads_through_lightning(
    tmp_path: Path, tiny_tokenizer_spec: dict
) -> None:
    """A checkpoint written before `generator_spec` existed (the whole spec under
    `generator`) restores with `GeneratorModule.load_from_checkpoint`."""
    import lightning
    import torch

    module = _module(tiny_tokenizer_spec, candidate_lengths=[2, 4, 6, 8])
    hparams = dict(module.hparams)
    hparams["generator"] = hparams.pop("generator_spec")  # the older layout
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": hparams,
        "pytorch-lightning_version": lightning.__version__,
    }
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    restored = GeneratorModule.load_from_checkpoint(old, map_location="cpu")
    assert restored.hparams["generator_spec"] == module.hparams["generator_spec"]
    assert restored.candidate_lengths == [2, 4, 6, 8]
    for key, value in module.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key
    hparams["generator"]["init_args"]["codebook_size"] = 128  # not its tokenizer's
    torch.save(checkpoint, old)
    with pytest.raises(ValueError, match="codebook_size=128 but its tokenizer has"):
        GeneratorModule.load_from_checkpoint(old, map_location="cpu")


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
