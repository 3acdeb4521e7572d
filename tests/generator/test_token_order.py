"""Pinned sample order of the token-shard datamodule for a fixed seed.

Every pass below (shuffled and resampled training epochs, evaluation, two ranks, two
workers, damaged shards) is compared with ``token_order.json``: the keys and the budget level
drawn for each, and the skip counts and warnings. A change of the shard pipeline that
reorders a sample or draws another budget fails here.

Regenerate the pins (only for an intended change of the data stream) with
``ADAPTOK_WRITE_PINS=1 pytest tests/generator/test_token_order.py``.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from token_helpers import random_annotations, token_sample, write_token_shard

from adaptok.data.skips import SkippedSamplesWarning
from datamodules.token_shards import TokenShardsDataModule

PINS = Path(__file__).with_name("token_order.json")
WRITE = os.environ.get("ADAPTOK_WRITE_PINS") == "1"
V, K, M = 64, 4, 8
BUDGETS = (0.25, 0.5, 0.75, 1.0)


def _check(name: str, value: Any) -> None:
    """Compare ``value`` (JSON-able) with the pin ``name``; write it instead under WRITE."""
    value = json.loads(json.dumps(value))
    pins = json.loads(PINS.read_text()) if PINS.exists() else {}
    if WRITE:
        pins[name] = value
        PINS.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
        return
    assert name in pins, f"no pin {name!r}: run with ADAPTOK_WRITE_PINS=1"
    assert value == pins[name]


@pytest.fixture(scope="module")
def token_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """22 annotations in 5 shards (5, 5, 5, 5, 2 samples)."""
    folder = tmp_path_factory.mktemp("token_order")
    samples = random_annotations(22, K, M, V, BUDGETS, seed=5)
    for index in range(0, len(samples), 5):
        write_token_shard(folder / f"train-{index // 5:06d}.tar", samples[index : index + 5])
    return folder


def _datamodule(folder: Path, **overrides: Any) -> TokenShardsDataModule:
    settings: dict[str, Any] = {
        "train_urls": str(folder / "train-*.tar"),
        "val_urls": str(folder / "train-*.tar"),
        "batch_size": 3,
        "num_workers": 0,
        "shuffle_buffer": 6,
        "seed": 11,
        **overrides,
    }
    data = TokenShardsDataModule(**settings)
    data.setup("fit")
    return data


def _epochs(data: TokenShardsDataModule, split: str, count: int) -> list[Any]:
    """``[[key, budget level], ...]`` per batch, for ``count`` passes of one loader."""
    loader = getattr(data, f"{split}_dataloader")()
    passes = []
    for _ in range(count):
        batches = []
        for batch in loader:
            batch = data.on_before_batch_transfer(batch, 0)
            levels = batch["budget_level"].tolist()
            batches.append([[k, v] for k, v in zip(batch["key"], levels, strict=True)])
        passes.append(batches)
    return passes


CASES: dict[str, tuple[dict[str, Any], str, int]] = {
    "train_shuffled_w0": ({}, "train", 3),
    "train_shuffled_w2": ({"num_workers": 2}, "train", 3),
    "train_unbuffered": ({"shuffle_buffer": 0}, "train", 2),
    "train_levels": ({"budget_levels": [0, 2]}, "train", 2),
    "train_resampled_w0": ({"epoch_length": 10}, "train", 2),
    "train_resampled_w2": ({"epoch_length": 10, "num_workers": 2}, "train", 2),
    "train_resampled_unbuffered": ({"epoch_length": 10, "shuffle_buffer": 0}, "train", 3),
    "val_w2": ({"num_workers": 2}, "val", 2),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_token_shards_order_is_pinned(token_shards: Path, case: str) -> None:
    overrides, split, epochs = CASES[case]
    _check(f"tokens/{case}", _epochs(_datamodule(token_shards, **overrides), split, epochs))


def test_token_shards_order_of_two_ranks_is_pinned(
    token_shards: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = {}
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        seen[rank] = {
            "train": _epochs(_datamodule(token_shards, num_workers=2), "train", 2),
            "resampled": _epochs(_datamodule(token_shards, epoch_length=10), "train", 1),
            "val": _epochs(_datamodule(token_shards), "val", 1),
        }
    _check("tokens/two_ranks", seen)


@pytest.mark.parametrize("workers", [0, 2])
def test_token_shards_skips_are_pinned(token_shards: Path, tmp_path: Path, workers: int) -> None:
    folder = tmp_path / "damaged"
    folder.mkdir()
    for shard in sorted(token_shards.glob("train-*.tar"))[:3]:
        (folder / shard.name).write_bytes(shard.read_bytes())
    good = random_annotations(2, K, M, V, BUDGETS, seed=9)
    bad = {**good[1], "__key__": "bad_w00000", "json": b"{not json"}
    write_token_shard(folder / "train-000003.tar", [good[0], bad])
    cut = folder / "train-000001.tar"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    codes = good[0]["codes.npy"]
    odd = token_sample("odd_w00000", *_arrays(good[0]), (0.1, 0.2, 0.3, 0.4), V)
    write_token_shard(folder / "train-000004.tar", [{**odd, "codes.npy": codes}])
    data = _datamodule(folder, num_workers=workers, val_urls=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        passes = _epochs(data, "train", 2)
        data.teardown("fit")
    reports = [str(w.message) for w in caught if issubclass(w.category, SkippedSamplesWarning)]
    _check(
        f"tokens/damaged_w{workers}",
        {"passes": passes, "warnings": reports, "counts": dict(data.skip_counts)},
    )


def _arrays(sample: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    codes = np.load(io.BytesIO(sample["codes.npy"]))
    lengths = np.load(io.BytesIO(sample["lengths.npy"]))
    return codes, lengths


def test_pins_cover_every_case() -> None:
    if WRITE:
        pytest.skip("writing pins")
    assert {f"tokens/{case}" for case in CASES} <= set(json.loads(PINS.read_text()))
