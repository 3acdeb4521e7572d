"""Shared fixtures of the metric tests: the pretrained networks, or a clear skip."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from adaptok.metrics.i3d import load_i3d
from adaptok.metrics.lpips import LPIPS
from adaptok.metrics.weights import WeightsUnavailableError

# Outputs of the original JAX models on fixed inputs (see reference/README.md), kept in the
# repository so the parity tests run on any clone.
TESTDATA = Path(__file__).resolve().parent / "reference"


def _or_skip(load: Callable[[], nn.Module]) -> nn.Module:
    try:
        return load()
    except WeightsUnavailableError as error:
        pytest.skip(f"pretrained weights unavailable (run `make weights`): {error}")


@pytest.fixture(scope="session")
def i3d() -> nn.Module:
    """The converted I3D (Kinetics-400) network."""
    return _or_skip(load_i3d)


@pytest.fixture(scope="session")
def lpips_vgg() -> LPIPS:
    return _or_skip(lambda: LPIPS("vgg"))


@pytest.fixture(scope="session")
def lpips_alex() -> LPIPS:
    return _or_skip(lambda: LPIPS("alex"))


@pytest.fixture(scope="session")
def reference() -> Callable[[str], dict[str, np.ndarray]]:
    """Loader of a reference .npz of ``tests/metrics/reference`` (a missing file fails)."""

    def load(name: str) -> dict[str, np.ndarray]:
        path = TESTDATA / name
        if not path.is_file():
            pytest.fail(f"reference vectors missing from the repository: {path}")
        with np.load(path) as data:
            return dict(data)

    return load
