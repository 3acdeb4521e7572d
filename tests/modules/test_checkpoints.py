"""Self-describing checkpoints: a scorer checkpoint restores without the tokenizer's file."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from adaptok.export import export
from modules.loading import (
    frozen_tokenizer,
    load_frozen_scorer,
    load_frozen_tokenizer,
    load_stage,
    read_checkpoint,
)


def test_scorer_checkpoint_holds_the_tokenizer_spec_and_weights(
    tokenizer_ckpt: Path, scorer_ckpt: Path
) -> None:
    checkpoint = read_checkpoint(scorer_ckpt)
    spec = checkpoint["hyper_parameters"]["tokenizer_spec"]
    assert spec == read_checkpoint(tokenizer_ckpt)["hyper_parameters"]["tokenizer"]
    from_scorer = load_frozen_tokenizer(scorer_ckpt).state_dict()
    from_tokenizer = load_frozen_tokenizer(tokenizer_ckpt).state_dict()
    assert from_scorer.keys() == from_tokenizer.keys()
    for key, value in from_tokenizer.items():
        assert torch.equal(from_scorer[key], value), key


def test_a_later_stage_takes_its_tokenizer_from_an_export_folder(
    tokenizer_ckpt: Path, tmp_path: Path
) -> None:
    """``tokenizer_ckpt`` may name an ``adaptok export`` folder (a fresh clone's committed
    weights): the same spec and tensors as the checkpoint it was exported from, frozen."""
    folder = export(tokenizer_ckpt, tmp_path / "export")
    tokenizer, spec = frozen_tokenizer(str(folder), None)
    assert spec == read_checkpoint(tokenizer_ckpt)["hyper_parameters"]["tokenizer"]
    assert not tokenizer.training and not any(p.requires_grad for p in tokenizer.parameters())
    stored = load_frozen_tokenizer(tokenizer_ckpt).state_dict()
    assert tokenizer.state_dict().keys() == stored.keys()
    for key, value in tokenizer.state_dict().items():
        assert torch.equal(value, stored[key]), key


def test_frozen_metric_networks_are_not_saved(tokenizer_ckpt: Path, scorer_ckpt: Path) -> None:
    for path, prefix in ((tokenizer_ckpt, "loss.perceptual."), (scorer_ckpt, "quality.")):
        keys = read_checkpoint(path)["state_dict"].keys()
        assert not [k for k in keys if k.startswith(prefix)], path
    # ... and restoring still builds them from the weight cache, with strict loading
    module = load_stage(scorer_ckpt)
    assert sum(p.numel() for p in module.quality.parameters()) > 0


def test_restoring_ignores_a_changed_or_missing_tokenizer_file(
    tokenizer_ckpt: Path, scorer_ckpt: Path, tmp_path: Path
) -> None:
    """After the tokenizer file is overwritten or deleted the scorer restores unchanged."""
    before = load_frozen_scorer(scorer_ckpt)
    video = torch.rand(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0))
    expected_codes = before.encode(video).codes

    copy = tmp_path / "scorer.ckpt"
    shutil.copy(scorer_ckpt, copy)
    checkpoint = torch.load(copy, weights_only=False)
    checkpoint["hyper_parameters"]["tokenizer_ckpt"] = str(tmp_path / "gone" / "last.ckpt")
    torch.save(checkpoint, copy)

    after = load_frozen_scorer(copy)
    assert torch.equal(after.encode(video).codes, expected_codes)
    for key, value in before.state_dict().items():
        assert torch.equal(after.state_dict()[key], value), key
