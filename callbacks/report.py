"""Evaluation reports written next to the logs: one Markdown table and one CSV per report."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from adaptok.provenance import git_commit

__all__ = ["format_value", "git_commit", "markdown_table", "write_report"]


def format_value(value: object) -> str:
    """Human-readable cell: 4 significant digits for floats, one decimal from 1000 up."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.1f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def _columns(rows: Sequence[dict]) -> list[str]:
    """Union of the rows' keys, in order of first appearance."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def markdown_table(rows: Sequence[dict]) -> str:
    """A Markdown table of ``rows`` (columns = union of keys; missing cells empty)."""
    columns = _columns(rows)
    if not columns:
        return ""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [format_value(row[c]) if c in row else "" for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(
    directory: str | Path,
    stem: str,
    title: str,
    rows: Sequence[dict],
    notes: Iterable[str] = (),
    sections: Iterable[str] = (),
) -> tuple[Path, Path]:
    """Write ``<directory>/<stem>.md`` (title, table, notes) and ``<directory>/<stem>.csv``.

    Args:
        directory: Output folder (created if needed).
        stem: File name without extension.
        title: Markdown heading.
        rows: One dict per table row; columns are the union of keys (missing cells empty).
        notes: Bullet points printed under the table.
        sections: Raw Markdown lines appended after the notes (more tables, images).

    Returns:
        Paths of the Markdown and the CSV file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    columns = _columns(rows)
    lines = [f"# {title}", ""]
    if columns:
        lines.append(markdown_table(rows))
    notes = list(notes)
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    sections = list(sections)
    if sections:
        lines += ["", *sections]
    markdown = directory / f"{stem}.md"
    markdown.write_text("\n".join(lines) + "\n")

    table = directory / f"{stem}.csv"
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return markdown, table
