"""Group the members of a tar shard into samples, robust to dotted keys and split samples.

WebDataset's rule (key = name up to the first dot of the base name; a sample = a run of
adjacent members with the same key) mis-reads two kinds of real shards:

* keys with dots (``clip.v0.mp4``): every member lands in one sample ``clip`` with suffixes
  ``v0.mp4``, ``v1.json``... Here the key ends at the last dot when the last suffix is one
  this suite reads (``json``, the video suffixes, ``cls``, ``txt``), so ``clip.v0`` is a key.
* samples whose files are not adjacent (all metadata first, then all videos): each file
  becomes its own incomplete sample. Here a metadata-only group is held until the end of the
  shard and merged with a later video of the same key, so such shards are read correctly.
  A video met before its metadata is passed on at once (video-only shards are legitimate and
  holding their videos would hold whole shards in memory); metadata that turns up later for
  it is reported with an exact reason.

Incomplete or unusable groups come out as samples with a :data:`PROBLEM_KEY` entry naming
what is wrong, so the loader can count them and ``adaptok-shards verify`` can list them.

Shards whose samples have no video (token annotations) are grouped with ``complete=None``:
every group is then whole as it comes, and only a repeated key is flagged.
"""

from __future__ import annotations

import contextlib
import json
import os
import tarfile
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import IO, Any

from adaptok.data.video_io import VIDEO_SUFFIXES

__all__ = [
    "KNOWN_SUFFIXES",
    "PROBLEM_KEY",
    "group_members",
    "member_key",
    "read_tar_json",
    "read_tar_members",
    "tar_samples",
]

KNOWN_SUFFIXES = frozenset({"json", "cls", "txt", *VIDEO_SUFFIXES})
"""Last suffixes that end a key at the last dot (others follow WebDataset's first-dot rule)."""

PROBLEM_KEY = "__problem__"
"""Sample entry set when the group cannot be a clip; the value is the reason."""


def member_key(name: str) -> tuple[str, str] | None:
    """Split a member name into ``(key, suffix)``; ``None`` when it has no suffix.

    ``dir/clip.v0.mp4`` -> ``("dir/clip.v0", "mp4")``; ``a.seg.npy`` -> ``("a", "seg.npy")``.
    Suffixes are lower-cased.
    """
    folder, _, base = name.rpartition("/")
    prefix = f"{folder}/" if folder else ""
    stem, dot, last = base.rpartition(".")
    if not dot or not stem:
        return None
    if last.lower() in KNOWN_SUFFIXES:
        return prefix + stem, last.lower()
    first, _, rest = base.partition(".")
    return (prefix + first, rest.lower()) if first else None


def group_members(
    members: Iterable[tuple[str, bytes]],
    url: str = "",
    complete: Collection[str] | None = VIDEO_SUFFIXES,
) -> Iterator[dict[str, Any]]:
    """Samples of one shard from its ``(member name, bytes)`` in stream order.

    Args:
        members: The shard's regular files in archive order.
        url: The shard, stored as ``__url__`` in every sample.
        complete: Suffixes of which a group needs one to be a sample (the video); groups
            without are held until the end of the shard. ``None``: every group is a sample.

    Yields:
        Dicts ``{"__key__", "__url__", suffix: bytes...}``; groups that cannot be a clip also
        hold :data:`PROBLEM_KEY` with the reason.
    """

    def _has_video(files: dict[str, Any]) -> bool:
        return complete is None or any(suffix in files for suffix in complete)

    held: dict[str, dict[str, Any]] = {}  # metadata-only groups waiting for their video
    emitted_video_only: set[str] = set()
    seen: set[str] = set()
    key: str | None = None
    files: dict[str, Any] = {}

    def finish(group_key: str, group: dict[str, Any]) -> Iterator[dict[str, Any]]:
        sample = {"__key__": group_key, "__url__": url, **group}
        if not _has_video(group) and group_key in emitted_video_only:
            sample[PROBLEM_KEY] = (
                "metadata after its video in the tar (files of one sample split apart; the "
                "video was read without it)"
            )
            yield sample
            return
        if group_key in seen:
            sample[PROBLEM_KEY] = "duplicate key in shard"
            yield sample
            return
        if _has_video(group):
            seen.add(group_key)
            earlier = held.pop(group_key, None)
            if earlier is not None:  # files of one sample split apart: read it whole
                sample = {**earlier, **sample}
            elif "json" not in group:
                emitted_video_only.add(group_key)
            yield sample
            return
        held[group_key] = {**held.get(group_key, {}), **group}

    for name, data in members:
        parts = member_key(name)
        if parts is None:
            continue
        member, suffix = parts
        if key is not None and member != key:
            yield from finish(key, files)
            files = {}
        key = member
        files[suffix] = data
    if key is not None:
        yield from finish(key, files)
    for group_key, group in held.items():
        yield {
            "__key__": group_key,
            "__url__": url,
            **group,
            PROBLEM_KEY: f"no video member for this key in the shard (members: {sorted(group)})",
        }


