"""The annotation sink counts a window in its shard's statistics only once it is in the shard."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from callbacks.annotation_writer import AnnotationWriter, _AnnotationSink, read_shard_index
from tests.data.test_field_inputs_2_rest import _TOKEN_INFO, _prediction


def _sink(folder: Path, samples: int = 100) -> tuple[_AnnotationSink, AnnotationWriter]:
    writer = AnnotationWriter(str(folder), progress=False, summary=False)
    writer.info = dict(_TOKEN_INFO)
    return _AnnotationSink(folder, "train", 0, samples, writer.info), writer


def test_a_window_whose_write_fails_is_not_counted(tmp_path: Path) -> None:
    sink, writer = _sink(tmp_path)
    prediction = _prediction(2)
    sink.add("clip0_w00000", writer._sample_files(prediction, 0))

    def full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    sink.archive.addfile = full  # the disk fills up while the second window is written
    with pytest.raises(OSError, match="No space"):
        sink.add("clip1_w00000", writer._sample_files(prediction, 1))
    assert sink.stats.keys == ["clip0_w00000"] and sink.count == 1
    assert sink.stats.length_sum.tolist() == prediction["lengths"][0].tolist()
    sink.abandon()


def test_a_shard_finished_to_make_room_lists_only_its_own_windows(tmp_path: Path) -> None:
    sink, writer = _sink(tmp_path)
    prediction = _prediction(3)
    files = [writer._sample_files(prediction, i) for i in range(3)]
    sizes = [sum(512 + -(-len(v) // 512) * 512 for v in f.values()) for f in files]
    sink.max_bytes = sizes[0] + sizes[1]  # the third window needs a new shard
    for i, key in enumerate(prediction["key"]):
        sink.add(key, files[i])
    sink.close()
    shards = sorted(tmp_path.glob("train-*.tar"))
    assert [p.name for p in shards] == ["train-000000.tar", "train-000001.tar"]
    for shard in shards:
        with tarfile.open(shard) as archive:
            held = sorted({m.name.split(".")[0] for m in archive.getmembers()})
        index = read_shard_index(shard)
        assert index["keys"] == held and index["windows"] == len(held), (shard, index)
        sidecar = json.loads(shard.with_name(shard.name + ".keys.json").read_text())
        assert sidecar["keys"] == held
    assert read_shard_index(shards[1])["keys"] == ["clip2_w00000"]
