"""Walking dataset folders: directory links followed, cycles and broken links reported.

``Path.rglob`` (Python 3.11) does not descend into symlinked directories, so a class folder or
a split folder that is a link to another disk vanished from a data set without a word. Every
folder walk of the suite (dataset layouts, shard folders, ``adaptok-shards verify``) goes
through :func:`walk_files` instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["FolderWalk", "walk_files"]


@dataclass
class FolderWalk:
    """Files found under a folder, and what could not be followed.

    Attributes:
        files: Regular files (symlinks to files included), sorted, with paths under the root
            as spelled through the links.
        skipped: ``(path, reason)`` for link cycles, broken links and unreadable folders.
    """

    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def walk_files(root: str | Path, suffix: str | None = None) -> FolderWalk:
    """Every file under ``root``, following directory links once each (cycle guard).

    Args:
        root: The folder.
        suffix: Keep only names ending in this (case-insensitive, e.g. ``.tar``).

    Returns:
        The :class:`FolderWalk`.
    """
    root = Path(root)
    walk = FolderWalk()
    seen: set[str] = set()

    def on_error(error: OSError) -> None:
        walk.skipped.append((str(error.filename), f"unreadable folder ({error.strerror})"))

    for folder, dirs, files in os.walk(root, followlinks=True, onerror=on_error):
        real = os.path.realpath(folder)
        if real in seen:
            walk.skipped.append((folder, f"folder link cycle (already walked as {real})"))
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        for name in files:
            path = Path(folder) / name
            if suffix is not None and not name.lower().endswith(suffix.lower()):
                continue
            if not path.exists():
                walk.skipped.append((str(path), "broken link"))
                continue
            if path.is_file():
                walk.files.append(path)
    walk.files.sort()
    return walk
