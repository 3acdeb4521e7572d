"""The committed demo tokenizer weights match the committed recipe (docs/demo_weights.md)."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch
import yaml

from adaptok.pretrained import load_pretrained
from modules.cli import run_cli
from tests.conftest import EXPERIMENTS, REPO

WEIGHTS = REPO / "pretrained" / "demo-tokenizer"
TOKENIZER = EXPERIMENTS / "demo" / "tokenizer.yaml"
# `make demo-weights`: the shard URLs, the recipe, the longer run
RECIPE = [
    EXPERIMENTS / "demo" / "data.yaml",
    TOKENIZER,
    TOKENIZER.with_name("tokenizer.pretrain.yaml"),
]
IGNORED = {"config"}  # the paths of the YAML files themselves


def _resolved(configs: list[Path]) -> dict:
    args = ["fit", *(a for c in configs for a in ("--config", str(c))), "--print_config"]
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit):
        run_cli(args)
    return yaml.safe_load(out.getvalue())


def _differences(ours: object, theirs: object, where: str = "") -> list[str]:
    if isinstance(ours, dict) and isinstance(theirs, dict):
        found = []
        for key in sorted(set(ours) | set(theirs)):
            if where == "" and key in IGNORED:
                continue
            found += _differences(ours.get(key), theirs.get(key), f"{where}.{key}".lstrip("."))
        return found
    return [] if ours == theirs else [f"{where}: shipped {theirs!r}, recipe {ours!r}"]


def test_shipped_weights_record_the_committed_recipe() -> None:
    shipped = yaml.safe_load((WEIGHTS / "config.yaml").read_text())
    differences = _differences(_resolved(RECIPE), shipped)
    assert not differences, (
        "pretrained/demo-tokenizer was trained with another recipe than experiments/demo/"
        "data.yaml + tokenizer.yaml + tokenizer.pretrain.yaml resolve to now; run "
        "`make demo-weights` (docs/demo_weights.md) or revert the recipe:\n"
        + "\n".join(differences)
    )


def test_shipped_weights_load_and_record_their_provenance() -> None:
    spec = json.loads((WEIGHTS / "spec.json").read_text())
    data = spec["info"]["training_data"]
    assert len(data["fingerprint"]) == 64 and data["commit"] not in (None, "unknown")
    assert data["files"] and all(  # only training shards went into the fingerprint
        any(Path(path).match(url) for url in data["train_urls"]) for path in data["files"]
    )
    model = load_pretrained(WEIGHTS)
    recipe = yaml.safe_load(TOKENIZER.read_text())["model"]["init_args"]["tokenizer"]
    assert (
        model.specs["tokenizer"]["init_args"]["tokens_per_block"]
        == (recipe["init_args"]["tokens_per_block"])
    )
    with torch.no_grad():
        encoding = model.encode(torch.rand(1, 3, model.num_frames, 64, 64))
    assert encoding.codes.shape == (1, model.num_blocks * model.tokens_per_block)
