"""The committed demo weights match the committed recipes (docs/demo_weights.md).

`make demo-weights` trains the demo tokenizer (data.yaml + tokenizer.yaml +
tokenizer.pretrain.yaml) into ``pretrained/demo-tokenizer``, then the demo scorer on that
tokenizer run (data.yaml + scorer.yaml + scorer.pretrain.yaml) into ``pretrained/demo-scorer``;
each export records its run's config, commit and training shards, checked here against the
YAML files as they resolve now.
"""

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

DEMO = EXPERIMENTS / "demo"
# network -> its export and the `make demo-weights` run: the shard URLs, the recipe, the longer run
WEIGHTS = {name: REPO / "pretrained" / f"demo-{name}" for name in ("tokenizer", "scorer")}
RECIPES = {
    name: [DEMO / "data.yaml", DEMO / f"{name}.yaml", DEMO / f"{name}.pretrain.yaml"]
    for name in WEIGHTS
}
NETWORKS = sorted(WEIGHTS)
IGNORED = {"config"}  # the paths of the YAML files themselves
_DISCRIMINATOR = "model.init_args.loss.init_args.discriminator.init_args"
# Settings the shipped config states but the recipe no longer does, because TokenizerModule
# derives them from the tokenizer (the geometry is said once; the datamodule's clip
# size through VideoShardsDataModule.configure_clip): config path -> the
# tokenizer init argument (model.init_args.tokenizer.init_args of the same resolved recipe)
# whose value it takes. A shipped value is accepted only if it equals that derived value.
DERIVED_FROM_TOKENIZER = {
    f"{_DISCRIMINATOR}.num_frames": "num_frames",
    f"{_DISCRIMINATOR}.image_size": "image_size",
    f"{_DISCRIMINATOR}.in_channels": "in_channels",
    f"{_DISCRIMINATOR}.patch_size": "patch_size",
    "model.init_args.tail_drop.init_args.max_tokens": "tokens_per_block",
    "data.init_args.num_frames": "num_frames",
    "data.init_args.resolution": "image_size",
}


def _resolved(configs: list[Path]) -> dict:
    args = ["fit", *(a for c in configs for a in ("--config", str(c))), "--print_config"]
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit):
        run_cli(args)
    return yaml.safe_load(out.getvalue())


def _differences(
    ours: object, theirs: object, derived: dict[str, object], where: str = ""
) -> list[str]:
    """Every setting where the recipe (``ours``) and the shipped config differ.

    A setting of ``derived`` (path -> the value the recipe derives) that the recipe leaves
    out or null agrees only with a shipped value equal to the derived one.
    """
    if isinstance(ours, dict) and isinstance(theirs, dict):
        found = []
        for key in sorted(set(ours) | set(theirs)):
            if where == "" and key in IGNORED:
                continue
            path = f"{where}.{key}".lstrip(".")
            found += _differences(ours.get(key), theirs.get(key), derived, path)
        return found
    if ours is None and theirs is not None and where in derived:
        ours = derived[where]  # what the recipe's tokenizer gives it
    return [] if ours == theirs else [f"{where}: shipped {theirs!r}, recipe {ours!r}"]


def _derived_values(resolved: dict) -> dict[str, object]:
    """The derived settings' values in a resolved recipe: none for the scorer, whose recipe
    never stated its geometry (its tokenizer is read from a checkpoint)."""
    tokenizer = resolved["model"]["init_args"].get("tokenizer")
    if tokenizer is None:
        return {}
    return {path: tokenizer["init_args"][name] for path, name in DERIVED_FROM_TOKENIZER.items()}


