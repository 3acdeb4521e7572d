"""Annotation and evaluation allocate through one planner: the annotator's lengths equal the
TokenBudgetPlanner's (as the AllocationEvaluator builds it) for the same clips and budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from adaptok.alloc import TokenBudget
from adaptok.budget_planner import TokenBudgetPlanner
from modules.annotator import AnnotatorModule


def _video(module: AnnotatorModule, clips: int) -> torch.Tensor:
    size, frames = module.tokenizer.image_size, module.tokenizer.num_frames
    video = torch.rand(clips, 3, frames, size, size, generator=torch.Generator().manual_seed(7))
    video[: clips // 2] *= 0.1  # calm clips beside busy ones
    return video


@pytest.mark.parametrize("allocation", ["per_clip", "causal_table", "streaming"])
def test_annotator_lengths_are_the_planners(scorer_ckpt: Path, allocation: str) -> None:
    module = AnnotatorModule(
        str(scorer_ckpt), budgets=[0.25, 0.5, 0.75], allocation=allocation, solver="fast"
    )
    video = _video(module, 6)
    out = module.predict_step(
        {
            "video": video,
            "key": [f"k{i}" for i in range(6)],
            "label": [0] * 6,
            "class_name": ["c"] * 6,
            "window_start": [0] * 6,
        },
        0,
    )
    encoding = module.tokenizer.encode(video)
    predictions = module.scorer(encoding.latents, encoding.quantized)
    # the stored costs are the predictions in the label metric's units
    np.testing.assert_allclose(
        out["costs"], module.scorer.to_label_units(predictions).numpy(), rtol=1e-6, atol=1e-7
    )
    tokens = module.tokens_per_block
    for level, fraction in enumerate([0.25, 0.5, 0.75]):
        budget = TokenBudget.from_fraction(fraction, tokens)
        if allocation == "streaming":  # a fresh price per clip: a fresh planner per clip
            expected = torch.cat(
                [
                    TokenBudgetPlanner(module.tokenizer, module.scorer, solver="fast").plan(
                        video[i : i + 1],
                        module.tokenizer.encode(video[i : i + 1]),
                        budget,
                        mode="streaming",
                    )
                    for i in range(6)
                ]
            )
        else:  # as AllocationEvaluator builds it, on the same predictions
            planner = TokenBudgetPlanner(module.tokenizer, module.scorer, solver="fast")
            reuse = predictions if allocation == "per_clip" else None
            expected = planner.plan(video, encoding, budget, mode=allocation, costs=reuse)
        np.testing.assert_array_equal(out["lengths"][:, level], expected.numpy())
        if allocation != "causal_table":  # causal_table rounds block totals down
            np.testing.assert_array_equal(
                out["lengths"][:, level].sum(axis=1), np.full(6, budget.clip_tokens(4))
            )
