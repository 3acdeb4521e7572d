"""TokenHealth's figures and the REPORT targets built from them, on clips with known answers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from callbacks.demo_report import _health, token_health_targets
from callbacks.token_health import summarize_token_health, write_token_health


def test_summary_compares_each_clip_with_its_own_baseline() -> None:
    # 4 clips, 1 block of 4 tokens; the tokenizer beats the mean colour on 3 of them.
    codes = torch.tensor([[0, 1, 2, 3], [0, 0, 0, 0], [5, 5, 6, 6], [1, 2, 3, 3]])
    psnr = torch.tensor([30.0, 20.0, 25.0, 40.0])
    mean_colour = torch.tensor([20.0, 22.0, 18.0, 35.0])
    summary = summarize_token_health(
        codes, psnr, {"mean_colour": mean_colour, "grid2x2": mean_colour + 1}, 4, 8
    )
    assert summary["beats_mean_colour"] == pytest.approx(0.75)
    # gains 10, -2, 7, 5 -> torch's median takes the lower middle value
    assert summary["gain_over_mean_colour_median"] == pytest.approx(5.0)
    assert summary["distinct_codes_per_block"] == pytest.approx((4 + 1 + 2 + 3) / 4)
    # busy half = the two clips with the lowest mean-colour PSNR (18, 20): 2 and 4 codes
    assert summary["distinct_codes_per_block_busy"] == pytest.approx(3.0)
    assert summary["grid2x2_psnr_median"] == pytest.approx(21.0)  # lower middle of 19..36


def test_written_figures_turn_into_report_targets(tmp_path: Path) -> None:
    summary = summarize_token_health(
        torch.arange(32).view(2, 16) % 8,
        torch.tensor([30.0, 31.0]),
        {"mean_colour": torch.tensor([20.0, 26.0])},
        16,
        8,
    )
    write_token_health(tmp_path, summary, 16)
    assert "beats the per-block mean colour on 100%" in (tmp_path / "token_health.md").read_text()
    targets = {t["target"]: t for t in token_health_targets(_health(tmp_path / "token_health.csv"))}
    assert targets["clips where M tokens beat the mean colour"]["met"]
    assert targets["median gain over the mean colour at M tokens (dB)"]["met"]  # 5 and 10 dB
    distinct = targets["distinct codes per block, busy clips"]
    assert distinct["value"] == pytest.approx(8.0) and distinct["met"]  # 8 >= 16 / 2
    assert token_health_targets({}) == []