def test_derived_settings_are_checked_against_the_recipes_tokenizer() -> None:
    """A derived setting passes only with the tokenizer's value; anything else still fails."""
    recipe = {"model": {"init_args": {"tokenizer": {"init_args": {"tokens_per_block": 32}}}}}
    recipe["model"]["init_args"]["tail_drop"] = {"init_args": {"max_tokens": None, "mean": 24}}
    derived = {"model.init_args.tail_drop.init_args.max_tokens": 32}

    def shipped(max_tokens: object, mean: object = 24) -> dict:
        tail = {"init_args": {"max_tokens": max_tokens, "mean": mean}}
        tokenizer = {"init_args": {"tokens_per_block": 32}}
        return {"model": {"init_args": {"tokenizer": tokenizer, "tail_drop": tail}}}

    assert _differences(recipe, shipped(32), derived) == []
    assert _differences(recipe, shipped(16), derived) == [
        "model.init_args.tail_drop.init_args.max_tokens: shipped 16, recipe 32"
    ]
    assert len(_differences(recipe, shipped(32, mean=12), derived)) == 1
    assert _differences(recipe, shipped(32), {}) != []  # not derived: null differs from 32


@pytest.mark.parametrize("network", NETWORKS)
def test_shipped_weights_record_the_committed_recipe(network: str) -> None:
    shipped = yaml.safe_load((WEIGHTS[network] / "config.yaml").read_text())
    resolved = _resolved(RECIPES[network])
    differences = _differences(resolved, shipped, _derived_values(resolved))
    recipe = " + ".join(path.name for path in RECIPES[network])
    assert not differences, (
        f"pretrained/demo-{network} was trained with another recipe than experiments/demo/"
        f"{recipe} resolve to now; run `make demo-weights` (docs/demo_weights.md) or revert "
        "the recipe:\n" + "\n".join(differences)
    )


@pytest.mark.parametrize("network", NETWORKS)
def test_shipped_weights_load_and_record_their_provenance(network: str) -> None:
    spec = json.loads((WEIGHTS[network] / "spec.json").read_text())
    data = spec["info"]["training_data"]
    assert len(data["fingerprint"]) == 64 and data["commit"] not in (None, "unknown")
    assert data["files"] and all(  # only training shards went into the fingerprint
        any(Path(path).match(url) for url in data["train_urls"]) for path in data["files"]
    )
    model = load_pretrained(WEIGHTS[network])
    recipe = yaml.safe_load((DEMO / f"{network}.yaml").read_text())["model"]["init_args"]
    video = torch.rand(1, 3, model.num_frames, model.image_size, model.image_size)
    if network == "tokenizer":
        assert (
            model.specs["tokenizer"]["init_args"]["tokens_per_block"]
            == recipe["tokenizer"]["init_args"]["tokens_per_block"]
        )
        with torch.no_grad():
            encoding = model.encode(video)
        assert encoding.codes.shape == (1, model.num_blocks * model.tokens_per_block)
        return
    assert model.scorer is not None and model.info["metric"] == recipe["metric"]
    own = model.specs["scorer"]["init_args"]
    assert {k: own[k] for k in recipe["scorer"]["init_args"]} == recipe["scorer"]["init_args"]
    assert all(torch.isfinite(torch.tensor(model.info["cost_normalisation"])))
    tokens = model.tokenize(video, budget=0.25, mode="per_clip")
    assert tokens.lengths.shape == (1, model.num_blocks)
    assert int(tokens.lengths.sum()) == round(0.25 * model.num_blocks * model.tokens_per_block)


def test_shipped_scorer_was_trained_on_the_shipped_tokenizer() -> None:
    """The scorer's frozen tokenizer is the run pretrained/demo-tokenizer was exported from (the
    same spec and tensors), and the scorer's geometry is that tokenizer's."""
    scorer = load_pretrained(WEIGHTS["scorer"])
    tokenizer = load_pretrained(WEIGHTS["tokenizer"])
    assert scorer.specs["tokenizer"] == tokenizer.specs["tokenizer"]
    stored = tokenizer.tokenizer.state_dict()
    for key, value in scorer.tokenizer.state_dict().items():
        assert torch.equal(value, stored[key]), key
    geometry = scorer.specs["scorer"]["init_args"]
    assert (geometry["token_width"], geometry["num_blocks"], geometry["tokens_per_block"]) == (
        tokenizer.tokenizer.width,
        tokenizer.num_blocks,
        tokenizer.tokens_per_block,
    )
