"""Helpers of the token annotation tests: write and read token shards, tiny annotation runs."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds

from tests.helpers import tiny_args, write_overlay

REPO = Path(__file__).resolve().parents[2]


def npy_bytes(array: np.ndarray) -> bytes:
    """``np.save`` of ``array`` into bytes (a ``.npy`` tar member)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def token_sample(
    key: str,
    codes: np.ndarray,
    lengths: np.ndarray,
    budgets: Sequence[float],
    codebook_size: int,
    label: int = 0,
    cond: np.ndarray | None = None,
    **meta: Any,
) -> dict[str, Any]:
    """One annotation sample in the token shard format (for ``webdataset.TarWriter``).

    Args:
        key: Sample key.
        codes: (K, M) codes, stored as uint16.
        lengths: (P, K) lengths, stored as int16.
        budgets: The P budget fractions.
        codebook_size: V.
        label: Class id.
        cond: Optional (K, M) condition codes (frame prediction).
        meta: Extra or overriding ``json`` fields.
    """
    num_blocks, block_size = codes.shape
    info = {
        "source_key": key.rsplit("_w", 1)[0],
        "label": label,
        "class_name": f"class{label}",
        "window_start": 0,
        "budgets": [float(b) for b in budgets],
        "candidate_lengths": list(range(block_size // 4, block_size + 1, block_size // 4)),
        "num_blocks": num_blocks,
        "tokens_per_block": block_size,
        "codebook_size": codebook_size,
        "tokenizer": {"ckpt": "test", "sha256": "0" * 64},
        **meta,
    }
    sample = {
        "__key__": key,
        "codes.npy": npy_bytes(codes.astype(np.uint16)),
        "costs.npy": npy_bytes(np.zeros((num_blocks, 4), dtype=np.float32)),
        "lengths.npy": npy_bytes(lengths.astype(np.int16)),
        "json": json.dumps(info).encode(),
    }
    if cond is not None:
        sample["cond.npy"] = npy_bytes(cond.astype(np.uint16))
    return sample


def write_token_shard(path: Path, samples: Sequence[dict[str, Any]]) -> Path:
    """Write ``samples`` (dicts of raw member bytes) as one WebDataset tar shard."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as sink:
        for sample in samples:
            sink.write(dict(sample))
    return path


def random_annotations(
    count: int,
    num_blocks: int = 4,
    block_size: int = 8,
    codebook_size: int = 64,
    budgets: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
    num_classes: int = 3,
    seed: int = 0,
    with_cond: bool = False,
) -> list[dict[str, Any]]:
    """``count`` valid annotation samples with random codes and lengths (lengths >= 1)."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(count):
        codes = rng.integers(0, codebook_size, (num_blocks, block_size))
        lengths = rng.integers(1, block_size + 1, (len(budgets), num_blocks))
        cond = rng.integers(0, codebook_size, (num_blocks, block_size)) if with_cond else None
        samples.append(
            token_sample(
                f"clip{i:03d}_w{i % 3:05d}",
                codes,
                lengths,
                budgets,
                codebook_size,
                label=int(i % num_classes),
                cond=cond,
            )
        )
    return samples


def annotate_args(tmp: Path, output_dir: Path, **data: Any) -> list[str]:
    """``--config`` arguments of a tiny demo annotation run into ``output_dir``.

    The shipped ``experiments/demo/annotate.yaml``, its tiny overlay, then an overlay written
    to ``tmp`` with ``output_dir`` and the ``data`` settings (``predict_urls``, ``stride``...).
    """
    run = {
        "trainer": {
            "callbacks": [
                {
                    "class_path": "callbacks.AnnotationWriter",
                    "init_args": {"output_dir": str(output_dir)},
                }
            ]
        },
        "data": {"init_args": data},
    }
    own = write_overlay(tmp / f"annotate_{output_dir.name}.yaml", run)
    return [*tiny_args("demo/annotate.yaml"), *own]


def read_annotations(folder: Path) -> dict[str, dict[str, Any]]:
    """Every sample of every finished shard in ``folder``, by key (asserts keys are unique)."""
    samples: dict[str, dict[str, Any]] = {}
    for shard in sorted(folder.glob("*.tar")):
        members: dict[str, dict[str, Any]] = {}
        with tarfile.open(shard) as archive:
            for member in archive:
                key, _, extension = member.name.partition(".")
                payload = archive.extractfile(member).read()
                if extension.endswith(".npy"):
                    value: Any = np.load(io.BytesIO(payload), allow_pickle=False)
                else:
                    value = json.loads(payload)
                members.setdefault(key, {})[extension] = value
        for key, files in members.items():
            assert key not in samples, f"window {key} written twice"
            samples[key] = files
    return samples
