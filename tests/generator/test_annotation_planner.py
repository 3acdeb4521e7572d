"""Annotation and evaluation choose the same lengths: for the same clips, budgets and mode, the
lengths the AnnotatorModule writes equal those the AllocationEvaluator callback records for its
``scorer`` rows (each drives the planner on its own: the annotator on its fp32 predictions, the
evaluator on its own cost pass), and ``per_clip``/``streaming`` clips spend exactly
``K x budget x M`` tokens. ``streaming`` annotates every clip from a fresh price, so each clip
is compared with an evaluation of that clip alone."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from adaptok.alloc import TokenBudget
from adaptok.losses import BlockQuality
from callbacks.allocation_evaluator import AllocationEvaluator
from modules.annotator import AnnotatorModule

FRACTIONS = [0.25, 0.5, 0.75]


def _video(module: AnnotatorModule, clips: int) -> torch.Tensor:
    size, frames = module.tokenizer.image_size, module.tokenizer.num_frames
    video = torch.rand(clips, 3, frames, size, size, generator=torch.Generator().manual_seed(7))
    video[: clips // 2] *= 0.1  # calm clips beside busy ones
    return video


def _evaluated_lengths(module: AnnotatorModule, video: torch.Tensor, mode: str) -> np.ndarray:
    """``(B, P, K)`` lengths the AllocationEvaluator records for its scorer rows on ``video``."""
    evaluator = AllocationEvaluator(
        budgets=FRACTIONS,
        policies=["scorer"],
        modes=[mode],
        solver="fast",
        fvd=False,
        lpips=False,
        uniform_curve=False,
        num_samples=len(video),
    )
    stage = SimpleNamespace(
        tokenizer=module.tokenizer,
        scorer=module.scorer,
        quality=BlockQuality("mse"),
        device=torch.device("cpu"),
        hparams={},
    )
    evaluator.on_split_start("test", SimpleNamespace(current_epoch=0, sanity_checking=False), stage)
    evaluator.on_split_batch_end("test", None, stage, None, {"video": video}, 0)
    tokens = module.tokens_per_block
    return np.stack(
        [
            torch.cat(
                evaluator._lengths[("scorer", mode, TokenBudget.from_fraction(f, tokens))]
            ).numpy()
            for f in FRACTIONS
        ],
        axis=1,
    )


@pytest.mark.parametrize("allocation", ["per_clip", "causal_table", "streaming"])
def test_annotator_lengths_are_the_allocation_evaluators(
    scorer_ckpt: Path, allocation: str
) -> None:
    module = AnnotatorModule(
        str(scorer_ckpt), budgets=FRACTIONS, allocation=allocation, solver="fast"
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
    if allocation == "streaming":  # a fresh price per clip: each clip evaluated alone
        expected = np.concatenate(
            [_evaluated_lengths(module, video[i : i + 1], allocation) for i in range(6)]
        )
    else:  # the batch together (causal_table's block totals are over the batch)
        expected = _evaluated_lengths(module, video, allocation)
    np.testing.assert_array_equal(out["lengths"], expected)
    assert len(np.unique(out["lengths"].reshape(6, -1), axis=0)) > 1  # lengths adapt to content
    if allocation != "causal_table":  # causal_table rounds block totals down
        for level, fraction in enumerate(FRACTIONS):
            budget = TokenBudget.from_fraction(fraction, module.tokens_per_block)
            np.testing.assert_array_equal(
                out["lengths"][:, level].sum(axis=1), np.full(6, budget.clip_tokens(4))
            )
