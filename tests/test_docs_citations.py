"""Code, configs and docs cite documents the repository holds, and nothing outside it.

Scanned: every ``.py``, ``.yaml`` and ``.yml`` file under the package folders and
``experiments/``, ``benchmarks/``, ``tools/``, ``tests/`` (but this file, whose examples
offend on purpose), and the Markdown files in ``docs/``. A line
offends when it

- names ``docs/<name>.md`` and ``docs/<name>.md`` does not exist;
- names a method document without its ``docs/`` path (``METHOD.md``, ``GENERATOR.md``,
  ``DESIGN.md``, ``METHOD section 5``): the reader cannot find it;
- points outside the repository (``../shared``);
- refers to a tracker entry (``issue 10``, ``Issue 15's``, ``issue-16``): readers of the code
  have no tracker; say what the text means instead.

All offenders are reported in one assertion, ``path:line: reason: text``.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCANNED_FOLDERS = (
    "adaptok",
    "modules",
    "callbacks",
    "datamodules",
    "experiments",
    "benchmarks",
    "tools",
    "tests",
)
SUFFIXES = {".py", ".yaml", ".yml"}

DOCS_PATH = re.compile(r"\bdocs/([\w.-]+?\.md)\b")
BARE_METHOD_DOC = re.compile(
    r"(?<![\w/])(?:METHOD|GENERATOR|DESIGN)(?:\.md\b|\s+sections?\s+\d|\s+\d)"
)
OUTSIDE = re.compile(r"\.\./shared\b")
TRACKER = re.compile(r"\bissues?[ #-]+\d", re.IGNORECASE)

METHOD_CITATION = re.compile(
    r"docs/METHOD\.md[\s#*]+sections?\s+(\d+(?:\.\d+)?)(?:\s*-\s*(\d+(?:\.\d+)?))?"
)
METHOD_HEADING = re.compile(r"^#{2,}\s+(\d+(?:\.\d+)?)\.?\s", re.MULTILINE)


def scanned_files() -> list[Path]:
    files = [
        path
        for folder in SCANNED_FOLDERS
        if (REPO / folder).is_dir()
        for path in (REPO / folder).rglob("*")
        if path.suffix in SUFFIXES
        and path.is_file()
        and "__pycache__" not in path.parts
        and path != Path(__file__).resolve()
    ]
    files += [path for path in (REPO / "docs").glob("*.md") if path.is_file()]
    return sorted(files)


def offences(line: str) -> list[str]:
    """Reasons why one line of text offends (empty when it does not)."""
    reasons = [
        f"cites docs/{name}, which does not exist"
        for name in DOCS_PATH.findall(line)
        if not (REPO / "docs" / name).is_file()
    ]
    if BARE_METHOD_DOC.search(line):
        reasons.append("names a method document without its docs/ path")
    if OUTSIDE.search(line):
        reasons.append("points outside the repository (../shared)")
    if TRACKER.search(line):
        reasons.append("refers to a tracker entry")
    return reasons


def test_the_patterns_catch_what_they_are_meant_to() -> None:
    assert offences("see docs/NO_SUCH_FILE.md") == [
        "cites docs/NO_SUCH_FILE.md, which does not exist"
    ]
    assert offences("(docs/METHOD.md section 5.1)") == []
    assert offences("(METHOD.md section 5)") and offences("(METHOD section 3)")
    assert offences('GENERATOR.md "Model"') and offences("(METHOD 5)")
    assert offences("read ../shared/METHOD.md")
    for text in ("(issue 10, item 5)", "Issue 15's targets", "the issue-10 sweep", "issue #3"):
        assert offences(text) == ["refers to a tracker entry"], text
    assert offences("the GENERATOR_VOCAB constant and 3 issues found") == []


def test_code_and_docs_cite_only_what_the_repository_holds() -> None:
    found = []
    for path in scanned_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for reason in offences(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {reason}: {line.strip()[:90]}")
    assert not found, f"{len(found)} citation offenders:\n" + "\n".join(found)


def test_method_sections_cited_exist() -> None:
    headings = set(METHOD_HEADING.findall((REPO / "docs" / "METHOD.md").read_text()))
    assert {"1", "4", "5", "5.1", "5.7", "6"} <= headings
    missing = []
    for path in scanned_files():
        for first, last in METHOD_CITATION.findall(path.read_text(errors="replace")):
            missing += [
                f"{path.relative_to(REPO)}: section {section}"
                for section in (first, last)
                if section and section not in headings
            ]
    assert not missing, "docs/METHOD.md has no such section:\n" + "\n".join(missing)
