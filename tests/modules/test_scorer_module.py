"""ScorerModule: labels measured with a frozen tokenizer (online or replayed), accuracy, CLI fit."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import pytest
import torch

from adaptok.nn import TailDropSampler
from adaptok.nn.scorer import LOG_LABEL_FLOOR, BlockCausalScorer
from modules import ScorerModule
from modules.scorer import ScorerFactory, scorer_accuracy


def tiny_scorer(**overrides: int) -> ScorerFactory:
    """The tiny scorer's own settings; its geometry comes from the tokenizer it is given."""
    args = dict(num_candidates=4, width=32, depth=1, heads=2)
    args.update(overrides)
    return partial(BlockCausalScorer, **args)


def test_missing_tokenizer_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match="checkpoint not found: .*nope.ckpt. Train one first"
    ):
        ScorerModule(tiny_scorer(), tokenizer_ckpt=str(tmp_path / "nope.ckpt"), metric="mse")


def test_scorer_geometry_is_the_tokenizers(tokenizer_ckpt: Path) -> None:
    """Token width, K and M come from the tokenizer checkpoint; the resolved spec is kept."""
    from modules.loading import load_frozen_tokenizer

    tokenizer = load_frozen_tokenizer(tokenizer_ckpt)
    module = ScorerModule(tiny_scorer(), tokenizer_ckpt=str(tokenizer_ckpt), metric="mse")
    scorer = module.scorer
    assert (scorer.num_blocks, scorer.tokens_per_block) == (
        tokenizer.num_blocks,
        tokenizer.tokens_per_block,
    )
    assert scorer.input_proj.in_features == 2 * tokenizer.width
    assert module.hparams["scorer_spec"] == {
        "class_path": "adaptok.nn.scorer.BlockCausalScorer",
        "init_args": {
            "token_width": tokenizer.width,
            "num_blocks": tokenizer.num_blocks,
            "tokens_per_block": tokenizer.tokens_per_block,
            "num_candidates": 4,
            "width": 32,
            "depth": 1,
            "heads": 2,
        },
    }
    encoding = tokenizer.encode(torch.rand(2, 3, tokenizer.num_frames, 32, 32))
    assert module.predict_costs(encoding).shape == (2, tokenizer.num_blocks, 4)
    with pytest.raises(TypeError, match="not a built network"):
        ScorerModule(tiny_scorer()(32, 4, 8), tokenizer_ckpt=str(tokenizer_ckpt))
    with pytest.raises(ValueError, match="give `scorer`"):
        ScorerModule(tokenizer_ckpt=str(tokenizer_ckpt))


def test_another_tokenizer_gives_a_scorer_of_its_geometry(tokenizer_ckpt: Path) -> None:
    """A tokenizer of 16 tokens per block (and another width) sizes the same scorer settings
    anew: nothing to edit but the parent."""
    from modules.loading import tokenizer_spec_of

    stored = torch.load(tokenizer_ckpt, map_location="cpu", weights_only=True)
    spec = tokenizer_spec_of(stored)
    spec["init_args"] = {**spec["init_args"], "tokens_per_block": 16, "width": 48, "heads": 3}
    module = ScorerModule(tiny_scorer(), tokenizer_spec=spec, metric="mse")
    assert (module.scorer.num_blocks, module.scorer.tokens_per_block) == (4, 16)
    assert module.scorer.input_proj.in_features == 2 * 48
    assert module.candidate_lengths == [4, 8, 12, 16]
    assert module.hparams["scorer_spec"]["init_args"]["tokens_per_block"] == 16


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


