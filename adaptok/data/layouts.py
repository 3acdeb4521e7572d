"""Dataset folder layouts turned into lists of labelled video files.

Each reader returns a :class:`Layout`: the videos found (path, label, class name, split) and
every file it had to leave out, with the reason. Missing or unreadable entries are never fatal;
they are listed so the writer's summary can show them.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from adaptok.data.files import walk_files
from adaptok.data.video_io import VIDEO_SUFFIXES

__all__ = [
    "VIDEO_EXTENSIONS",
    "Layout",
    "VideoEntry",
    "folder_layout",
    "kinetics_layout",
    "ucf101_layout",
]

VIDEO_EXTENSIONS = frozenset(f".{suffix}" for suffix in VIDEO_SUFFIXES)
"""File suffixes treated as videos (case-insensitive)."""

_SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val"}
_SPLIT_NAMES |= {"validate": "val", "validation": "val", "test": "test", "testing": "test"}


@dataclass(frozen=True)
class VideoEntry:
    """One labelled video file.

    Attributes:
        path: The video file.
        label: Integer class label (-1 when unknown).
        class_name: Human-readable class.
        split: ``train``, ``val`` or ``test``.
    """

    path: Path
    label: int
    class_name: str
    split: str


@dataclass
class Layout:
    """Videos found in a dataset folder.

    Attributes:
        entries: The usable videos, in a deterministic order.
        skipped: ``(path or entry, reason)`` for everything left out.
        class_names: Class names indexed by label.
    """

    entries: list[VideoEntry] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {path}")
    return path


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def ucf101_layout(root: str | Path, splits_dir: str | Path, split: int = 1) -> Layout:
    """Read the official UCF-101 layout.

    ``root/<Class>/v_<Class>_gXX_cYY.avi`` plus the official split folder with ``classInd.txt``
    (``"1 ApplyEyeMakeup"``, 1-based), ``trainlist0N.txt`` (``"Class/v_..avi 1"``) and
    ``testlist0N.txt`` (``"Class/v_..avi"``). Paths are matched case-insensitively, since the
    official lists spell some names differently from the archive (``HandStandPushups``).

    Args:
        root: Folder holding one sub-folder per class.
        splits_dir: Folder with ``classInd.txt`` and the split lists.
        split: Official split number, 1 to 3.

    Returns:
        Entries with splits ``train`` and ``test``; 0-based labels from ``classInd.txt``.
    """
    root, splits_dir = Path(root), Path(splits_dir)
    _require_dir(root, "UCF-101 video")
    _require_dir(splits_dir, "UCF-101 splits")
    if split not in (1, 2, 3):
        raise ValueError(f"UCF-101 split must be 1, 2 or 3, got {split}")
    class_index: dict[str, int] = {}
    names_by_label: dict[int, str] = {}
    for line in _require_file(splits_dir / "classInd.txt", "classInd.txt").read_text().splitlines():
        if line.strip():
            number, name = line.split()
            class_index[name.lower()] = int(number) - 1
            names_by_label[int(number) - 1] = name
    walk = walk_files(root)
    on_disk = {
        path.relative_to(root).as_posix().lower(): path
        for path in walk.files
        if path.suffix.lower() in VIDEO_EXTENSIONS
    }
    layout = Layout(skipped=list(walk.skipped))
    for split_name, list_name in (("train", "trainlist"), ("test", "testlist")):
        list_file = _require_file(splits_dir / f"{list_name}{split:02d}.txt", f"{list_name} file")
        for line in list_file.read_text().splitlines():
            if not line.strip():
                continue
            relative = line.split()[0]
            class_dir = relative.split("/")[0].lower()
            if class_dir not in class_index:
                layout.skipped.append((relative, f"class not in classInd.txt ({list_file.name})"))
                continue
            path = on_disk.get(relative.lower())
            if path is None:
                layout.skipped.append((relative, f"listed in {list_file.name} but missing"))
                continue
            label = class_index[class_dir]
            layout.entries.append(VideoEntry(path, label, names_by_label[label], split_name))
    layout.class_names = [names_by_label[i] for i in sorted(names_by_label)]
    return layout


def kinetics_layout(root: str | Path, csv_path: str | Path) -> Layout:
    """Read a Kinetics-style layout (Kinetics-400/600/700).

    The CSV has the header ``label,youtube_id,time_start,time_end,split``; the clip of a row is
    ``<youtube_id>_<time_start:06d>_<time_end:06d>.mp4`` anywhere under ``root`` (flat, or in
    split / class sub-folders). Labels index the sorted class names. Rows without a clip are
    listed in ``skipped``.

    Args:
        root: Folder searched (recursively) for the clips.
        csv_path: The annotation CSV.

    Returns:
        Entries with splits ``train``, ``val`` (from ``validate``) or ``test``.
    """
    root = _require_dir(Path(root), "Kinetics video")
    with _require_file(Path(csv_path), "Kinetics CSV").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    required = {"label", "youtube_id", "time_start", "time_end", "split"}
    if rows and not required <= set(rows[0]):
        raise ValueError(f"{csv_path}: header must contain {sorted(required)}, got {list(rows[0])}")
    walk = walk_files(root)
    on_disk = {path.name: path for path in walk.files}
    class_names = sorted({row["label"] for row in rows if row["label"]})
    label_of = {name: label for label, name in enumerate(class_names)}
    layout = Layout(class_names=class_names, skipped=list(walk.skipped))
    for row in rows:
        start, end = int(float(row["time_start"])), int(float(row["time_end"]))
        name = f"{row['youtube_id']}_{start:06d}_{end:06d}.mp4"
        path = on_disk.get(name)
        if path is None:
            layout.skipped.append((name, "listed in the CSV but missing"))
            continue
        split = _SPLIT_NAMES.get(row["split"].strip().lower(), row["split"].strip().lower())
        label = label_of.get(row["label"], -1)
        layout.entries.append(VideoEntry(path, label, row["label"] or "unknown", split))
    return layout


def folder_layout(root: str | Path) -> Layout:
    """Read a generic ``root/[split/]<class>/<video>`` folder.

    The class is the video's parent folder; when the first folder under ``root`` is a split
    name (``train``, ``val``, ``validation``, ``test``...) it sets the split, otherwise the
    split is ``train``. Linked folders (a class or split folder that is a symlink) are
    followed; link cycles, broken links and non-video files are listed in ``skipped``.

    Args:
        root: The folder.

    Returns:
        Entries with labels indexing the sorted class names.
    """
    root = _require_dir(Path(root), "video")
    walk = walk_files(root)
    layout = Layout(skipped=list(walk.skipped))
    found: list[tuple[Path, str, str]] = []
    for path in walk.files:
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            layout.skipped.append((str(path), "not a video file (by suffix)"))
            continue
        folders = path.relative_to(root).parts[:-1]
        split = _SPLIT_NAMES.get(folders[0].lower(), "train") if folders else "train"
        in_split_folder = bool(folders) and folders[0].lower() in _SPLIT_NAMES
        class_name = folders[-1] if len(folders) > int(in_split_folder) else "unknown"
        found.append((path, class_name, split))
    layout.class_names = sorted({class_name for _, class_name, _ in found})
    label_of = {name: label for label, name in enumerate(layout.class_names)}
    layout.entries = [VideoEntry(p, label_of[c], c, s) for p, c, s in found]
    return layout
