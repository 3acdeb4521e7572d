"""TokenShardsDataModule: real token shards -> padded batches -> codes and lengths back."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from token_helpers import (
    npy_bytes,
    random_annotations,
    read_annotations,
    token_sample,
    write_token_shard,
)

from adaptok.data.skips import SkippedSamplesWarning
from adaptok.nn.generator_sequence import GeneratorVocab, parse_sequence
from datamodules.token_shards import TokenShardsDataModule

V, K, M = 64, 4, 8
BUDGETS = (0.25, 0.5, 0.75, 1.0)


def _originals(samples: list[dict[str, Any]]) -> dict[str, tuple[np.ndarray, np.ndarray, dict]]:
    return {
        s["__key__"]: (
            np.load(io.BytesIO(s["codes.npy"])).astype(np.int64),
            np.load(io.BytesIO(s["lengths.npy"])).astype(np.int64),
            json.loads(s["json"]),
        )
        for s in samples
    }


def _shards(tmp_path: Path, samples: list[dict[str, Any]], per_shard: int = 5) -> str:
    for i in range(0, len(samples), per_shard):
        write_token_shard(tmp_path / f"train-{i // per_shard:06d}.tar", samples[i : i + per_shard])
    return str(tmp_path / "train-*.tar")


def _datamodule(urls: str, **overrides: Any) -> TokenShardsDataModule:
    args: dict[str, Any] = dict(
        train_urls=urls, batch_size=4, num_workers=0, shuffle_buffer=0, seed=0
    )
    args.update(overrides)
    data = TokenShardsDataModule(**args)
    data.setup("fit")
    return data


def _batches(data: TokenShardsDataModule, loader: Any) -> list[dict[str, Any]]:
    return [data.on_before_batch_transfer(batch, 0) for batch in loader]


def test_round_trip_shards_to_batches_to_codes(tmp_path: Path) -> None:
    samples = random_annotations(10, K, M, V, BUDGETS)
    originals = _originals(samples)
    data = _datamodule(_shards(tmp_path, samples))
    assert data.spec == {
        "num_blocks": K,
        "tokens_per_block": M,
        "codebook_size": V,
        "budgets": list(BUDGETS),
    }
    seen: list[str] = []
    for batch in _batches(data, data.train_dataloader()):
        assert set(batch) >= {
            "tokens", "block_index", "block_position", "loss_mask", "padding_mask",
            "label", "budget_level", "budget", "prefix_length",
        }  # fmt: skip
        assert batch["tokens"].dtype == torch.long and batch["label"].dtype == torch.long
        assert batch["budget"].dtype == torch.float32
        for row, key in enumerate(batch["key"]):
            codes, lengths, meta = originals[key]
            level = int(batch["budget_level"][row])
            assert float(batch["budget"][row]) == pytest.approx(BUDGETS[level])
            assert int(batch["label"][row]) == meta["label"]
            stream = batch["tokens"][row][batch["padding_mask"][row]]
            parsed_codes, parsed_lengths = parse_sequence(stream, K, M, codebook_size=V)
            np.testing.assert_array_equal(parsed_lengths.numpy(), lengths[level])
            for b in range(K):
                kept = lengths[level, b]
                np.testing.assert_array_equal(parsed_codes[b, :kept].numpy(), codes[b, :kept])
            seen.append(key)
    assert sorted(seen) == sorted(originals)


def test_longest_sample_keeps_its_final_eob_in_the_loss(tmp_path: Path) -> None:
    long_lengths = np.full((len(BUDGETS), K), M)  # every budget at full length: the longest
    short_lengths = np.ones((len(BUDGETS), K), dtype=np.int64)
    codes = np.arange(K * M).reshape(K, M) % V
    samples = [
        token_sample("short_w00000", codes, short_lengths, BUDGETS, V),
        token_sample("long_w00000", codes, long_lengths, BUDGETS, V),
    ]
    data = _datamodule(_shards(tmp_path, samples))
    (batch,) = _batches(data, data.train_dataloader())
    eob = GeneratorVocab(V).eob
    full = K * M + K  # every code and every <EOB>
    assert batch["tokens"].shape == (2, full)
    row = batch["key"].index("long_w00000")
    assert int(batch["tokens"][row, -1]) == eob
    assert bool(batch["loss_mask"][row, -1]) and bool(batch["padding_mask"][row, -1])
    assert int((batch["tokens"][row] == eob).sum()) == K
    assert int(batch["loss_mask"][row].sum()) == full
    other = 1 - row
    assert int(batch["padding_mask"][other].sum()) == 2 * K
    assert not bool(batch["loss_mask"][other, 2 * K :].any())


def test_budget_draw_changes_per_epoch_and_follows_the_seed(tmp_path: Path) -> None:
    urls = _shards(tmp_path, random_annotations(20, K, M, V, BUDGETS))

    def draws(seed: int, epochs: int = 3) -> list[dict[str, int]]:
        data = _datamodule(urls, seed=seed, shuffle_buffer=8)
        loader = data.train_dataloader()
        result = []
        for _ in range(epochs):
            levels: dict[str, int] = {}
            for batch in _batches(data, loader):
                levels.update(zip(batch["key"], batch["budget_level"].tolist(), strict=True))
            result.append(levels)
        return result

    first, again, other = draws(0), draws(0), draws(1)
    assert first == again  # reproducible from the seed
    assert all(len(epoch) == 20 for epoch in first)
    assert first[0] != first[1] != first[2]  # a fresh draw each epoch
    assert first != other
    counts = Counter(level for epoch in first for level in epoch.values())
    assert set(counts) == {0, 1, 2, 3}  # every annotated budget gets drawn

    # budget_levels restricts the draw; a level that does not exist is refused
    data = _datamodule(urls, budget_levels=[1, 3])
    for batch in _batches(data, data.train_dataloader()):
        assert set(batch["budget_level"].tolist()) <= {1, 3}
    with pytest.raises(ValueError, match="budget_levels"):
        _datamodule(urls, budget_levels=[4])


def test_bad_samples_are_counted_skips(tmp_path: Path) -> None:
    good = random_annotations(3, K, M, V, BUDGETS)
    rng = np.random.default_rng(1)
    codes = rng.integers(0, V, (K, M))
    lengths = rng.integers(1, M + 1, (len(BUDGETS), K))
    too_long = lengths.copy()
    too_long[0, 0] = M + 1
    zero = lengths.copy()
    zero[2, 1] = 0
    big_code = codes.copy()
    big_code[1, 1] = V
    sizes_meta = json.loads(token_sample("sizes_w00000", codes, lengths, BUDGETS, V)["json"])
    bad = [
        token_sample("shape_w00000", codes[:, :-1], lengths, BUDGETS, V, tokens_per_block=M),
        token_sample("long_w00000", codes, too_long, BUDGETS, V),
        token_sample("zero_w00000", codes, zero, BUDGETS, V),
        token_sample("code_w00000", big_code, lengths, BUDGETS, V),
        token_sample("budgets_w00000", codes, lengths, (0.2, 0.4, 0.6, 0.8), V),
        token_sample("label_w00000", codes, lengths, BUDGETS, V, label=-1),
        {**token_sample("sizes_w00000", codes, lengths, BUDGETS, V),
         "json": json.dumps({**sizes_meta, "codebook_size": 2 * V}).encode()},
        {**token_sample("nolen_w00000", codes, lengths, BUDGETS, V), "lengths.npy": b"junk"},
        {**token_sample("json_w00000", codes, lengths, BUDGETS, V), "json": b"{not json"},
        {**token_sample("float_w00000", codes, lengths, BUDGETS, V),
         "codes.npy": npy_bytes(codes.astype(np.float32))},
    ]  # fmt: skip
    missing = token_sample("missing_w00000", codes, lengths, BUDGETS, V)
    del missing["lengths.npy"]
    samples = [good[0], *bad[:5], good[1], *bad[5:], missing, good[2]]
    urls = _shards(tmp_path, samples, per_shard=len(samples))
    for workers in (0, 1):
        data = _datamodule(urls, num_workers=workers)
        with pytest.warns(SkippedSamplesWarning, match="skipped 11 token sample"):
            keys = [k for b in _batches(data, data.train_dataloader()) for k in b["key"]]
            data.teardown("fit")
        assert sorted(keys) == sorted(s["__key__"] for s in good)
        assert data.skip_counts == Counter(
            {
                "codes: wrong shape": 1,
                "length out of range": 2,
                "code out of range": 1,
                "mismatched budgets": 1,
                "label out of range": 1,
                "mismatched tokenizer sizes": 1,
                "unreadable lengths.npy": 1,
                "bad metadata": 1,
                "codes: not integers": 1,
                "missing lengths.npy": 1,
            }
        ), data.skip_counts


def test_frame_prediction_prefix(tmp_path: Path) -> None:
    samples = random_annotations(4, K, M, V, BUDGETS, with_cond=True)
    conds = {s["__key__"]: np.load(io.BytesIO(s["cond.npy"])).astype(np.int64) for s in samples}
    originals = _originals(samples)
    data = _datamodule(_shards(tmp_path, samples), condition="frame_prediction")
    for batch in _batches(data, data.train_dataloader()):
        assert batch["prefix_length"].tolist() == [2 * M + 1] * len(batch["key"])
        for row, key in enumerate(batch["key"]):
            tokens = batch["tokens"][row]
            np.testing.assert_array_equal(tokens[: 2 * M].numpy(), conds[key][:2].reshape(-1))
            assert int(tokens[2 * M]) == GeneratorVocab(V).sep
            assert not bool(batch["loss_mask"][row, : 2 * M + 1].any())
            level = int(batch["budget_level"][row])
            stream = tokens[batch["padding_mask"][row]]
            parsed_codes, parsed_lengths = parse_sequence(stream, K, M, codebook_size=V)
            np.testing.assert_array_equal(parsed_codes[0].numpy(), conds[key][0])
            np.testing.assert_array_equal(parsed_lengths[1:].numpy(), originals[key][1][level, 1:])
    # class shards without cond.npy are skipped in frame-prediction mode, with the reason
    plain = tmp_path / "plain"
    urls = _shards(plain, random_annotations(2, K, M, V, BUDGETS))
    data = _datamodule(urls, condition="frame_prediction")
    with pytest.warns(SkippedSamplesWarning, match="no sample"):
        assert _batches(data, data.train_dataloader()) == []


def test_sizes_that_contradict_the_shards_are_refused(tmp_path: Path) -> None:
    urls = _shards(tmp_path, random_annotations(2, K, M, V, BUDGETS))
    with pytest.raises(ValueError, match="codebook_size=128 was asked"):
        _datamodule(urls, codebook_size=128)
    with pytest.raises(FileNotFoundError):
        _datamodule(str(tmp_path / "nothing-*.tar"))


def test_real_annotations_round_trip(annotated_tokens: Path) -> None:
    stored = read_annotations(annotated_tokens)
    meta = next(iter(stored.values()))["json"]
    data = TokenShardsDataModule(
        val_urls=str(annotated_tokens / "*.tar"), batch_size=5, num_workers=0
    )
    data.setup("validate")
    blocks, size, vocab = meta["num_blocks"], meta["tokens_per_block"], meta["codebook_size"]
    seen = 0
    for batch in _batches(data, data.val_dataloader()):
        for row, key in enumerate(batch["key"]):
            level = int(batch["budget_level"][row])
            stream = batch["tokens"][row][batch["padding_mask"][row]]
            codes, lengths = parse_sequence(stream, blocks, size, codebook_size=vocab)
            expected = stored[key]["lengths.npy"][level].astype(np.int64)
            np.testing.assert_array_equal(lengths.numpy(), expected)
            for b in range(blocks):
                np.testing.assert_array_equal(
                    codes[b, : expected[b]].numpy(), stored[key]["codes.npy"][b, : expected[b]]
                )
            seen += 1
    assert seen == len(stored) == 18


def test_resampled_epochs_urls_and_workers(tmp_path: Path) -> None:
    samples = random_annotations(12, K, M, V, BUDGETS)
    _shards(tmp_path, samples, per_shard=4)  # train-000000..000002.tar
    brace = str(tmp_path / "train-{000000..000002}.tar")
    piped = [f"pipe:cat {p}" for p in sorted(tmp_path.glob("train-*.tar"))]
    for urls in (brace, piped):
        data = _datamodule(urls, epoch_length=10, num_workers=1, batch_size=3)
        assert data.spec is not None and data.spec["num_blocks"] == K
        loader = data.train_dataloader()
        for _ in range(2):  # persistent worker, two epochs of ceil(10 / 3) batches
            batches = _batches(data, loader)
            assert len(batches) == 4
            keys = [k for b in batches for k in b["key"]]
            assert set(keys) <= {s["__key__"] for s in samples}
    with pytest.raises(ValueError, match="epoch_length"):
        TokenShardsDataModule(train_urls=brace, epoch_length=0)


def test_training_workers_persist_and_read_each_epoch(tmp_path: Path) -> None:
    urls = _shards(tmp_path, random_annotations(8, K, M, V, BUDGETS), per_shard=4)

    def epochs(workers: int) -> list[list[tuple[str, int]]]:
        data = _datamodule(urls, num_workers=workers, val_urls=urls)
        loader = data.train_dataloader()
        assert loader.persistent_workers is (workers > 0)
        assert not data.val_dataloader().persistent_workers
        return [
            [(k, int(b)) for batch in loader for k, b in zip(batch["key"], batch["budget_level"])]
            for _ in range(3)
        ]

    reference = epochs(0)
    assert len({tuple(levels) for levels in reference}) == 3  # budgets drawn per epoch
    assert epochs(1) == reference
