"""Writing a file whole or not at all: through a temporary file in its folder, then a rename.

The one way the suite writes results a reader may open at any moment (tokens, videos, shard
manifests, converted weights): a reader sees the old file or the new one, never half of one,
and a failed write leaves nothing behind. The file gets the permissions of any new file
(``0o666`` less the process umask), which ``tempfile.mkstemp`` (always ``0o600``) would not.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["write_atomic"]

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


def _open_temporary(path: Path) -> tuple[int, Path]:
    """A new file next to ``path`` with a name no one else holds, opened for writing."""
    while True:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(temporary, _CREATE, 0o666), temporary  # the umask applies
        except FileExistsError:
            continue


def write_atomic(
    path: str | Path, data: bytes | bytearray | memoryview | Callable[[BinaryIO], object]
) -> Path:
    """Write ``path`` whole: into a temporary file in its folder, renamed over it at the end.

    Args:
        path: The file to write; missing parent folders are created.
        data: The bytes (or a bytearray / memoryview), or a function writing them to a binary
            stream (e.g. ``lambda f: np.savez_compressed(f, **arrays)``).

    Returns:
        ``path``.

    Raises:
        OSError: The write failed (disk full, file-size limit, permissions): the message
            names the file and says nothing was written; its ``errno`` is the cause's. The
            temporary file is removed on this and on any other error.
    """
    path = Path(path)
    temporary: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = _open_temporary(path)
        with os.fdopen(handle, "wb") as stream:
            if isinstance(data, bytes | bytearray | memoryview):
                stream.write(data)
            else:
                data(stream)
        os.replace(temporary, path)
    except OSError as error:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        raise OSError(
            error.errno, f"cannot write {path}: {error.strerror or error}; nothing was written"
        ) from error
    except BaseException:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        raise
    return path
