"""adaptok.atomic_write: whole files, the umask's permissions, nothing left on failure."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from adaptok.atomic_write import write_atomic


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_new_files_get_the_umasks_permissions_not_mkstemps(tmp_path: Path, umask_022) -> None:
    path = write_atomic(tmp_path / "new" / "tokens.bin", b"abc")  # the folder is created
    assert path.read_bytes() == b"abc"
    assert path.stat().st_mode & 0o777 == 0o644  # mkstemp would give 0o600
    os.umask(0o077)
    assert write_atomic(tmp_path / "private.bin", b"x").stat().st_mode & 0o777 == 0o600


def test_a_writer_function_and_replacing_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "t.npz"
    path.write_bytes(b"old")
    write_atomic(path, lambda handle: np.savez_compressed(handle, codes=np.arange(4)))
    assert np.load(path)["codes"].tolist() == [0, 1, 2, 3]
    assert [p.name for p in tmp_path.iterdir()] == ["t.npz"]


def test_a_failed_write_names_the_file_and_leaves_the_old_one(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    path.write_bytes(b"old")

    def full_disk(handle) -> None:
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=r"cannot write .*t\.bin: No space left.*nothing was written"):
        write_atomic(path, full_disk)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.bin"]  # no temporary debris

    def bug(handle) -> None:
        raise KeyError("not an OSError")

    with pytest.raises(KeyError):
        write_atomic(path, bug)
    assert [p.name for p in tmp_path.iterdir()] == ["t.bin"]
