"""Shard lists of the shard streams: resolving specifications and ordering shards per epoch.

Every order is a pure function of ``(seed, epoch, rank, worker)``, so a resumed run that knows
its epoch draws the same shards as an uninterrupted one.
"""

from __future__ import annotations

import glob
import random
import tarfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import webdataset as wds

from adaptok.data.files import walk_files

__all__ = [
    "SPLIT_NAMES",
    "ShardOrder",
    "ShardURLError",
    "check_url_setting",
    "resolve_shards",
    "shards_for_pass",
]

ShardOrder = Literal["ordered", "shuffled", "resampled"]
_REMOTE_PREFIXES = ("pipe:", "http://", "https://", "s3://", "gs://", "gcs://", "ais://")


def _is_remote(url: str) -> bool:
    return url.startswith(_REMOTE_PREFIXES) or ("://" in url and not url.startswith("file://"))


SPLIT_NAMES = ("train", "val", "test")
"""Split prefixes of shard file names (`adaptok-shards` writes `<split>-NNNNNN.tar`)."""


def _folder_shards(folder: str | Path, origin: str, split: str | None) -> list[str]:
    """The `.tar` shards under `folder` (recursive) that belong to `split`.

    A folder holding shards of `split` (`<split>-*.tar`, as `adaptok-shards` names them) gives
    only those, so a folder with train, val and test shards never mixes them. A folder with
    none of `split`'s gives all its shards, with a warning naming the splits it read. Without
    a split every shard is taken.

    Raises:
        FileNotFoundError: No shards under the folder.
    """
    found = [str(p) for p in walk_files(folder, ".tar").files]
    if not found:
        raise FileNotFoundError(f"no .tar shards under folder {str(folder)!r} (from {origin!r})")
    if split is None:
        return found
    prefix = {name: Path(name).name.split("-", 1)[0] for name in found}
    own = [name for name in found if prefix[name] == split]
    if own:
        return own
    others = sorted({p for p in prefix.values() if p in SPLIT_NAMES})
    if others:
        warnings.warn(
            f"folder {str(folder)!r} (from {origin!r}) holds no {split}-*.tar shards: reading "
            f"its {len(found)} shards of the splits {others} as {split} data",
            stacklevel=3,
        )
    return found


def _local_matches(pattern: str, origin: str, split: str | None = None) -> list[str]:
    """Local tar files for one expanded pattern; raises a clear error when there are none."""
    path = Path(pattern.removeprefix("file://")).expanduser()
    if path.is_dir():
        return _folder_shards(path, origin, split)
    if glob.has_magic(str(path)):
        found = []
        for match in sorted(glob.glob(str(path), recursive=True)):
            if Path(match).is_dir():  # a folder matched by the pattern: its split's shards
                found.extend(_folder_shards(match, origin, split))
            else:
                found.append(match)
        if not found:
            folder = next((p for p in path.parents if not glob.has_magic(str(p))), Path("."))
            where = "" if folder.is_dir() else f"; folder {str(folder)!r} does not exist"
            raise FileNotFoundError(f"no shards match {origin!r}{where}")
        return found
    if not path.exists():
        where = "" if path.parent.is_dir() else f"; folder {str(path.parent)!r} does not exist"
        raise FileNotFoundError(f"shard {str(path)!r} not found (from {origin!r}){where}")
    return [str(path)]


class ShardURLError(ValueError):
    """A shard URL setting that cannot name shards (empty, blank or null)."""


def check_url_setting(urls: object, setting: str = "shard URLs") -> list[str]:
    """The specifications of a URL setting as a list, refusing empty or null ones in one line.

    An empty string would otherwise resolve to the working directory and read every tar
    under it (training shards included).

    Args:
        urls: A string or a list of strings.
        setting: The setting's name for the message (``data.init_args.test_urls``).

    Returns:
        The specifications.

    Raises:
        ShardURLError: ``urls`` is empty, null, blank, or a list holding such an entry.
    """
    if urls is None:
        raise ShardURLError(f"{setting} is null: give a shard pattern, folder or URL")
    specs = [urls] if isinstance(urls, str | Path) else list(urls)  # type: ignore[call-overload]
    if not specs:
        raise ShardURLError(f"{setting} is an empty list: give a shard pattern, folder or URL")
    for index, spec in enumerate(specs):
        where = setting if len(specs) == 1 else f"{setting}[{index}]"
        if spec is None or not isinstance(spec, str | Path) or not str(spec).strip():
            raise ShardURLError(
                f"{where} is {spec!r}: an empty shard URL would read every tar under the "
                "working directory; give a shard pattern, folder or URL"
            )
    return [str(spec) for spec in specs]


def resolve_shards(
    urls: str | Sequence[str], setting: str = "shard URLs", split: str | None = None
) -> list[str]:
    """Expand shard specifications into a list of shard URLs, checking local files now.

    Brace patterns (``train-{000000..000009}.tar``) are expanded everywhere; local globs and
    folders (searched recursively for ``*.tar``, following folder links) are expanded, a
    folder matched by a glob gives its shards, and every local file must be a tar archive. A
    folder gives only the shards of ``split`` when its shards are named for splits
    (``train-*.tar``, ``val-*.tar``, ``test-*.tar``) and has some of ``split``, so
    ``test_urls: data/demo`` never reads the training shards (a folder with none of the
    split's is read whole, with a warning).
    Remote URLs (``pipe:``, ``http(s)://``, ...) are passed through unchecked.

    Args:
        urls: One specification or a list of them.
        setting: Name of the setting the URLs come from, for messages.
        split: The split the URLs are for ("train", "val", "test"), or None.

    Returns:
        Shard URLs, each pattern's matches sorted, in the given pattern order.

    Raises:
        FileNotFoundError: A pattern matches nothing, or its folder does not exist.
        ValueError: An empty, blank or null URL, or a local file that is not a tar archive.
    """
    specs = check_url_setting(urls, setting)
    shards: list[str] = []
    for spec in specs:
        for url in wds.shardlists.expand_urls(spec):
            if _is_remote(url):
                shards.append(url)
                continue
            for path in _local_matches(url, spec, split):
                if not tarfile.is_tarfile(path):
                    raise ValueError(f"{path!r} (from {spec!r}) is not a tar archive")
                shards.append(path)
    return shards


def shards_for_pass(
    urls: Sequence[str],
    order: ShardOrder,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    worker: int = 0,
    num_workers: int = 1,
) -> Iterator[str]:
    """Shards one DataLoader worker of one rank reads in one pass.

    ``ordered`` and ``shuffled`` passes split the (shuffled: seeded by ``seed`` and ``epoch``,
    the same on every rank) list over ranks, then over workers, so each shard is read once per
    pass. ``resampled`` draws shards with replacement, endlessly, from a generator seeded by
    ``(seed, epoch, rank, worker)``; the caller ends the pass.

    Args:
        urls: Resolved shard URLs.
        order: ``ordered``, ``shuffled`` or ``resampled``.
        seed: Base seed.
        epoch: Pass number (part of every seed).
        rank: Process rank.
        world_size: Number of processes.
        worker: DataLoader worker id.
        num_workers: DataLoader workers of this rank (1 when loading in the main process).

    Yields:
        Shard URLs.
    """
    if order == "resampled":
        rng = random.Random(f"{seed}/{epoch}/{rank}/{worker}")
        while True:
            yield urls[rng.randrange(len(urls))]
    listed = list(urls)
    if order == "shuffled":
        random.Random(f"{seed}/{epoch}").shuffle(listed)
    yield from listed[rank::world_size][worker::num_workers]