def test_log_label_transform_scales_each_block_curve(tokenizer_ckpt: Path) -> None:
    """label_transform log: predictions are z-normalised log costs; costs come back in the
    metric's units, so one offset scales a block's curve (twice the cost, twice the gain)."""
    module = ScorerModule(
        partial(BlockCausalScorer, num_candidates=4, width=32, depth=1, heads=2,
                label_transform="log"),
        tokenizer_ckpt=str(tokenizer_ckpt), metric="mse", target_mean=-4.0, target_std=0.5,
    )  # fmt: skip
    scorer = module.scorer
    assert module.hparams["scorer_spec"]["init_args"]["label_transform"] == "log"
    curve = torch.tensor([[0.0, -0.4, -0.8]])
    shifted = scorer.to_label_units(curve + math.log(4.0) / 0.5)  # +log 4 in log-cost space
    base = scorer.to_label_units(curve)
    torch.testing.assert_close(shifted, 4 * base)
    torch.testing.assert_close(shifted[:, :-1] - shifted[:, 1:], 4 * (base[:, :-1] - base[:, 1:]))
    torch.testing.assert_close(scorer.from_label_units(base), curve)
    assert scorer.from_label_units(torch.tensor(0.0)) == pytest.approx(
        (math.log(LOG_LABEL_FLOOR) + 4.0) / 0.5
    )  # a zero cost is floored, not -inf
    with pytest.raises(ValueError, match="non-negative costs"):
        scorer.label_space(torch.tensor([-20.0]))  # e.g. a negated PSNR
    with pytest.raises(ValueError, match="label_transform 'log' needs non-negative costs"):
        ScorerModule(
            partial(BlockCausalScorer, num_candidates=4, width=32, depth=1, heads=2,
                    label_transform="log"),
            tokenizer_ckpt=str(tokenizer_ckpt), metric="psnr",
        )  # fmt: skip
    with pytest.raises(ValueError, match="label_transform must be"):
        BlockCausalScorer(token_width=8, num_blocks=2, tokens_per_block=4, num_candidates=2,
                          width=8, depth=1, heads=1, label_transform="sqrt")  # type: ignore[arg-type]  # fmt: skip


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
    # the demo scorer learns log(MSE) (label_transform: log): MSE in (0, 1) -> a negative mean
    assert math.log(LOG_LABEL_FLOOR) < mean < 0 and std > 0
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


def test_scorer_checkpoint_holds_the_resolved_geometry(scorer_ckpt: Path) -> None:
    """`adaptok fit` on a YAML that states no geometry: the checkpoint's `scorer` holds the
    scorer's own settings, `scorer_spec` the whole spec, and it restores alone."""
    from adaptok.pretrained import load_pretrained
    from modules.loading import load_frozen_scorer

    hparams = torch.load(scorer_ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]
    own = hparams["scorer"]["init_args"]
    assert not {"token_width", "num_blocks", "tokens_per_block"} & set(own)
    resolved = hparams["scorer_spec"]["init_args"]
    assert (resolved["token_width"], resolved["num_blocks"], resolved["tokens_per_block"]) == (
        32,
        4,
        8,
    )
    assert {k: resolved[k] for k in own} == own
    restored = load_frozen_scorer(scorer_ckpt)
    assert restored.scorer.tokens_per_block == 8 and restored.candidate_lengths == [2, 4, 6, 8]
    # the data section states no clip size either: the frozen tokenizer's was taken
    data = torch.load(scorer_ckpt, map_location="cpu", weights_only=True)
    data = data["datamodule_hyper_parameters"]
    assert (data["num_frames"], data["resolution"]) == (8, 32)
    assert load_pretrained(scorer_ckpt).candidate_lengths == [2, 4, 6, 8]


def test_checkpoints_from_before_the_derived_geometry_load(
    scorer_ckpt: Path, tmp_path: Path
) -> None:
    """A scorer checkpoint holding the whole spec under `scorer` (no `scorer_spec`) restores
    through Lightning, `load_pretrained` and `--ckpt_path` without a model section."""
    import json

    from adaptok.pretrained import load_pretrained
    from modules.checkpoint_args import with_model_from_checkpoint
    from modules.loading import load_frozen_scorer

    checkpoint = torch.load(scorer_ckpt, map_location="cpu", weights_only=False)
    hparams = checkpoint["hyper_parameters"]
    hparams["scorer"] = hparams.pop("scorer_spec")
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    reference = load_frozen_scorer(scorer_ckpt).scorer.state_dict()
    direct = ScorerModule.load_from_checkpoint(old, map_location="cpu")
    assert direct.hparams["scorer_spec"]["init_args"]["tokens_per_block"] == 8
    for restored in (direct.scorer, load_frozen_scorer(old).scorer, load_pretrained(old).scorer):
        assert restored.tokens_per_block == 8
        for key, value in reference.items():
            assert torch.equal(restored.state_dict()[key], value)
    args = with_model_from_checkpoint(["test", "--ckpt_path", str(old)])
    model = json.loads(next(a for a in args if a.startswith("--model=")).split("=", 1)[1])
    assert "tokens_per_block" not in model["init_args"]["scorer"]["init_args"]
    assert model["init_args"]["scorer_spec"]["init_args"]["tokens_per_block"] == 8


