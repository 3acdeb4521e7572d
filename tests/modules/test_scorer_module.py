"""ScorerModule: online labels from a frozen tokenizer, accuracy metrics, CLI fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adaptok.nn import TailDropSampler
from adaptok.nn.scorer import BlockCausalScorer
from modules import ScorerModule
from modules.scorer import scorer_accuracy


def tiny_scorer(**overrides: int) -> BlockCausalScorer:
    args = dict(
        token_width=32,
        num_blocks=4,
        tokens_per_block=8,
        num_candidates=4,
        width=32,
        depth=1,
        heads=2,
    )
    args.update(overrides)
    return BlockCausalScorer(**args)


def test_missing_tokenizer_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match="checkpoint not found: .*nope.ckpt. Train one first"
    ):
        ScorerModule(tiny_scorer(), tokenizer_ckpt=str(tmp_path / "nope.ckpt"), metric="mse")


def test_scorer_shape_mismatch_is_refused(tokenizer_ckpt: Path) -> None:
    with pytest.raises(ValueError, match="scorer is built for"):
        ScorerModule(
            tiny_scorer(tokens_per_block=16), tokenizer_ckpt=str(tokenizer_ckpt), metric="mse"
        )


def test_labels_fall_with_more_tokens_and_training_reduces_loss(tokenizer_ckpt: Path) -> None:
    torch.manual_seed(0)
    module = ScorerModule(
        tiny_scorer(),
        tokenizer_ckpt=str(tokenizer_ckpt),
        metric="mse",
        target_mean=0.05,
        target_std=0.05,
        context_drop=TailDropSampler(mean=4, std=2, min_tokens=1, max_tokens=8),
    )
    video = torch.rand(4, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1))
    batch = {"video": video}
    _, labels = module._step(batch, torch.Generator().manual_seed(0))
    assert labels.shape == (4, 4)
    optimizer = torch.optim.Adam(module.scorer.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        predictions, labels = module._step(batch, torch.Generator().manual_seed(0))
        loss = torch.nn.functional.mse_loss(predictions, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_scorer_accuracy_metrics() -> None:
    true = torch.tensor([[0.3, 0.2, 0.1], [0.5, 0.4, 0.2], [0.6, 0.5, 0.3]])
    perfect = scorer_accuracy(true, true, [1, 2, 3])
    assert perfect["val/scorer_mae"] == pytest.approx(0.0)
    assert perfect["val/scorer_spearman"] == pytest.approx(1.0)
    reversed_rank = scorer_accuracy(-true, true, [1, 2, 3])
    assert reversed_rank["val/scorer_spearman"] == pytest.approx(-1.0)
    assert reversed_rank["val/scorer_mae_at_1"] == pytest.approx(2 * true[:, 0].mean().item())
