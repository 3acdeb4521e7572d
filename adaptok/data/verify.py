"""Decode every sample of a set of shards and report what is in them and what is broken.

Two kinds of shard are read: video shards (``adaptok-shards``: ``{key}.json`` + a video) and
token annotation shards (``callbacks.AnnotationWriter``: ``codes.npy``, ``costs.npy``,
``lengths.npy``, ``json`` and, for frame prediction, ``cond.npy``; the format is described in
the docstring of ``callbacks/annotation_writer.py``). A folder may hold both (``data/demo``
after ``make demo``): each sample is checked as what it is, so annotation windows are never
reported as videos without a video.
"""

from __future__ import annotations

import glob
import json
import sys
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from adaptok.data.files import walk_files
from adaptok.data.tar_samples import PROBLEM_KEY, group_members, member_key, read_tar_members
from adaptok.data.token_samples import TokenSpec, check_token_sample, sample_spec
from adaptok.data.video_io import VIDEO_SUFFIXES, VideoDecodeError, VideoReader, stored_stream

__all__ = ["TOKEN_MEMBERS", "SplitReport", "find_shards", "is_token_shard", "verify_shards"]

TOKEN_MEMBERS = ("codes.npy", "costs.npy", "lengths.npy", "cond.npy")
"""Array members of a token annotation sample (``codes`` and ``lengths`` are required)."""
_KEYS_SIDECAR = ".keys.json"


@dataclass
class SplitReport:
    """Contents of the shards of one split.

    Attributes:
        shards: Number of tar files.
        clips: Video samples that decoded.
        frames: Decoded frames over all clips.
        bytes: Total size of the tar files.
        sizes: Count of clips per ``"HxW"``, and of token windows per
            ``"tokens KxM, P budgets"``.
        classes: Count of clips (and token windows) per class name.
        corrupt: ``"shard:key: reason"`` for every sample (or shard) that failed.
        windows: Token annotation samples whose arrays and metadata are consistent.
    """

    shards: int = 0
    clips: int = 0
    frames: int = 0
    bytes: int = 0
    sizes: Counter = field(default_factory=Counter)
    classes: Counter = field(default_factory=Counter)
    corrupt: list[str] = field(default_factory=list)
    windows: int = 0


def find_shards(target: str | Path) -> list[Path]:
    """Every ``*.tar`` under a folder (recursively), or the matches of a glob, sorted.

    Folder links are followed, and a folder matched by the glob gives its shards.

    Raises:
        FileNotFoundError: Nothing matches.
        ValueError: ``target`` is empty (it would search the working directory).
    """
    if not str(target).strip():
        raise ValueError(f"shard target {str(target)!r} is empty: give a folder or a glob")
    path = Path(target)
    if path.is_dir():
        found = walk_files(path, ".tar").files
    else:
        found = []
        for match in sorted(glob.glob(str(target), recursive=True)):
            if Path(match).is_dir():
                found.extend(walk_files(match, ".tar").files)
            else:
                found.append(Path(match))
    if not found:
        raise FileNotFoundError(f"no .tar shards found at {target!r}")
    return found


def _split_name(shard: Path, root: Path | None) -> str:
    """``<folder relative to root>/<split>`` with the split from ``{split}-NNNNNN.tar``."""
    split = shard.name.rsplit("-", 1)[0] if "-" in shard.name else shard.stem
    folder = shard.parent
    if root is not None and folder != root and folder.is_relative_to(root):
        return f"{folder.relative_to(root).as_posix()}/{split}"
    return split


def is_token_shard(shard: str | Path) -> bool:
    """Whether a shard holds token annotations (array members, no video member).

    Raises:
        tarfile.TarError: The file is not a readable tar.
    """
    with tarfile.open(shard, "r:*") as archive:
        suffixes = {parts[1] for name in archive.getnames() if (parts := member_key(name))}
    return not suffixes & set(VIDEO_SUFFIXES) and bool(suffixes & {"codes.npy", "lengths.npy"})


