"""The shared shard stream on its own: rank/world, split, skip reports, cap, resume drop."""

from __future__ import annotations

import io
import json
import tarfile
import warnings
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from adaptok.data.shard_stream import Decode, ShardLoader, ShardStream
from adaptok.data.skips import (
    REPORT_KEY,
    REPORT_ONLY_KEY,
    NoUsableSamplesError,
    SkipLedger,
    SkippedSamplesWarning,
    SkipSample,
    SkipTracker,
    merge_reports,
)
from adaptok.distributed import rank_and_world_size


def test_rank_and_world_size_prefers_the_trainer_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert rank_and_world_size() == (0, 1)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert rank_and_world_size(None) == (3, 4)
    assert rank_and_world_size(SimpleNamespace(global_rank=1, world_size=2)) == (1, 2)


def _shard(path: Path, values: list[int]) -> str:
    """A tar of samples ``<key>.json`` holding ``{"value": v}`` (no video member)."""
    with tarfile.open(path, "w") as archive:
        for index, value in enumerate(values):
            data = json.dumps({"value": value}).encode()
            info = tarfile.TarInfo(f"{path.stem}_{index:03d}.json")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return str(path)


class _Values(ShardStream):
    """Items ``{"value": v}``; negative values are skipped, zero gives no item, 7 gives two."""

    def __init__(self, urls: list[str], **kwargs: Any) -> None:
        super().__init__(urls, kwargs.pop("order", "ordered"), complete=None, **kwargs)

    def pass_decoder(self, worker: int) -> Decode:
        def decode(sample: dict[str, Any], tracker: SkipTracker) -> list[dict[str, Any]]:
            value = json.loads(sample["json"])["value"]
            if value < 0:
                raise SkipSample("negative")
            return [{"value": value} for _ in range(2 if value == 7 else 1 if value else 0)]

        return decode


def test_items_carry_the_counts_and_a_worker_without_items_reports_alone(tmp_path: Path) -> None:
    urls = [_shard(tmp_path / "a.tar", [1, -1, 7, -2]), _shard(tmp_path / "b.tar", [-3, 0])]
    items = list(_Values(urls))
    assert [item["value"] for item in items] == [1, 7, 7]
    assert [item[REPORT_KEY]["skipped"] for item in items] == [{"negative": 1}, {}, {"negative": 2}]
    alone = list(_Values(urls[1:]))
    assert alone == [
        {
            REPORT_ONLY_KEY: True,
            REPORT_KEY: {"skipped": {"negative": 1}, "notes": {}, "shards": {urls[1]: 1}},
        }
    ]
    capped = _Values(urls, order="resampled", samples_per_worker=4)
    assert len(list(capped)) == 4
    bad = _shard(tmp_path / "c.tar", [-5, -6, 1])
    with pytest.raises(NoUsableSamplesError, match="x: 2 samples in a row"):
        list(_Values([bad], max_consecutive_skips=2, split="x"))


def test_ranks_split_the_shards(tmp_path: Path) -> None:
    urls = [_shard(tmp_path / f"s{i}.tar", [10 * i + 1, 10 * i + 2]) for i in range(3)]
    seen = [[item["value"] for item in _Values(urls, rank=r, world_size=2)] for r in (0, 1)]
    assert seen == [[1, 2, 21, 22], [11, 12]]


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    report = merge_reports([item.get(REPORT_KEY) or {} for item in items])
    values = [item["value"] for item in items if not item.get(REPORT_ONLY_KEY)]
    if not values:
        return {REPORT_KEY: report, REPORT_ONLY_KEY: True}
    return {"value": values, REPORT_KEY: report}


@pytest.mark.filterwarnings("ignore:skipped 1 sample")  # the reference passes
def test_loader_drops_resumed_batches_and_reports_each_pass(tmp_path: Path) -> None:
    urls = [_shard(tmp_path / "a.tar", [1, 2, -1, 3, 4, 5])]
    counts: Counter = Counter()
    loader = ShardLoader(
        _Values(urls, order="shuffled", shuffle_buffer=3, seed=4),
        SkipLedger(counts, noun="thing"),
        resume_at=(1, 2),
        batch_size=2,
        collate_fn=_collate,
    )
    full = ShardLoader(
        _Values(urls, order="shuffled", shuffle_buffer=3, seed=4),
        SkipLedger(),
        batch_size=2,
        collate_fn=_collate,
    )
    with pytest.warns(SkippedSamplesWarning, match=r"skipped 1 thing\(s\) in train epoch 1"):
        resumed = [batch["value"] for batch in loader]
    reference = [[batch["value"] for batch in full] for _ in range(2)]
    assert resumed == reference[1][2:]  # epoch 1 after its first two batches
    assert counts == {"negative": 1}  # the dropped batches' skips are counted too
    empty = ShardLoader(
        _Values([_shard(tmp_path / "b.tar", [-1])]),
        SkipLedger(empty_pass_error=False),
        batch_size=2,
        collate_fn=_collate,
    )
    with pytest.warns(SkippedSamplesWarning, match="produced no sample"):
        assert list(empty) == []


