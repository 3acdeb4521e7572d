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


def test_label_normalisation_lives_in_the_scorers_buffers(tokenizer_ckpt: Path) -> None:
    module = ScorerModule(
        tiny_scorer(), tokenizer_ckpt=str(tokenizer_ckpt), metric="mse", target_mean=0.05,
        target_std=0.02,
    )  # fmt: skip
    scorer = module.scorer
    assert scorer.label_normalisation == pytest.approx((0.05, 0.02))
    assert (module.target_mean, module.target_std) == pytest.approx((0.05, 0.02))
    state = module.state_dict()
    assert float(state["scorer.label_mean"]) == pytest.approx(0.05)
    assert float(state["scorer.label_std"]) == pytest.approx(0.02)
    predictions = torch.tensor([[-1.0, 0.0, 2.0]])
    costs = scorer.to_label_units(predictions)
    torch.testing.assert_close(costs, torch.tensor([[0.03, 0.05, 0.09]]))
    torch.testing.assert_close(scorer.from_label_units(costs), predictions)
    with pytest.raises(ValueError, match="std > 0"):
        scorer.set_label_normalisation(0.1, 0.0)
    with pytest.raises(ValueError, match="target_std must be > 0 or null"):
        ScorerModule(tiny_scorer(), tokenizer_ckpt=str(tokenizer_ckpt), target_std=-1.0)


def test_null_normalisation_is_estimated_from_training_labels(tokenizer_ckpt: Path) -> None:
    """target_mean/target_std null: the labels of the first batches give them, every value
    measured the way training measures it; a value given in the YAML is kept."""
    module = ScorerModule(
        tiny_scorer(), tokenizer_ckpt=str(tokenizer_ckpt), metric="mse", target_mean=None,
        target_std=None,
    )  # fmt: skip
    assert not module.scorer.has_label_normalisation
    generator = torch.Generator().manual_seed(9)
    batches = [{"video": torch.rand(3, 3, 8, 32, 32, generator=generator)} for _ in range(2)]
    mean, std = module.estimate_label_normalisation(batches)
    draws = torch.Generator().manual_seed(0)
    with torch.no_grad():
        labels = torch.cat([module._draw(b, draws)[3].double().flatten() for b in batches])
    assert labels.numel() == 2 * 3 * 4
    assert (mean, std) == pytest.approx((float(labels.mean()), float(labels.std(correction=0))))
    assert module.scorer.label_normalisation == pytest.approx((mean, std), rel=1e-6)
    half = ScorerModule(
        tiny_scorer(), tokenizer_ckpt=str(tokenizer_ckpt), metric="mse", target_mean=None,
        target_std=0.5,
    )  # fmt: skip
    assert half.estimate_label_normalisation(batches) == pytest.approx((mean, 0.5))


def test_a_fit_with_null_normalisation_estimates_it_first(
    workspace: Path, tokenizer_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real `adaptok fit` with target_mean/target_std null: the values are estimated before
    the first step, logged, saved in the scorer's buffers, and the checkpoint reloads."""
    from modules.cli import run_cli
    from modules.loading import load_frozen_scorer
    from tests.helpers import tiny_args, working_directory

    (tmp_path / "runs" / "demo").mkdir(parents=True)
    (tmp_path / "data").symlink_to(workspace / "data")
    (tmp_path / "runs" / "demo" / "tokenizer").symlink_to(tokenizer_ckpt.parent.parent)
    flags = [
        "--model.init_args.target_mean=null",
        "--model.init_args.target_std=null",
        "--model.init_args.metric=mse",
        "--model.init_args.label_stat_batches=2",
        "--trainer.max_steps=1",
        "--trainer.limit_val_batches=0",
    ]
    messages: list[str] = []
    monkeypatch.setattr("modules.scorer.rank_zero_info", messages.append)
    with working_directory(tmp_path):
        run_cli(["fit", *tiny_args("demo/scorer.yaml"), *flags])
    (message,) = [m for m in messages if "label normalisation estimated" in m]
    assert "from 2 training batch(es) per rank (32 labels, metric mse)" in message
    ckpt = tmp_path / "runs" / "demo" / "scorer" / "checkpoints" / "last.ckpt"
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert stored["hyper_parameters"]["target_mean"] is None
    mean, std = (
        float(stored["state_dict"]["scorer.label_mean"]),
        float(stored["state_dict"]["scorer.label_std"]),
    )
    assert 0 < mean < 1 and 0 < std < 1
    assert f"target_mean {mean:.6g}, target_std {std:.6g}" in message
    restored = load_frozen_scorer(ckpt)
    assert restored.scorer.label_normalisation == pytest.approx((mean, std))


def test_checkpoints_from_before_the_label_buffers_load(scorer_ckpt: Path, tmp_path: Path) -> None:
    """A scorer checkpoint without label buffers gets them from its target_mean/target_std,
    through Lightning, `load_pretrained` and an export."""
    from adaptok.pretrained import load_pretrained
    from modules.loading import load_frozen_scorer

    checkpoint = torch.load(scorer_ckpt, map_location="cpu", weights_only=False)
    hparams = checkpoint["hyper_parameters"]
    hparams["target_mean"], hparams["target_std"] = 0.25, 0.125
    del checkpoint["state_dict"]["scorer.label_mean"], checkpoint["state_dict"]["scorer.label_std"]
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    assert load_frozen_scorer(old).scorer.label_normalisation == (0.25, 0.125)
    model = load_pretrained(old)
    assert model.scorer.label_normalisation == (0.25, 0.125)
    assert model.info["cost_normalisation"] == [0.25, 0.125]
