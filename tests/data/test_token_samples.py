"""One definition of a valid token sample: ``verify`` flags exactly what the loader skips."""

from __future__ import annotations

import io
import json
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest

from adaptok.data.cli import main
from adaptok.data.token_samples import InvalidTokenSample, check_token_sample, sample_spec
from datamodules.token_shards import TokenShardsDataModule
from tests.data.test_field_inputs_2_rest import _npy, _token_shard


def _members(shard: Path) -> dict[str, dict[str, bytes]]:
    """The shard's samples: key -> suffix -> bytes."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(shard) as archive:
        for member in archive.getmembers():
            key, _, suffix = member.name.partition(".")
            samples.setdefault(key, {})[suffix] = archive.extractfile(member).read()
    return samples


def _write(shard: Path, samples: dict[str, dict[str, bytes]]) -> None:
    """Write ``samples`` (key -> suffix -> bytes) as the shard, in order."""
    with tarfile.open(shard, "w") as archive:
        for key, files in samples.items():
            for suffix, data in files.items():
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))


def test_verify_and_the_loader_agree_on_every_sample(tmp_path: Path, capsys) -> None:
    shard = _token_shard(tmp_path / "tokens", count=5)
    samples = _members(shard)
    meta = json.loads(samples["clip0_w00000"]["json"])
    costs = np.random.default_rng(0).random((4, 4)).astype(np.float32)
    costs[1, 2] = np.nan
    cond = np.zeros((4, 8), np.uint16)
    cond[0, 0] = 999  # outside the codebook of 64
    samples["clip0_w00000"]["json"] = json.dumps({**meta, "label": "zero"}).encode()
    samples["clip1_w00000"]["costs.npy"] = _npy(costs)
    samples["clip2_w00000"]["cond.npy"] = _npy(cond)  # checked in class mode too
    samples["clip3_w00000"]["json"] = json.dumps({**meta, "budgets": [0.5, 1.0]}).encode()
    _write(shard, samples)
    assert main(["verify", str(tmp_path / "tokens")]) == 1
    report = capsys.readouterr().out
    assert "corrupt: 4" in report, report
    assert "clip0_w00000: metadata 'label' is 'zero', not an integer" in report
    assert "clip1_w00000: costs.npy holds NaN or infinite costs" in report
    assert "clip2_w00000: cond.npy holds 0..999, outside the codebook of 64" in report
    assert "clip3_w00000: metadata budgets [0.5, 1.0], the data's are [0.25, 1.0]" in report
    assert "no video): train 1" in report  # clip4, the one valid window

    data = TokenShardsDataModule(
        train_urls=str(tmp_path / "tokens/*.tar"), batch_size=2, num_workers=0, shuffle_buffer=0
    )
    data.setup("fit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keys = [key for batch in data.train_dataloader() for key in batch["key"]]
    assert keys == ["clip4_w00000"]
    assert dict(data.skip_counts) == {
        "bad label": 1,
        "costs: not finite": 1,
        "code out of range": 1,
        "mismatched budgets": 1,
    }


def test_a_fault_has_a_stable_reason_and_a_detail() -> None:
    codes = np.arange(32, dtype=np.uint16).reshape(4, 8)
    lengths = np.full((2, 4), 8, np.int16)
    meta = {"num_blocks": 4, "tokens_per_block": 8, "codebook_size": 64, "budgets": [0.5, 1]}
    files = {"json": json.dumps(meta).encode(), "codes.npy": _npy(codes)}
    files["lengths.npy"] = _npy(lengths)
    checked = check_token_sample(files)
    assert checked.spec["budgets"] == [0.5, 1.0] and checked.label == -1
    assert checked.codes.dtype == np.int64 and checked.cond is None
    assert sample_spec(files) == checked.spec
    with pytest.raises(InvalidTokenSample, match=r"lengths.npy holds 0..8, outside 1..8") as fault:
        check_token_sample({**files, "lengths.npy": _npy(np.eye(2, 4, dtype=np.int16) * 8)})
    assert fault.value.reason == "length out of range"
    with pytest.raises(
        InvalidTokenSample, match="K, M, V = \\[4, 8, 64\\], the data's are"
    ) as fault:
        check_token_sample(files, {**meta, "codebook_size": 128})
    assert fault.value.reason == "mismatched tokenizer sizes"
    with pytest.raises(InvalidTokenSample, match="token sample without cond.npy") as fault:
        check_token_sample(files, need_cond=True)
    assert fault.value.reason == "missing cond.npy"
    unnamed = {**files, "json": json.dumps({**meta, "num_blocks": None}).encode()}
    assert sample_spec(unnamed) is None
    with pytest.raises(InvalidTokenSample, match="'num_blocks' is None, not a positive"):
        check_token_sample(unnamed)
    with pytest.raises(InvalidTokenSample, match="duplicate key") as fault:
        check_token_sample({**files, "__problem__": "duplicate key in shard"})
    assert isinstance(fault.value, ValueError)