def test_loader_can_pass_report_only_batches_on_without_warning(tmp_path: Path) -> None:
    """``yield_report_only`` and ``warn_skips=False``: every batch's counts reach the consumer,
    which reports them itself; the defaults swallow report-only batches and warn."""
    mixed = _shard(tmp_path / "a.tar", [1, -1, 2, -2, 3])
    only_skips = _shard(tmp_path / "b.tar", [-1, 0, -2])

    def loader(urls: list[str], ledger: SkipLedger, **kwargs: Any) -> ShardLoader:
        return ShardLoader(
            _Values(urls), ledger, counts_in_batch=True, batch_size=2, collate_fn=_collate, **kwargs
        )

    quiet = {"yield_report_only": True, "warn_skips": False}
    counts: Counter = Counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(loader([mixed], SkipLedger(counts), **quiet))
        alone = list(loader([only_skips], SkipLedger(counts, empty_pass_error=False), **quiet))
    assert [str(w.message) for w in caught if issubclass(w.category, UserWarning)] == []
    assert [(b["value"], b[REPORT_KEY]) for b in batches] == [
        ([1, 2], {"negative": 2}),
        ([3], {}),
    ]
    assert alone == [{REPORT_KEY: {"negative": 2}, REPORT_ONLY_KEY: True}]
    assert counts == {"negative": 4}  # the ledger's totals all the same
    with pytest.warns(SkippedSamplesWarning, match=r"skipped 2 sample\(s\) in train epoch 0"):
        assert [b["value"] for b in loader([mixed], SkipLedger())] == [[1, 2], [3]]
    with pytest.warns(SkippedSamplesWarning, match="produced no sample"):
        assert list(loader([only_skips], SkipLedger(empty_pass_error=False))) == []
    # A report-only batch is not a batch: a pass of those alone is still refused.
    refused = loader([only_skips], SkipLedger(), **quiet)
    with pytest.raises(NoUsableSamplesError, match="produced no batch"):
        list(refused)
    # Resuming drops batches by count, which report-only ones would throw off: refused.
    with pytest.raises(ValueError, match="resume_at"):
        loader([mixed], SkipLedger(), resume_at=(0, 1), **quiet)


@pytest.mark.parametrize("damage", ["cut at a member's end", "garbled header"])
def test_a_damaged_shard_is_a_counted_skip_in_a_worker(tmp_path: Path, damage: str) -> None:
    """``tarfile`` ends quietly at such damage: the rest of the shard must not vanish unseen."""
    damaged = Path(_shard(tmp_path / "bad.tar", [1, 2, 3]))
    data = damaged.read_bytes()[: 2 * 1024]  # two whole members (header + data block each)
    if damage == "garbled header":
        data += b"\x07" * 1024 + damaged.read_bytes()[3 * 1024 :]
    damaged.write_bytes(data)
    good = _shard(tmp_path / "good.tar", [4, 5])
    counts: Counter = Counter()
    loader = ShardLoader(
        _Values([str(damaged), good]),
        SkipLedger(counts, noun="thing"),
        batch_size=1,
        num_workers=1,
        collate_fn=_collate,
    )
    with pytest.warns(SkippedSamplesWarning, match=r"unreadable shard \(ReadError\): 1"):
        values = [value for batch in loader for value in batch["value"]]
    assert values == [1, 4, 5]  # the damaged shard's last whole sample goes with the damage
    assert counts == {"unreadable shard (ReadError)": 1}
    report = merge_reports(
        [item[REPORT_KEY] for item in _Values([str(damaged)]) if REPORT_KEY in item]
    )
    assert report["shards"] == {str(damaged): 1}


def test_persistent_workers_read_each_pass_s_epoch(tmp_path: Path) -> None:
    urls = [_shard(tmp_path / f"s{i}.tar", list(range(10 * i + 1, 10 * i + 9))) for i in range(2)]

    def passes(**kwargs: Any) -> list[list[int]]:
        loader = ShardLoader(
            _Values(urls, order="shuffled", shuffle_buffer=5, seed=3),
            SkipLedger(),
            batch_size=4,
            collate_fn=_collate,
            **kwargs,
        )
        return [[v for batch in loader for v in batch["value"]] for _ in range(3)]

    reference = passes()
    assert reference[0] != reference[1] != reference[2]  # each epoch its own order
    assert passes(num_workers=1, persistent_workers=True) == reference


def test_a_quiet_pass_cut_short_stays_quiet_when_the_ledger_is_flushed(tmp_path: Path) -> None:
    """A consumer that stops a ``warn_skips=False`` pass early and keeps the iterator: the
    ledger's :meth:`~SkipLedger.flush` (a datamodule's teardown) must not warn for it, while a
    warning pass cut short the same way is still reported."""
    urls = [_shard(tmp_path / "a.tar", [1, -1, 2, 3, 4, 5])]

    def first_batch(ledger: SkipLedger, warn_skips: bool) -> Any:
        loader = ShardLoader(
            _Values(urls), ledger, warn_skips=warn_skips, batch_size=2, collate_fn=_collate
        )
        iterator = iter(loader)
        return iterator, next(iterator)

    counts: Counter = Counter()
    quiet = SkipLedger(counts)
    kept, batch = first_batch(quiet, warn_skips=False)
    assert batch["value"] == [1, 2]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet.flush()
    assert [str(w.message) for w in caught] == []
    assert counts == {"negative": 1}
    loud = SkipLedger()
    kept_too, _ = first_batch(loud, warn_skips=True)
    with pytest.warns(SkippedSamplesWarning, match=r"skipped 1 sample\(s\) in train epoch 0"):
        loud.flush()
    del kept, kept_too
