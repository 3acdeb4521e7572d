"""The AR generator network and GeneratorModule: size, learning, budget control, CLI runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from adaptok.nn.generator import ARGenerator
from adaptok.nn.generator_sequence import build_sequence, collate_sequences
from adaptok.nn.sampling import sample

V, K, M = 16, 3, 5


def _train(model: ARGenerator, batch: dict, steps: int, lr: float = 3e-3) -> float:
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        logits = model(
            batch["tokens"],
            batch["block_index"],
            batch["block_position"],
            batch["label"],
            batch["budget_level"],
        )
        targets = batch["loss_mask"] & batch["padding_mask"]
        loss = torch.nn.functional.cross_entropy(logits[targets], batch["tokens"][targets])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def _tiny(num_classes: int, num_budgets: int = 1, prefix_blocks: int = 0) -> ARGenerator:
    torch.manual_seed(0)
    return ARGenerator(
        codebook_size=V,
        num_blocks=K,
        tokens_per_block=M,
        num_classes=num_classes,
        num_budgets=num_budgets,
        prefix_blocks=prefix_blocks,
        width=64,
        depth=2,
        heads=4,
        mlp_hidden=128,
        dropout=0.0,
        label_dropout=0.0,
    )


def test_paper_configuration_has_about_633m_parameters() -> None:
    with torch.device("meta"):
        model = ARGenerator(
            codebook_size=8192,
            num_blocks=4,
            tokens_per_block=512,
            num_classes=101,
            num_budgets=4,
        )
    count = model.parameter_count()
    assert 620e6 < count < 645e6, count
    assert model.max_stream_length == 4 * 513
    assert model.head.out_features == 8193 and model.token_embed.num_embeddings == 8194


def test_output_head_starts_at_zero_and_bad_inputs_raise() -> None:
    model = _tiny(num_classes=2)
    assert not model.head.weight.any()
    seq = collate_sequences(
        [
            build_sequence(
                torch.zeros(K, M, dtype=torch.long), torch.tensor([1, 2, 3]), codebook_size=V
            )
        ],
        pad_id=V,
    )
    args = (seq["tokens"], seq["block_index"], seq["block_position"])
    with pytest.raises(ValueError, match="labels"):
        model(*args, torch.tensor([3]), torch.tensor([0]))
    with pytest.raises(ValueError, match="budget"):
        model(*args, torch.tensor([0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="token ids"):
        model(seq["tokens"] + 100, *args[1:], torch.tensor([0]), torch.tensor([0]))


@pytest.mark.parametrize("frame_prediction", [False, True])
def test_overfit_model_reproduces_annotated_codes_and_lengths(frame_prediction: bool) -> None:
    g = torch.Generator().manual_seed(0)
    count = 4
    codes = torch.randint(0, V, (count, K, M), generator=g)
    lengths = torch.randint(1, M + 1, (count, K), generator=g)
    cond = torch.randint(0, V, (count, K, M), generator=g) if frame_prediction else None
    samples = []
    for i in range(count):
        prefix = cond[i, :2] if cond is not None else None
        seq = build_sequence(codes[i], lengths[i], prefix, codebook_size=V)
        seq["label"] = torch.tensor(0 if frame_prediction else i)
        seq["budget_level"] = torch.tensor(0)
        samples.append(seq)
    batch = collate_sequences(samples, pad_id=V)
    model = _tiny(num_classes=0 if frame_prediction else count, prefix_blocks=2 * frame_prediction)
    loss = _train(model, batch, steps=150)
    assert loss < 0.05, loss
    model.eval()
    out = sample(
        model,
        batch["label"],
        batch["budget_level"],
        condition_codes=cond,
        temperature=0.0,
    )
    expected_lengths = lengths.clone()
    keep = torch.arange(M)[None, None] < lengths[..., None]
    expected_codes = torch.where(keep, codes, torch.zeros_like(codes))
    if frame_prediction:  # block 0 is the condition's, at full length
        expected_lengths[:, 0] = M
        expected_codes[:, 0] = cond[:, 0]
    assert torch.equal(out.lengths, expected_lengths)
    assert torch.equal(out.codes, expected_codes)


def test_budget_conditioning_moves_the_mean_length() -> None:
    """Same clips annotated short at level 0 and long at level 1: sampling follows the level."""
    g = torch.Generator().manual_seed(1)
    samples = []
    for i in range(24):
        codes = torch.randint(0, V, (K, M), generator=g)
        for level, (low, high) in enumerate(((1, 2), (4, 5))):
            lengths = torch.randint(low, high + 1, (K,), generator=g)
            seq = build_sequence(codes, lengths, codebook_size=V)
            seq["label"] = torch.tensor(i % 2)
            seq["budget_level"] = torch.tensor(level)
            samples.append(seq)
    batch = collate_sequences(samples, pad_id=V)
    model = _tiny(num_classes=2, num_budgets=2)
    _train(model, batch, steps=120)
    model.eval()
    labels = torch.arange(32) % 2
    means = []
    for level in (0, 1):
        out = sample(
            model,
            labels,
            torch.full_like(labels, level),
            generator=torch.Generator().manual_seed(2),
        )
        means.append(out.lengths.float().mean().item())
    assert means[0] < 2.5 < 3.5 < means[1], means


# ---------------------------------------------------------------------------- CLI runs
def test_cli_fit_then_test_writes_a_generation_report(
    tmp_path: Path, tiny_tokenizer_ckpt: tuple[Path, str], annotation_shard_writer
) -> None:
    from adaptok.data.cli import main as shards
    from modules.cli import run_cli
    from tests.helpers import tiny_args, working_directory, write_overlay

    # real windows (16 frames, 32 px, labels 0..3) and annotations in the demo layout
    code = shards(
        [
            "synthetic",
            "--out",
            str(tmp_path / "data/demo/synthetic"),
            "--num-clips",
            "8",
            "--seed",
            "0",
            "--size",
            "32",
            "--num-frames",
            "16",
            "--val-fraction",
            "0.5",
            "--shard-samples",
            "4",
            "--quiet",
        ]
    )
    assert code in (0, None)
    rng = np.random.default_rng(0)
    n = 12
    lengths = np.stack([np.full((n, 4), 2), np.full((n, 4), 8)], 1)
    annotation_shard_writer(
        tmp_path / "data/demo/tokens/train-000000.tar",
        rng.integers(0, 64, (n, 4, 8)),
        lengths,
        labels=[i % 4 for i in range(n)],
        budgets=[0.25, 0.5, 0.75, 1.0][:2],
        tokenizer_sha256=tiny_tokenizer_ckpt[1],  # annotated with the generator's tokenizer
    )
    # the tiny overlays, with the 16-frame random tokenizer checkpoint of the fixtures (the
    # one the shards record) and 2 budgets;
    # the GenerationEvaluator is the last callback (the earlier ones are named to keep them)
    kept = [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint"},
        {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor"},
    ]
    evaluator = {"class_path": "callbacks.GenerationEvaluator"}
    two_levels = {**evaluator, "init_args": {"budget_levels": [0, 1]}}
    six_clips = {**evaluator, "init_args": {"budget_levels": [0, 1], "num_samples": 6}}
    fit = [
        "fit",
        *tiny_args("demo/generator.yaml"),
        *write_overlay(tmp_path / "fit.yaml", {"trainer": {"callbacks": [*kept, two_levels]}}),
        f"--model.init_args.tokenizer_ckpt={tiny_tokenizer_ckpt[0]}",
        "--model.init_args.budgets=[0.25, 0.5]",
        "--model.init_args.generator.init_args.num_budgets=2",
    ]
    evaluate = [
        "test",
        *tiny_args("demo/eval_gen.yaml"),
        *write_overlay(tmp_path / "eval.yaml", {"trainer": {"callbacks": [six_clips]}}),
    ]
    with working_directory(tmp_path):
        run_cli(fit)
        ckpt = tmp_path / "runs/demo/generator/checkpoints/last.ckpt"
        assert ckpt.is_file()
        hparams = torch.load(ckpt, map_location="cpu", weights_only=False)["hyper_parameters"]
        assert hparams["tokenizer_spec"]["init_args"]["tokens_per_block"] == 8
        # geometry from the tokenizer, candidates from the shards: none of it in the YAML
        assert hparams["candidate_lengths"] == [2, 4, 6, 8]
        assert "tokens_per_block" not in hparams["generator"]["init_args"]
        resolved = hparams["generator_spec"]["init_args"]
        assert [resolved[k] for k in ("codebook_size", "num_blocks", "tokens_per_block")] == [
            64,
            4,
            8,
        ]
        run_cli(evaluate)
    reports = sorted((tmp_path / "runs/demo/eval_gen").rglob("generation_report.md"))
    assert reports, sorted(str(p) for p in (tmp_path / "runs").rglob("*"))
    text = reports[-1].read_text()
    table = (reports[-1].parent / "generation_report.csv").read_text().splitlines()
    assert len(table) == 3 and "tokens_mean" in table[0]
    assert "Produced tokens per clip" in text
    rows = [dict(zip(table[0].split(","), line.split(","), strict=True)) for line in table[1:]]
    assert all(int(r["clips"]) == 6 for r in rows)
    assert float(rows[0]["tokens_asked"]) == 8.0 and float(rows[1]["tokens_asked"]) == 16.0
    kept = " / ".join(
        f"{float(r['tokens_mean']) / float(r['tokens_asked']):.0%}" for r in rows
    )  # free lengths (the demo's rule): how far the samples follow the budget is said
    assert f"the samples kept {kept} of the tokens asked" in " ".join(text.split()), text
    assert json.dumps(rows)