class _EndNotingTarInfo(tarfile.TarInfo):
    """A ``TarInfo`` that notes on its archive the header error that ended the reading.

    ``tarfile`` ends a stream quietly at a header it cannot read after the first member (the
    file cut at a member's end, a cut or garbled header): only a zero block
    (``EOFHeaderError``) is the archive's proper end.
    """

    @classmethod
    def fromtarfile(cls, archive: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(archive)
        except tarfile.HeaderError as error:
            archive.end_error = error  # type: ignore[attr-defined]
            raise


def read_tar_members(source: str | IO[bytes]) -> Iterator[tuple[str, bytes]]:
    """Regular files of a tar in stream order.

    Args:
        source: A local path, or an open binary stream (not closed here).

    Raises:
        tarfile.TarError: The tar is broken, also when it stops before its end-of-archive
            blocks (truncated at a member's end, a damaged header): the members before the
            damage are yielded first.
    """
    opened = {"name": source} if isinstance(source, str) else {"fileobj": source}
    with tarfile.open(mode="r|*", tarinfo=_EndNotingTarInfo, **opened) as archive:
        count = 0
        for member in archive:
            if member.isfile():
                handle = archive.extractfile(member)
                yield member.name, handle.read() if handle else b""
            count += 1
            archive.members = []  # a stream of many members holds none of them
        end = getattr(archive, "end_error", None)
        if count and not isinstance(end, tarfile.EOFHeaderError):
            raise tarfile.ReadError(
                f"the tar stops after {count} member(s) without its end-of-archive blocks "
                f"({type(end).__name__ if end else 'no end'}): truncated or damaged"
            )


def read_tar_json(url: str) -> Iterator[tuple[str, dict[str, Any] | None]]:
    """The ``json`` metadata members of a shard, in stream order, parsed.

    The one reader of shard metadata (video shards' ``frames``, token annotations' sizes,
    budgets and tokenizer hash); only the ``json`` members are parsed, and a caller that
    stops early reads the tar no further.

    Args:
        url: A local shard path, or any URL WebDataset opens (``pipe:``, ``https://``...).

    Yields:
        ``(key, metadata)`` per ``json`` member: the sample key (:func:`member_key`) and the
        JSON object, or None when the member is not valid UTF-8 JSON or not an object.

    Raises:
        OSError: The shard cannot be opened.
        tarfile.TarError: The tar is broken (see :func:`read_tar_members`).
    """

    def parsed(members: Iterable[tuple[str, bytes]]) -> Iterator[tuple[str, dict | None]]:
        for name, data in members:
            parts = member_key(name)
            if parts is None or parts[1] != "json":
                continue
            try:
                meta = json.loads(data)
            except (ValueError, UnicodeDecodeError):
                meta = None
            yield parts[0], meta if isinstance(meta, dict) else None

    if os.path.isfile(url):
        yield from parsed(read_tar_members(url))
        return
    from webdataset.gopen import gopen  # imports torch: only remote shards pay for it

    stream = gopen(url)
    try:
        yield from parsed(read_tar_members(stream))
    finally:
        stream.close()


def tar_samples(
    urls: Iterable[str],
    handler: Callable[[Exception], bool],
    complete: Collection[str] | None = VIDEO_SUFFIXES,
) -> Iterator[dict[str, Any]]:
    """Samples of a stream of shard URLs (any URL WebDataset opens).

    Args:
        urls: Shard URLs.
        handler: Called with an error that breaks a shard (the error's last argument is the
            URL); returns True to carry on with the next shard.
        complete: See :func:`group_members`.

    Yields:
        The samples of :func:`group_members`, shard after shard.
    """
    # webdataset imports torch (about 700 MB): only the clip stream pays for it, not
    # `adaptok-shards` and `verify`, which read local tars with tarfile.
    from webdataset.tariterators import url_opener

    for url in urls:
        try:
            for opened in url_opener([{"url": url}], handler=handler):
                # closed here too when the consumer stops early (the generator is closed)
                with contextlib.closing(opened["stream"]) as stream:
                    yield from group_members(read_tar_members(stream), url, complete)
        except Exception as error:  # a broken shard is counted and the stream goes on
            error.args = (*error.args, url)
            if not handler(error):
                raise
