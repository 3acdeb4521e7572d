"""Annotations by the official procedure (allocation: causal_table) and the clip-total spread:
clips share each block's budget over the batch, so clip totals vary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from adaptok.alloc import allocate
from adaptok.alloc.block_table import floor_block_total
from adaptok.alloc.feasibility import TokenGrid
from callbacks.annotation_writer import _ShardStats, summarise_annotations
from modules.annotator import AnnotatorModule


def _video(module: AnnotatorModule, clips: int) -> torch.Tensor:
    tokenizer = module.tokenizer
    size, frames = tokenizer.image_size, tokenizer.num_frames
    generator = torch.Generator().manual_seed(5)
    video = torch.rand(clips, 3, frames, size, size, generator=generator)
    video[: clips // 2] *= 0.1  # calm clips beside busy ones
    return video


def test_causal_table_is_the_official_procedure_over_the_batch(scorer_ckpt: Path) -> None:
    module = AnnotatorModule(str(scorer_ckpt), allocation="causal_table")
    clips = 8
    video = _video(module, clips)
    out = module.predict_step(
        {
            "video": video,
            "key": [f"k{i}" for i in range(clips)],
            "label": [0] * clips,
            "class_name": ["c"] * clips,
            "window_start": [0] * clips,
        },
        0,
    )
    lengths = out["lengths"].astype(np.int64)  # (B, P, K)
    _, predictions, encoding = module._encode(video)
    np.testing.assert_array_equal(lengths, module.allocate_lengths(video, encoding, predictions))
    grid = TokenGrid.from_lengths(np.array(module.candidate_lengths))
    for level, fraction in enumerate(module.budgets):
        targets = module.block_targets[fraction]
        context = torch.full((clips, 4), module.tokens_per_block, dtype=torch.long)
        for block in range(4):
            total = floor_block_total(targets[block], clips, grid)
            assert int(lengths[:, level, block].sum()) == total
            with torch.no_grad():  # block b scored given the lengths chosen for blocks < b
                scores = module.scorer(encoding.latents, encoding.quantized, context)[:, block]
            scores = scores.double().numpy()
            best = allocate(scores[:, None], module.candidate_lengths, total / clips)
            chosen = np.take_along_axis(
                scores, np.searchsorted(grid.lengths, lengths[:, level, block])[:, None], 1
            )
            assert float(chosen.sum()) == pytest.approx(best.objective, abs=1e-9)
            context[:, block] = torch.as_tensor(lengths[:, level, block])
    per_clip_totals = lengths.sum(axis=2)  # (B, P): vary with content (sample-wise)
    assert len(set(per_clip_totals[:, 1].tolist())) > 1
    assert module.annotation_info()["block_targets"][0.5] == [7.125, 3.78125, 2.6875, 2.34375]


def test_causal_table_refuses_budgets_without_a_row(scorer_ckpt: Path) -> None:
    with pytest.raises(ValueError, match="no row"):
        AnnotatorModule(str(scorer_ckpt), allocation="causal_table", budgets=[0.3])
    custom = AnnotatorModule(
        str(scorer_ckpt),
        allocation="causal_table",
        budgets=[0.3],
        block_table={0.3: [0.5, 0.25, 0.25, 0.2]},
    )
    assert custom.block_targets == {0.3: [4.0, 2.0, 2.0, 1.6]}


def test_summary_reports_the_spread_of_clip_totals() -> None:
    stats = _ShardStats()
    for row in (
        [[2, 2, 2, 2], [8, 4, 2, 2]],
        [[2, 2, 2, 2], [8, 8, 4, 4]],
        [[2, 2, 2, 2], [2, 2, 2, 2]],
    ):
        stats.add(f"k{len(stats.keys)}", np.array(row), [0.25, 0.5])
    index = stats.as_dict()
    assert index["clip_total_hist"] == [{"8": 3}, {"8": 1, "16": 1, "24": 1}]
    summary = summarise_annotations([index], tokens_per_block=8)
    assert "## Tokens per clip (spread over windows)" in summary
    assert "| 0.25 | 8 | 8.0 | 0.0 | 8 | 8 | 8 | 8 | 8 |" in summary
    assert "| 0.5 | 16 | 16.0 | 6.5 | 8 | 8 | 16 | 24 | 24 |" in summary
    old = {k: v for k, v in index.items() if k != "clip_total_hist"}  # an older sidecar
    assert "Tokens per clip" not in summarise_annotations([old], tokens_per_block=8)
