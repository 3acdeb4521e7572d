"""Provenance of trained weights: the code commit and the exact training shards.

A CLI run records its commit, config and training-shard fingerprint in every checkpoint, an
export carries them (``adaptok export``), and a stage that starts from exported weights
(``TokenizerModule`` or ``ScorerModule`` with ``init_weights``) compares it with the shards it
is given, so weights trained on other data are noticed rather than silently fine-tuned. The
demo's shards are rebuilt byte for byte by ``make demo-data`` (fixed seeds, one encoder thread),
so the same commit and library versions reproduce the same fingerprint.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Sequence
from pathlib import Path

from adaptok.cache import sha256_file
from adaptok.data.shards import resolve_shards

__all__ = [
    "MAX_FINGERPRINT_BYTES",
    "PROVENANCE_KEY",
    "git_commit",
    "shard_fingerprint",
    "training_record",
]

MAX_FINGERPRINT_BYTES = 2 << 30
"""Shard sets larger than this (2 GiB) are not hashed: minutes of reading for a check."""

PROVENANCE_KEY = "adaptok_provenance"
"""Checkpoint entry ``{"commit", "config", "training_data"}`` written by ``adaptok`` CLI runs."""


def shard_fingerprint(
    urls: Sequence[str] | str | None,
    split: str | None = None,
    max_bytes: int = MAX_FINGERPRINT_BYTES,
) -> dict[str, object] | None:
    """Fingerprint of the local shards that ``urls`` name.

    Args:
        urls: Shard specifications as a datamodule takes them (paths, globs, brace patterns,
            folders; see :func:`adaptok.data.shards.resolve_shards`).
        split: The split the URLs are for (a folder then gives only that split's shards).
        max_bytes: Shard sets larger than this are not read (None is returned).

    Returns:
        ``{"sha256": combined digest, "files": {path: sha256}}``, files sorted by name; the
        combined digest hashes one ``name sha256`` line per file (file names, not paths, so
        the same shards given by another path agree). None when ``urls`` is empty, names a
        remote shard, or the shards exceed ``max_bytes``: such data is not fingerprinted.
        The bytes depend on the encoder build too (another PyAV/x264 gives other shards).

    Raises:
        FileNotFoundError / ValueError: As :func:`adaptok.data.shards.resolve_shards`.
    """
    if not urls:
        return None
    shards = resolve_shards(urls, "shard URLs", split)
    if any(not Path(shard).is_file() for shard in shards):
        return None
    if sum(Path(shard).stat().st_size for shard in shards) > max_bytes:
        return None
    files = {path: sha256_file(path) for path in sorted(shards, key=lambda p: Path(p).name)}
    lines = "".join(f"{Path(p).name} {h}\n" for p, h in files.items())
    return {"sha256": hashlib.sha256(lines.encode()).hexdigest(), "files": files}


def training_record(urls: Sequence[str] | str | None, when: str) -> dict[str, object] | None:
    """What a checkpoint records of its training shards: the URLs and their fingerprint.

    Args:
        urls: The datamodule's ``train_urls``.
        when: When the fingerprint is taken (``"fit start"``; ``"export"`` for checkpoints that
            did not record one), kept in the record.

    Returns:
        ``{"train_urls", "fingerprint", "files", "fingerprinted_at"}`` (fingerprint and files
        None when the shards are remote, absent or too large to hash), or None without URLs.
    """
    if not urls:
        return None
    try:
        found = shard_fingerprint(urls, "train")
    except (FileNotFoundError, ValueError):
        found = None
    return {
        "train_urls": [urls] if isinstance(urls, str) else list(urls),
        "fingerprint": None if found is None else found["sha256"],
        "files": None if found is None else found["files"],
        "fingerprinted_at": when,
    }


def git_commit() -> str:
    """Short hash of the suite's checkout (``+dirty`` with uncommitted changes), or ``unknown``."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=here)

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
