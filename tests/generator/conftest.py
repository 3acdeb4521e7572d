"""Fixtures of the generator tests.

Shared by the annotation/datamodule tests (G-anno) and the generator tests (G-model): add
fixtures, do not rewrite the existing ones.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from token_helpers import annotate_args

# ---------------------------------------------------------------------------- G-anno fixtures


@pytest.fixture(scope="session")
def window_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic video shards of 16-frame, 32 px clips (several 8-frame windows each)."""
    from adaptok.data.cli import main as shards

    out = tmp_path_factory.mktemp("windows") / "videos"
    args = ["synthetic", "--out", str(out), "--num-clips", "6", "--seed", "3", "--size", "32"]
    code = shards(
        [*args, "--num-frames", "16", "--val-fraction", "0", "--shard-samples", "2", "--quiet"]
    )
    assert code in (0, None)
    return out


@pytest.fixture(scope="session")
def annotated_tokens(
    tmp_path_factory: pytest.TempPathFactory, window_shards: Path, scorer_ckpt: Path
) -> Path:
    """Token shards written by ``adaptok predict`` on the shipped demo annotate.yaml (tiny)."""
    from modules.cli import run_cli

    root = tmp_path_factory.mktemp("tokens")
    out = root / "tokens"
    config = annotate_args(
        root,
        out,
        predict_urls=str(window_shards / "train-*.tar"),
        stride=4,
        batch_size=8,
        num_workers=0,
    )
    run_cli(["predict", *config, f"--model.init_args.scorer_ckpt={scorer_ckpt}"])
    assert sorted(out.glob("train-*.tar")), sorted(out.iterdir())
    return out


# ---------------------------------------------------------------------------- G-model fixtures

# A 16-frame 32x32 tokenizer with 4 blocks x 8 tokens and 64 codes: random weights are enough
# to decode samples (the generator tests never need a trained one), and 16 frames feed FVD.
TINY_TOKENIZER_SPEC = {
    "class_path": "adaptok.nn.AdapTokTokenizer",
    "init_args": {
        "num_frames": 16,
        "image_size": 32,
        "patch_size": [4, 8, 8],
        "frames_per_block": 4,
        "tokens_per_block": 8,
        "width": 32,
        "depth": 1,
        "heads": 2,
        "codebook_size": 64,
        "code_dim": 8,
    },
}


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_annotation_shard(
    path: Path,
    codes: np.ndarray,
    lengths: np.ndarray,
    labels: Sequence[int],
    budgets: Sequence[float],
    cond: np.ndarray | None = None,
    candidate_lengths: Sequence[int] = (2, 4, 6, 8),
    codebook_size: int = 64,
    tokenizer_sha256: str | None = None,
) -> Path:
    """Writes one annotation shard in the format of `callbacks.AnnotationWriter`.

    Args:
        path: Tar file to write.
        codes: `(N, K, M)` codes.
        lengths: `(N, P, K)` lengths at each of the P budgets.
        labels: N class ids.
        budgets: The P budget fractions.
        cond: Optional `(N, K, M)` condition codes (frame-prediction shards).
        candidate_lengths: The scorer's candidates recorded in the metadata.
        codebook_size: V recorded in the metadata.
        tokenizer_sha256: The tokenizer hash the annotations record (None: none, as shards
            annotated elsewhere; the generator then warns that it cannot check them).
    """
    import webdataset as wds

    count, num_blocks, block_size = codes.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as sink:
        for i in range(count):
            meta = {
                "source_key": f"clip{i:03d}",
                "label": int(labels[i]),
                "class_name": f"class{int(labels[i])}",
                "window_start": 0,
                "budgets": [float(b) for b in budgets],
                "candidate_lengths": list(candidate_lengths),
                "num_blocks": num_blocks,
                "tokens_per_block": block_size,
                "codebook_size": codebook_size,
                "tokenizer": {"ckpt": "test"}
                if tokenizer_sha256 is None
                else {"ckpt": "test", "sha256": tokenizer_sha256},
            }
            sample = {
                "__key__": f"clip{i:03d}_w00000",
                "codes.npy": _npy(codes[i].astype(np.uint16)),
                "costs.npy": _npy(np.zeros((num_blocks, len(candidate_lengths)), np.float32)),
                "lengths.npy": _npy(lengths[i].astype(np.int16)),
                "json": json.dumps(meta).encode(),
            }
            if cond is not None:
                sample["cond.npy"] = _npy(cond[i].astype(np.uint16))
            sink.write(sample)
    return path


@pytest.fixture
def tiny_tokenizer_spec() -> dict:
    """Spec of a tiny random tokenizer (16 x 32 x 32 clips, 4 blocks x 8 tokens, 64 codes)."""
    return json.loads(json.dumps(TINY_TOKENIZER_SPEC))


@pytest.fixture
def annotation_shard_writer() -> Callable[..., Path]:
    """`write_annotation_shard(path, codes, lengths, labels, budgets, cond=None)`."""
    return write_annotation_shard


@pytest.fixture
def tiny_tokenizer_ckpt(tmp_path: Path, tiny_tokenizer_spec: dict) -> tuple[Path, str]:
    """A tokenizer checkpoint of the tiny spec (seeded random weights) and its weights' hash.

    Annotations written with that hash are what `GeneratorModule(tokenizer_ckpt=...)` accepts.
    """
    import torch

    from modules.annotator import state_sha256
    from modules.loading import build_network

    torch.manual_seed(0)
    tokenizer = build_network(tiny_tokenizer_spec)
    path = tmp_path / "tiny_tokenizer.ckpt"
    state = {f"tokenizer.{key}": value for key, value in tokenizer.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"tokenizer": tiny_tokenizer_spec}}, path)
    return path, state_sha256(tokenizer)
