"""tools/oracle_data.py: the oracle's gains on hand-made cost tables whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from tools.oracle_data import summary

LENGTHS = np.array([6, 12, 18, 24, 30, 36, 42, 48])


def _curve(scale: float) -> np.ndarray:
    """A convex falling MSE curve over the 8 candidates."""
    return scale * 0.01 * (LENGTHS[0] / LENGTHS) ** 0.8


def test_identical_blocks_leave_nothing_to_win() -> None:
    measured = np.broadcast_to(_curve(1.0), (6, 4, 8)).copy()
    figures = summary(measured, np.full(6, 0.02), LENGTHS)
    for key in ("batch 25%", "per_clip 25%", "batch 50%", "per_clip 50%"):
        assert figures[key] == pytest.approx(0.0, abs=1e-9), key
    for mode in ("batch", "per_clip"):  # the oracle needs what uniform needs
        assert figures[f"{mode} savings 25%"] == pytest.approx(1.0, abs=1e-6), mode
    assert figures["clips beating mean colour"] == 1.0  # 0.01 * (6/48)^0.8 < 0.02
    assert figures["uniform M"] > figures["uniform smallest"]


def test_calm_and_busy_blocks_in_one_clip_give_a_per_clip_gain() -> None:
    calm = np.full(8, 1e-4)  # a calm block: more tokens change nothing
    measured = np.stack([np.stack([calm, _curve(4.0), calm, _curve(4.0)])] * 3)
    figures = summary(measured, np.full(3, 1e-3), LENGTHS)
    assert figures["per_clip 25%"] > 1.0 and figures["batch 25%"] > 1.0
    # the oracle gives calm blocks 6 tokens and busy ones 18 (mean 12): uniform needs 18
    assert figures["per_clip savings 25%"] == pytest.approx(18 / 12)
    # every clip is alike: sharing the budget over the batch wins nothing more than per clip
    assert figures["batch 25%"] == pytest.approx(figures["per_clip 25%"], abs=1e-6)


def test_a_finer_candidate_grid_lets_calm_blocks_give_more_away() -> None:
    """The smallest candidate bounds what a calm block can release (docs/demo_weights.md)."""
    lengths = np.arange(3, 49, 3)  # 16 candidates: 3, 6, ..., 48
    busy = 0.04 * (lengths[0] / lengths) ** 0.8
    calm = np.full(16, 1e-4)
    measured = np.stack([np.stack([calm, busy, calm, busy])] * 3)
    figures = summary(measured, np.full(3, 1e-3), lengths)
    # calm blocks drop to 3 tokens, busy ones get 21 (mean 12): uniform needs 21
    assert figures["per_clip savings 25%"] == pytest.approx(21 / 12)
