"""Rules of the code base that must not rot."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_package_never_imports_lightning() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "adaptok").rglob("*.py")
        if _imported_roots(path)
        & {"lightning", "pytorch_lightning", "modules", "callbacks", "datamodules"}
    ]
    assert offenders == [], (
        f"adaptok/ must stay Lightning-free and not import the Lightning layer: {offenders}"
    )


def test_every_package_folder_is_importable() -> None:
    for name in ("adaptok", "modules", "datamodules", "callbacks"):
        assert (ROOT / name / "__init__.py").is_file(), name


def test_modules_and_datamodules_never_import_callbacks() -> None:
    """Media and reports live in callbacks; the layers below never reach up into them."""
    offenders = [
        str(path.relative_to(ROOT))
        for package in ("modules", "datamodules")
        for path in (ROOT / package).rglob("*.py")
        if "callbacks" in _imported_roots(path)
    ]
    assert offenders == [], f"modules/ and datamodules/ must not import callbacks/: {offenders}"
