"""Sampling rules of the AR generator on tiny random networks (float64, CPU)."""

from __future__ import annotations

import pytest
import torch

from adaptok.nn.generator import ARGenerator
from adaptok.nn.generator_sequence import build_sequence, collate_sequences
from adaptok.nn.sampling import allowed_length_table, reachable_totals, sample

V, K, M = 12, 3, 6
CANDIDATES = [2, 4, 6]


def _model(
    prefix_blocks: int = 0, num_classes: int = 3, seed: int = 0, eob_bias: float = 2.0
) -> ARGenerator:
    torch.manual_seed(seed)
    model = ARGenerator(
        codebook_size=V,
        num_blocks=K,
        tokens_per_block=M,
        num_classes=num_classes,
        num_budgets=2,
        prefix_blocks=prefix_blocks,
        width=32,
        depth=2,
        heads=4,
        mlp_hidden=64,
        dropout=0.0,
    ).double()
    # the zero-initialised head makes every logit 0: give it weights so choices depend on input
    torch.nn.init.normal_(model.head.weight, std=0.5)
    _set_eob_bias(model, eob_bias)
    return model.eval()


def _set_eob_bias(model: ARGenerator, value: float) -> None:
    """Adds `value` to the <EOB> logit (a forward hook on the head), so blocks end early."""
    model.head._forward_hooks.clear()

    def hook(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        bias = torch.zeros_like(output)
        bias[..., V] = value
        return output + bias

    model.head.register_forward_hook(hook)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _labels(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.arange(batch) % 3, torch.arange(batch) % 2


def test_cached_forward_equals_full_forward() -> None:
    model = _model()
    seqs = [
        build_sequence(torch.randint(0, V, (K, M)), torch.tensor([2, 6, 3]), codebook_size=V)
        for _ in range(2)
    ]
    batch = collate_sequences(seqs, pad_id=V)
    label, budget = _labels(2)
    args = (batch["tokens"], batch["block_index"], batch["block_position"], label, budget)
    full = model(*args)
    cache = model.new_cache()
    prefix = 4
    head = model(*(a[:, :prefix] if a.dim() == 2 else a for a in args), cache=cache)
    assert torch.allclose(head, full[:, :prefix], atol=1e-12)
    for j in range(prefix, batch["tokens"].shape[1]):
        step = model.step(
            batch["tokens"][:, j - 1],
            batch["block_index"][:, j],
            batch["block_position"][:, j],
            cache,
        )
        assert torch.allclose(step, full[:, j], atol=1e-10)


@pytest.mark.parametrize("prefix_blocks", [0, 2])
def test_kv_cache_sampling_equals_uncached(prefix_blocks: int) -> None:
    model = _model(prefix_blocks, num_classes=3 if prefix_blocks == 0 else 0)
    batch = 5
    label, budget = _labels(batch)
    cond = None
    if prefix_blocks:
        label = torch.zeros(batch, dtype=torch.long)
        cond = torch.randint(0, V, (batch, K, M), generator=_gen(7))
    kwargs = dict(condition_codes=cond, candidate_lengths=CANDIDATES, temperature=1.0)
    cached = sample(model, label, budget, use_cache=True, generator=_gen(1), **kwargs)
    full = sample(model, label, budget, use_cache=False, generator=_gen(1), **kwargs)
    assert torch.equal(cached.lengths, full.lengths)
    assert torch.equal(cached.codes, full.codes)
    # the lengths vary, so clips finish at different steps and leave the batch
    assert cached.lengths.sum(1).unique().numel() > 1
    assert cached.row_steps < batch * cached.steps


def test_cfg_scale_one_equals_conditional_sampling() -> None:
    model = _model()
    label, budget = _labels(6)
    plain = sample(model, label, budget, generator=_gen(3), top_k=8, top_p=0.9)
    guided = sample(model, label, budget, generator=_gen(3), top_k=8, top_p=0.9, cfg_scale=1.0)
    assert torch.equal(plain.codes, guided.codes) and torch.equal(plain.lengths, guided.lengths)
    assert guided.row_steps == 2 * plain.row_steps
    other = sample(model, label, budget, generator=_gen(3), top_k=8, top_p=0.9, cfg_scale=4.0)
    assert not torch.equal(plain.codes, other.codes)


def test_eob_rules_no_empty_blocks_and_forced_at_maximum() -> None:
    model = _model()
    label, budget = _labels(16)
    # EOB almost certain: without the ban every block would close at once (the reference's
    # empty blocks); with it every block stops at the smallest candidate
    _set_eob_bias(model, 50.0)
    out = sample(model, label, budget, candidate_lengths=CANDIDATES, generator=_gen(0))
    assert (out.lengths == CANDIDATES[0]).all(), out.lengths
    # EOB almost impossible: it is forced at the block maximum
    _set_eob_bias(model, -50.0)
    out = sample(model, label, budget, candidate_lengths=CANDIDATES, generator=_gen(0))
    assert (out.lengths == M).all(), out.lengths
    grid = sample(model, label, budget, candidate_lengths=[2, 4], grid=True, generator=_gen(0))
    assert (grid.lengths == 4).all(), grid.lengths


def test_free_lengths_respect_minimum_and_grid_mode_lands_on_candidates() -> None:
    model = _model()
    label, budget = _labels(32)
    free = sample(model, label, budget, candidate_lengths=[3, 6], generator=_gen(4))
    assert free.lengths.min() >= 3 and free.lengths.max() <= M
    assert set(free.lengths.unique().tolist()) - {3, 6}, "free mode should produce off-grid lengths"
    grid = sample(model, label, budget, candidate_lengths=[3, 6], grid=True, generator=_gen(4))
    assert set(grid.lengths.unique().tolist()) <= {3, 6}
    # codes after each length are zero, codes before it lie in the codebook
    keep = torch.arange(M)[None, None] < grid.lengths[..., None]
    assert (grid.codes[~keep] == 0).all() and (grid.codes[keep] < V).all()


@pytest.mark.parametrize("grid", [False, True])
def test_exact_budget_hits_every_clip(grid: bool) -> None:
    model = _model()
    batch = 12
    label, budget = _labels(batch)
    allowed = allowed_length_table(M, 2, CANDIDATES if grid else None)
    reachable = reachable_totals(allowed, K)[K].nonzero().flatten()
    totals = reachable[torch.randint(0, reachable.numel(), (batch,), generator=_gen(5))]
    out = sample(
        model,
        label,
        budget,
        candidate_lengths=CANDIDATES,
        grid=grid,
        total_tokens=totals,
        generator=_gen(6),
    )
    assert torch.equal(out.total_tokens, totals)
    assert out.lengths.min() >= 2
    if grid:
        assert set(out.lengths.unique().tolist()) <= set(CANDIDATES)
    at_most = sample(
        model,
        label,
        budget,
        candidate_lengths=CANDIDATES,
        total_tokens=totals,
        budget_rule="at_most",
        generator=_gen(6),
    )
    assert (at_most.total_tokens <= totals).all()
    with pytest.raises(ValueError, match="cannot be reached"):
        sample(
            model,
            label[:1],
            budget[:1],
            candidate_lengths=CANDIDATES,
            grid=True,
            total_tokens=torch.tensor([7]),
        )


def test_frame_prediction_copies_block_zero_and_never_predicts_sep() -> None:
    model = _model(prefix_blocks=2, num_classes=0)
    assert model.head.out_features == V + 1  # <SEP> = V + 1 has no output row
    batch = 4
    cond = torch.randint(0, V, (batch, K, M), generator=_gen(8))
    label = torch.zeros(batch, dtype=torch.long)
    out = sample(
        model, label, torch.zeros(batch, dtype=torch.long), condition_codes=cond, generator=_gen(9)
    )
    assert torch.equal(out.codes[:, 0], cond[:, 0])
    assert (out.lengths[:, 0] == M).all()
    assert (out.codes < V).all() and (out.lengths[:, 1:] >= 1).all()
    with pytest.raises(ValueError, match="condition_codes"):
        sample(model, label, label)
    with pytest.raises(ValueError, match="guidance"):
        sample(model, label, label, condition_codes=cond, cfg_scale=1.5)


def test_sampling_under_bf16_autocast_caches_bf16_keys() -> None:
    model = _model().float()
    label, budget = _labels(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sample(model, label, budget, candidate_lengths=CANDIDATES, generator=_gen(0))
        cache = model.new_cache()
        seq = collate_sequences(
            [
                build_sequence(
                    torch.zeros(K, M, dtype=torch.long), torch.full((K,), 2), codebook_size=V
                )
            ],
            pad_id=V,
        )
        model(
            seq["tokens"], seq["block_index"], seq["block_position"], label[:1], budget[:1], cache
        )
    assert cache.keys[0].dtype == torch.bfloat16
    assert out.lengths.min() >= 2 and out.lengths.max() <= M
    assert (out.codes < V).all()