def test_an_old_spec_of_another_geometry_than_its_tokenizer_is_refused(
    scorer_ckpt: Path, tmp_path: Path
) -> None:
    """An old checkpoint's whole spec under `scorer` must state the tokenizer's geometry."""
    checkpoint = torch.load(scorer_ckpt, map_location="cpu", weights_only=False)
    hparams = checkpoint["hyper_parameters"]
    spec = hparams.pop("scorer_spec")
    spec["init_args"]["tokens_per_block"] = 16
    hparams["scorer"] = spec
    old = tmp_path / "edited.ckpt"
    torch.save(checkpoint, old)
    with pytest.raises(ValueError, match="tokens_per_block=16 but its tokenizer has"):
        ScorerModule.load_from_checkpoint(old, map_location="cpu")


def test_a_factory_that_cannot_be_recorded_is_refused(tokenizer_ckpt: Path) -> None:
    """A lambda would save `scorer_spec: None` and an unrestorable checkpoint."""
    factory = tiny_scorer()
    with pytest.raises(TypeError, match="cannot be recorded in the checkpoint"):
        ScorerModule(lambda *geometry: factory(*geometry), tokenizer_ckpt=str(tokenizer_ckpt))
    with pytest.raises(TypeError, match="positional"):
        ScorerModule(partial(BlockCausalScorer, 32), tokenizer_ckpt=str(tokenizer_ckpt))
    stated = {"class_path": "adaptok.nn.BlockCausalScorer", "init_args": {"num_blocks": 5}}
    with pytest.raises(ValueError, match="num_blocks=5 but its tokenizer has num_blocks=4"):
        ScorerModule(stated, tokenizer_ckpt=str(tokenizer_ckpt), metric="mse")


def test_a_context_drop_beyond_m_is_refused(tokenizer_ckpt: Path) -> None:
    wide = TailDropSampler(mean=8, std=4, min_tokens=1, max_tokens=16)
    with pytest.raises(ValueError, match="max_tokens=16 exceeds .* M=8"):
        ScorerModule(tiny_scorer(), tokenizer_ckpt=str(tokenizer_ckpt), context_drop=wide)
    default = ScorerModule(tiny_scorer(), tokenizer_ckpt=str(tokenizer_ckpt), metric="mse")
    drop = default.context_drop
    assert (drop.mean, drop.std, drop.min_tokens, drop.max_tokens) == (4, 2, 1, 8)


def test_evaluating_a_scorer_without_normalisation_is_refused(
    workspace: Path, tokenizer_ckpt: Path, tmp_path: Path
) -> None:
    """target_mean/target_std null and never fit: validate/test stop in one line instead of
    reporting NaN metrics."""
    import lightning.pytorch as pl

    from datamodules import VideoShardsDataModule

    module = ScorerModule(
        tiny_scorer(), tokenizer_ckpt=str(tokenizer_ckpt), metric="mse", target_mean=None,
        target_std=None,
    )  # fmt: skip
    data = VideoShardsDataModule(
        test_urls=str(workspace / "data/demo/synthetic/val-*.tar"),
        val_urls=str(workspace / "data/demo/synthetic/val-*.tar"),
        num_frames=8, resolution=32, batch_size=2, num_workers=0,
    )  # fmt: skip
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=1, limit_test_batches=1, default_root_dir=tmp_path,
    )  # fmt: skip
    for run in (trainer.validate, trainer.test):
        with pytest.raises(RuntimeError, match="label normalisation is unset"):
            run(module, datamodule=data)