def _samples(shard: Path) -> Iterator[tuple[str, dict[str, bytes | str]]]:
    """Samples of a shard, grouped as its loader groups them (raises on a broken tar).

    Token shards are grouped as the token loader groups them: runs of adjacent members with
    one key, a key that comes back after another key's members flagged as a duplicate.
    """
    complete = None if is_token_shard(shard) else VIDEO_SUFFIXES
    for sample in group_members(read_tar_members(str(shard)), str(shard), complete):
        files = {k: v for k, v in sample.items() if k not in ("__key__", "__url__")}
        yield sample["__key__"], files


def _is_token_sample(files: dict[str, bytes | str]) -> bool:
    """A sample with token arrays and no video (``callbacks.AnnotationWriter``'s format)."""
    has_video = any(suffix in files for suffix in VIDEO_SUFFIXES)
    return not has_video and any(member in files for member in TOKEN_MEMBERS)


def _check_token_sample(files: dict[str, bytes | str], spec: TokenSpec | None) -> tuple[dict, str]:
    """Check one token annotation sample as the token loader does.

    The checks are :func:`~adaptok.data.token_samples.check_token_sample`'s, against
    ``spec``, the sizes and budgets of the split's first token sample that names them (the
    loader likewise skips samples whose sizes or budgets differ from its data's).

    Returns:
        (metadata, ``"tokens KxM, P budgets"``).

    Raises:
        ValueError: The first fault found
            (:class:`~adaptok.data.token_samples.InvalidTokenSample`).
    """
    checked = check_token_sample(files, spec)
    blocks, tokens = checked.codes.shape
    return checked.meta, f"tokens {blocks}x{tokens}, {len(checked.spec['budgets'])} budgets"


def _check_sidecar(shard: Path, keys: list[str]) -> str | None:
    """Disagreement between a token shard and its ``NAME.keys.json`` sidecar, if any.

    The sidecar is what a resumed annotation run reads to learn which windows are done.
    """
    sidecar = shard.with_name(shard.name + _KEYS_SIDECAR)
    if not sidecar.is_file():
        return None
    try:
        listed = json.loads(sidecar.read_text()).get("keys")
    except (ValueError, UnicodeDecodeError, AttributeError) as error:
        return f"{sidecar.name} is not a JSON object with keys ({error})"
    if not isinstance(listed, list) or sorted(map(str, listed)) != sorted(keys):
        count = len(listed) if isinstance(listed, list) else "no"
        return f"{sidecar.name} lists {count} keys, the shard holds {len(keys)} other ones"
    return None


def _check_sample(files: dict[str, bytes | str]) -> tuple[dict, int, str]:
    """Decode one sample; returns (metadata, frames, "HxW") or raises ``ValueError``."""
    if PROBLEM_KEY in files:
        raise ValueError(str(files[PROBLEM_KEY]))
    meta: object = {}
    if "json" in files:
        try:
            meta = json.loads(files["json"])
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError(f"metadata is not valid JSON: {error}") from error
    if not isinstance(meta, dict):
        raise ValueError(f"metadata is JSON {type(meta).__name__}, not an object")
    video = next((files[s] for s in VIDEO_SUFFIXES if s in files), None)
    if video is None:
        raise ValueError(f"no video member (members: {sorted(files)})")
    count, height, width = 0, 0, 0
    try:  # one picture at a time: memory stays flat whatever the clip's size and length
        with VideoReader(video, stored_stream(meta)) as reader:
            for _, picture in reader.frames():
                if count == 0:
                    height, width = picture.height, picture.width
                    if (reader.properties.rotation if reader.properties else 0) in (90, 270):
                        height, width = width, height
                count += 1
    except VideoDecodeError as error:
        raise ValueError(str(error)) from error
    if count == 0:
        raise ValueError("no decodable frames")
    expected = meta.get("frames")
    if expected is not None:
        try:
            listed = int(expected)
        except (TypeError, ValueError) as error:
            raise ValueError(f"metadata 'frames' is not an integer: {expected!r}") from error
        if listed != count:
            raise ValueError(f"decoded {count} frames, metadata says {expected}")
    return meta, count, f"{height}x{width}"


