"""``read_tar_json``: the one reader of shard metadata, and the three readers built on it."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from adaptok.data.tar_samples import read_tar_json


def _tar(path: Path, members: list[tuple[str, bytes]]) -> str:
    with tarfile.open(path, "w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return str(path)


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def test_json_members_are_read_in_order_by_sample_key(tmp_path: Path) -> None:
    shard = _tar(
        tmp_path / "a.tar",
        [
            ("dir/clip.v0.json", _json({"frames": 40})),
            ("dir/clip.v0.mp4", b"not a video"),
            ("broken.json", b"{not json"),
            ("listed.json", _json([1, 2])),
            ("last.json", _json({"frames": 3})),
        ],
    )
    expected = [("dir/clip.v0", {"frames": 40}), ("broken", None), ("listed", None)]
    expected.append(("last", {"frames": 3}))
    assert list(read_tar_json(shard)) == expected
    # any URL WebDataset opens reads the same
    assert list(read_tar_json(f"pipe:cat {shard}")) == expected


def test_the_three_metadata_readers_share_it(tmp_path: Path) -> None:
    from datamodules.real_clips import shard_frame_counts
    from datamodules.token_shards import read_token_spec
    from modules.loading import annotation_metadata

    sizes = {"num_blocks": 4, "tokens_per_block": 8, "codebook_size": 64, "budgets": [0.5, 1]}
    shard = _tar(
        tmp_path / "tokens.tar",
        [
            ("a.json", b"[]"),  # names no sizes: skipped by read_token_spec
            ("b.json", _json({**sizes, "frames": 16})),
            ("b.codes.npy", b""),
        ],
    )
    assert annotation_metadata(shard) is None  # the first json member is not an object
    assert read_token_spec(shard)["tokens_per_block"] == 8
    with pytest.raises(ValueError, match=r"video 'a' has no 'frames'"):
        shard_frame_counts([shard])
    videos = _tar(tmp_path / "videos.tar", [("x.v0.json", _json({"frames": 40}))])
    assert shard_frame_counts([videos]) == {"x.v0": 40}  # the key the clip readers use
    with pytest.raises(ValueError, match="no annotation with readable metadata"):
        read_token_spec(videos)
    truncated = tmp_path / "cut.tar"
    truncated.write_bytes(Path(videos).read_bytes()[:700])
    with pytest.raises(ValueError, match="cannot read the metadata"):
        shard_frame_counts([str(truncated)])
