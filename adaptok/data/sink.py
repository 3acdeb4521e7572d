"""One writer of tar shards for every producer: a hidden temporary file, renamed when complete.

``adaptok-shards`` (video shards, :mod:`adaptok.data.writer`) and the token annotation writer
(``callbacks/annotation_writer.py``) both append samples to ``.{prefix}-{index:06d}.tar.tmp``
and give it its final name ``{prefix}-{index:06d}.tar`` only once it is complete, so a reader
(or a resumed run) never sees half a shard: an interrupted run leaves at most a temporary
file, which the next run deletes and writes again.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
from pathlib import Path

__all__ = ["ShardSink", "tar_size"]

_TAR_BLOCK = 512


def tar_size(files: dict[str, bytes]) -> int:
    """Bytes a sample's members take in a tar (one header block each, data padded)."""
    return sum(_TAR_BLOCK + -(-len(v) // _TAR_BLOCK) * _TAR_BLOCK for v in files.values())


class ShardSink:
    """Appends samples to the current temporary shard; renames it when complete.

    A shard is complete when it holds ``max_samples`` samples (it is renamed right after the
    last one is added) or when the next sample would take it over ``max_bytes`` (a single
    larger sample still gets a shard of its own), and at :meth:`close`. Members are written
    in sorted suffix order, with fixed modes and times, so equal samples give equal bytes.

    Subclasses keep per-shard state by overriding :meth:`_added` (a sample is in the shard),
    :meth:`_before_rename` (what a finished shard needs next to it) and :meth:`_reset`.

    Args:
        out_dir: Folder of the shards (must exist).
        prefix: Shard name prefix (``train``, ``val``, ``train-r1``...).
        index: Number of the next shard.
        max_samples: Most samples per shard (>= 1).
        max_bytes: Most bytes of sample data per shard; ``None``: no limit.

    Attributes:
        count: Samples in the current shard.
        bytes: Their size in the tar.
        finished: Final paths of the shards this sink completed, in order.
    """

    def __init__(
        self,
        out_dir: str | Path,
        prefix: str,
        index: int,
        max_samples: int,
        max_bytes: float | None = None,
    ) -> None:
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        self.out_dir, self.prefix, self.index = Path(out_dir), prefix, int(index)
        self.max_samples, self.max_bytes = int(max_samples), max_bytes
        self.archive: tarfile.TarFile | None = None
        self.count = 0
        self.bytes = 0
        self.finished: list[Path] = []

    def name(self) -> str:
        """File name of the current shard once complete."""
        return f"{self.prefix}-{self.index:06d}.tar"

    def temporary(self) -> Path:
        """Path of the current shard while it is being written."""
        return self.out_dir / f".{self.name()}.tmp"

    def add(self, key: str, files: dict[str, bytes]) -> None:
        """Append one sample (``{key}.{suffix}`` for each entry of ``files``).

        Raises:
            OSError: The write failed (disk full, file-size limit); call :meth:`abandon`.
        """
        size = tar_size(files)
        too_big = self.max_bytes is not None and self.bytes + size > self.max_bytes
        if self.archive is not None and too_big:
            self.close()
        if self.archive is None:
            # Stays open across calls; closed by close() or abandon().
            self.archive = tarfile.open(  # noqa: SIM115
                self.temporary(), "w:", format=tarfile.PAX_FORMAT
            )
        for suffix in sorted(files):
            payload = files[suffix]
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size, info.mode, info.mtime = len(payload), 0o444, 0
            self.archive.addfile(info, io.BytesIO(payload))
        self.count += 1
        self.bytes += size
        self._added(key, files)
        if self.count >= self.max_samples:
            self.close()

    def close(self) -> Path | None:
        """Finish the current shard and give it its final name.

        Returns:
            The finished shard, or ``None`` when none was open.
        """
        if self.archive is None:
            return None
        self.archive.close()
        final = self.out_dir / self.name()
        self._before_rename(final)
        self.temporary().replace(final)
        self.finished.append(final)
        self.archive, self.count, self.bytes = None, 0, 0
        self.index += 1
        self._reset()
        return final

    def abandon(self) -> None:
        """Drop an unfinished shard (its samples are written again by the next run).

        Never raises: after a failed write (disk full) closing the archive fails too, and
        the temporary file must still go.
        """
        if self.archive is not None:
            archive, self.archive = self.archive, None
            with contextlib.suppress(OSError):
                archive.close()
            with contextlib.suppress(OSError):
                archive.fileobj.close()
        with contextlib.suppress(OSError):
            self.temporary().unlink(missing_ok=True)
        self.count, self.bytes = 0, 0
        self._reset()

    def _added(self, key: str, files: dict[str, bytes]) -> None:
        """Called once a sample is in the current shard, before a full shard is finished.

        Never called for a sample whose write failed; a shard finished to make room for
        the sample (byte limit) was finished before it.
        """

    def _before_rename(self, final: Path) -> None:
        """Called with the final path after the tar is closed, before it is renamed."""

    def _reset(self) -> None:
        """Called when a shard was finished or abandoned (per-shard state starts again)."""
