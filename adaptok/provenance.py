"""Provenance of trained weights: the code commit and the exact training shards.

An export records the fingerprint of its training shards (``adaptok export``), and a stage that
starts from exported weights (``TokenizerModule(init_weights=...)``) compares it with the shards
it is given, so weights trained on other data are noticed rather than silently fine-tuned. The
demo's shards are rebuilt byte for byte by ``make demo-data`` (fixed seeds, one encoder thread),
so the same commit and library versions reproduce the same fingerprint.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Sequence
from pathlib import Path

from adaptok.data.shards import resolve_shards

__all__ = ["PROVENANCE_KEY", "file_sha256", "git_commit", "shard_fingerprint"]

PROVENANCE_KEY = "adaptok_provenance"
"""Checkpoint entry ``{"commit": git_commit(), "config": run config YAML}`` (``adaptok`` CLI runs)."""


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def shard_fingerprint(
    urls: Sequence[str] | str | None, split: str | None = None
) -> dict[str, object] | None:
    """Fingerprint of the local shards that ``urls`` name.

    Args:
        urls: Shard specifications as a datamodule takes them (paths, globs, brace patterns,
            folders; see :func:`adaptok.data.shards.resolve_shards`).
        split: The split the URLs are for (a folder then gives only that split's shards).

    Returns:
        ``{"sha256": combined digest, "files": {path: sha256}}`` with the files sorted by path
        (the combined digest hashes one ``path sha256`` line per file, so renaming a shard changes
        it); None when ``urls`` is empty or names a remote shard: such data cannot be
        fingerprinted here.

    Raises:
        FileNotFoundError / ValueError: As :func:`adaptok.data.shards.resolve_shards`.
    """
    if not urls:
        return None
    shards = resolve_shards(urls, "shard URLs", split)
    if any(not Path(shard).is_file() for shard in shards):
        return None
    files = {path: file_sha256(path) for path in sorted(shards)}
    combined = hashlib.sha256("".join(f"{p} {h}\n" for p, h in files.items()).encode())
    return {"sha256": combined.hexdigest(), "files": files}


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