def verify_shards(target: str | Path, out: TextIO | None = None) -> dict[str, SplitReport]:
    """Decode every sample and print a per-split table and every corrupt sample.

    Never raises on the data: unreadable tars, samples whose files are split apart or
    duplicated, metadata that is not a JSON object or disagrees with the video, and
    undecodable videos are each counted and listed under ``corrupt``. Token annotation
    samples (no video; ``codes.npy`` / ``lengths.npy``) are checked as the token loader
    checks them (:func:`~adaptok.data.token_samples.check_token_sample`: arrays load,
    shapes and ranges agree with each other and the JSON, sizes and budgets agree with the
    split's first token sample that names them) and the sidecar must list the shard's keys;
    valid ones are counted as ``windows``.

    Args:
        target: A folder (searched recursively for ``*.tar``) or a glob.
        out: Where the report is printed (default: standard output).

    Returns:
        Reports keyed by ``[folder/]split``.
    """
    root = Path(target) if Path(target).is_dir() else None
    reports: dict[str, SplitReport] = {}
    token_specs: dict[str, TokenSpec] = {}  # per split: the first token sample's that names one
    for shard in find_shards(target):
        split = _split_name(shard, root)
        report = reports.setdefault(split, SplitReport())
        report.shards += 1
        report.bytes += shard.stat().st_size
        token_keys: list[str] = []
        try:
            for key, files in _samples(shard):
                token = _is_token_sample(files)
                try:
                    if token:
                        token_keys.append(key)
                        if split not in token_specs and (spec := sample_spec(files)):
                            token_specs[split] = spec
                        meta, size = _check_token_sample(files, token_specs.get(split))
                        frames = 0
                    else:
                        meta, frames, size = _check_sample(files)
                except Exception as error:  # never raise on data: list it
                    reason = str(error) if isinstance(error, ValueError) else repr(error)
                    report.corrupt.append(f"{shard}:{key}: {reason}")
                    continue
                if token:
                    report.windows += 1
                else:
                    report.clips += 1
                    report.frames += frames
                report.sizes[size] += 1
                report.classes[str(meta.get("class_name", "?"))] += 1
        except Exception as error:  # a broken tar is listed, the next shard is read
            report.corrupt.append(f"{shard}: unreadable tar ({type(error).__name__}: {error})")
            continue
        if token_keys:
            problem = _check_sidecar(shard, token_keys)
            if problem is not None:
                report.corrupt.append(f"{shard}: {problem}")
    _print_reports(reports, out or sys.stdout)
    return reports


def _print_reports(reports: dict[str, SplitReport], out: TextIO) -> None:
    header = (
        f"{'split':<28} {'shards':>6} {'clips':>6} {'frames':>8} {'MB':>8} {'classes':>7}  sizes"
    )
    print(header, file=out)
    for name, report in sorted(reports.items()):
        sizes = ", ".join(f"{size} ({n})" for size, n in report.sizes.most_common())
        print(
            f"{name:<28} {report.shards:>6} {report.clips:>6} {report.frames:>8}"
            f" {report.bytes / 1e6:>8.2f} {len(report.classes):>7}  {sizes}",
            file=out,
        )
    windows = {name: r.windows for name, r in sorted(reports.items()) if r.windows}
    if windows:
        listed = ", ".join(f"{name} {n}" for name, n in windows.items())
        print(f"token annotation windows (checked as token shards, no video): {listed}", file=out)
    corrupt = [line for report in reports.values() for line in report.corrupt]
    print(f"corrupt: {len(corrupt)}", file=out)
    for line in corrupt:
        print(f"  {line}", file=out)