def test_the_label_statistics_pass_is_off_the_books(
    workspace: Path, tokenizer_ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The estimation reads its batches through a private ledger, in the main process, and
    leaves a restored resume state to the training loader."""
    import types

    from datamodules import VideoShardsDataModule

    data = VideoShardsDataModule(
        train_urls=str(workspace / "data/demo/synthetic/train-*.tar"),
        num_frames=8, resolution=32, batch_size=2, num_workers=2,
    )  # fmt: skip
    data.load_state_dict({"version": 1, "epoch": 0, "batches": 3, "seed": data.seed})
    ledger, counts = data.ledger, data.skip_counts
    seen: dict[str, object] = {}

    def estimate(batches: list) -> tuple[float, float]:
        seen["batches"] = len(batches)
        return 0.1, 0.1

    module = ScorerModule(
        tiny_scorer(), tokenizer_ckpt=str(tokenizer_ckpt), metric="mse", target_mean=None,
        target_std=None, label_stat_batches=2,
    )  # fmt: skip
    monkeypatch.setattr(module, "estimate_label_normalisation", estimate)
    built = []
    original = data.train_dataloader

    def train_dataloader():  # noqa: ANN202
        loader = original()
        built.append((loader.ledger, loader.resume_at, loader.num_workers))
        return loader

    monkeypatch.setattr(data, "train_dataloader", train_dataloader)
    module._trainer = types.SimpleNamespace(datamodule=data, state=types.SimpleNamespace(fn=None))
    module.on_fit_start()
    assert seen["batches"] == 2
    ((private, resume_at, workers),) = built
    assert private is not ledger and resume_at is None and workers == 0
    # the datamodule's own accounting and resume state are untouched
    assert data.ledger is ledger and data.skip_counts is counts and not counts
    assert data._resume_at == (0, 3) and data.num_workers == 2


def test_replay_measures_every_block_and_regresses_draws_from_memory(
    tokenizer_ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With replay_size, a measured step stores the batch's whole cost tables (each block
    given the sampled context before it); the steps between measure nothing; every step
    regresses replay_batch clips drawn from the memory, all blocks at once."""
    import modules.scorer as scorer_module
    from adaptok.losses import measure_cost_table

    torch.manual_seed(0)
    module = ScorerModule(
        tiny_scorer(),
        tokenizer_ckpt=str(tokenizer_ckpt),
        metric="mse",
        target_mean=-3.0,
        target_std=1.0,
        replay_size=5,
        replay_batch=6,
        measure_every=3,
        slope_weight=1.0,
    )
    measured = []

    def counting(*args: object) -> torch.Tensor:
        table = measure_cost_table(*args)  # type: ignore[arg-type]
        measured.append((args[2], args[4], table))
        return table

    monkeypatch.setattr(scorer_module, "measure_cost_table", counting)
    k, j = module.tokenizer.num_blocks, len(module.candidate_lengths)
    video = torch.rand(2, 3, module.tokenizer.num_frames, 32, 32)
    predictions, labels = module._replay_step({"video": video})
    assert predictions.shape == labels.shape == (6, k, j)
    assert len(module.replay) == 2 and len(measured) == 1
    # the memory holds what was measured: the context each table was measured with
    _, context, table = measured[0]
    rows = module.replay.sample(50, torch.Generator().manual_seed(0))
    for row_context, row_costs in zip(rows["context"], rows["costs"], strict=True):
        match = [i for i in range(2) if torch.equal(row_costs, table[i])]
        assert len(match) == 1 and torch.equal(row_context, context[match[0]])
    # the labels are those tables in the scorer's label space
    stored = {tuple(row.tolist()) for row in module.scorer.from_label_units(table).flatten(1)}
    assert {tuple(row.tolist()) for row in labels.flatten(1)} <= stored
    module._replay_step({"video": video})
    module._replay_step({"video": video})
    assert len(measured) == 1 and len(module.replay) == 2  # calls 2 and 3 only replay
    for _ in range(4):
        module._replay_step({"video": video})
    assert len(measured) == 3 and len(module.replay) == 5  # calls 4 and 7: capacity 5 of 6
    # and the regression learns the stored tables
    optimizer = torch.optim.Adam(module.scorer.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        predictions, labels = module._replay_step({"video": video})
        loss = torch.nn.functional.mse_loss(predictions, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert len(measured) == 3 + 40 // 3  # every third call measures
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5]), losses


def test_replay_settings_are_checked(tokenizer_ckpt: Path) -> None:
    for bad in ({"replay_size": -1}, {"replay_batch": 0}, {"measure_every": 0}):
        with pytest.raises(ValueError, match="replay_size must be >= 0"):
            ScorerModule(tiny_scorer(), tokenizer_ckpt=str(tokenizer_ckpt), metric="mse", **bad)
    module = ScorerModule(tiny_scorer(), tokenizer_ckpt=str(tokenizer_ckpt), metric="mse")
    assert module.replay is None  # the paper's online step by default


# ---------------------------------------------------------------------------- init_weights
@pytest.fixture(scope="module")
def scorer_export(
    workspace: Path, scorer_ckpt: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """`adaptok export` of the session scorer (LPIPS labels, normalisation -1.0 / 0.3)."""
    from adaptok.export import export
    from tests.helpers import working_directory

    folder = tmp_path_factory.mktemp("exports") / "tiny-scorer"
    with working_directory(workspace):  # the recorded train_urls are relative to it
        return export(scorer_ckpt, folder, overwrite=True)


def _tiny_scorer_cli(workspace: Path, *flags: str):  # noqa: ANN202 (a LightningCLI)
    """The tiny demo scorer's CLI, built in the workspace without running (model + trainer)."""
    from modules.cli import run_cli
    from tests.helpers import tiny_args, working_directory

    with working_directory(workspace):
        cli = run_cli([*tiny_args("demo/scorer.yaml"), *flags], run=False)
    cli.model.trainer = cli.trainer  # a fit without ckpt_path until a test sets one
    return cli


def test_a_fit_starts_from_the_exported_scorer_and_its_normalisation(
    workspace: Path, scorer_export: Path
) -> None:
    """setup("fit") copies every tensor of the export's scorer, label buffers included, so
    on_fit_start (after it) estimates nothing: without a datamodule it would have to stop."""
    from adaptok.pretrained import load_pretrained

    cli = _tiny_scorer_cli(
        workspace,
        f"--model.init_args.init_weights={scorer_export}",
        "--model.init_args.target_mean=null",
        "--model.init_args.target_std=null",
    )
    module = cli.model
    assert not module.scorer.has_label_normalisation
    module.setup("fit")
    stored = load_pretrained(scorer_export).scorer.state_dict()
    own = module.scorer.state_dict()
    assert set(own) == set(stored)
    for key, value in stored.items():
        assert torch.equal(own[key], value), key
    assert module.scorer.label_normalisation == pytest.approx((-1.0, 0.3))
    module.on_fit_start()  # returns at once: the restored normalisation is kept


def test_a_resumed_fit_keeps_its_own_scorer(workspace: Path, scorer_export: Path) -> None:
    cli = _tiny_scorer_cli(workspace, f"--model.init_args.init_weights={scorer_export}")
    module = cli.model
    before = {k: v.clone() for k, v in module.scorer.state_dict().items()}
    cli.trainer.ckpt_path = "resumed.ckpt"  # what Trainer.fit(ckpt_path=...) sets
    module.setup("fit")
    assert all(torch.equal(v, before[k]) for k, v in module.scorer.state_dict().items())


SPEC_FLAG = "--model.init_args.scorer.init_args.num_candidates=2"


@pytest.mark.parametrize(
    ("source", "flag", "refusal"),
    [
        (
            "export",
            SPEC_FLAG,
            r"scorer spec differs from this run's: init_args\.num_candidates 4 != 2",
        ),
        ("tokenizer_ckpt", None, r"holds no scorer \(only tokenizer\)"),
        ("nowhere/demo-scorer", None, r"nowhere/demo-scorer: no such file or folder"),
        (
            "export",
            "--model.init_args.metric=mse",
            r"learned 'lpips' labels, this run measures 'mse'",
        ),
    ],
    ids=["other-spec", "no-scorer", "missing", "other-metric"],
)
def test_init_weights_that_cannot_start_this_scorer_are_refused_in_one_line(
    workspace: Path,
    tokenizer_ckpt: Path,
    scorer_export: Path,
    source: str,
    flag: str | None,
    refusal: str,
) -> None:
    from modules.loading import CheckpointError

    path = {"export": scorer_export, "tokenizer_ckpt": tokenizer_ckpt}.get(source, source)
    flags = [f"--model.init_args.init_weights={path}", *([flag] if flag else [])]
    module = _tiny_scorer_cli(workspace, *flags).model
    with pytest.raises(
        CheckpointError, match=f"^model.init_args.init_weights: .*{refusal}"
    ) as error:
        module.setup("fit")
    assert "\n" not in str(error.value)
