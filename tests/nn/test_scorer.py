"""BlockCausalScorer: shapes, block causality and context masking."""

from __future__ import annotations

import pytest
import torch

from adaptok.nn.scorer import BlockCausalScorer


@pytest.fixture()
def scorer() -> BlockCausalScorer:
    torch.manual_seed(0)
    return BlockCausalScorer(
        token_width=8,
        num_blocks=3,
        tokens_per_block=8,
        num_candidates=4,
        width=16,
        depth=2,
        heads=2,
    ).eval()


def _inputs(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(batch, 24, 8, generator=generator), torch.randn(
        batch, 24, 8, generator=generator
    )


def test_one_pass_scores_every_block_and_candidate(scorer: BlockCausalScorer) -> None:
    latents, quantized = _inputs()
    assert scorer(latents, quantized).shape == (2, 3, 4)
    assert scorer.candidate_lengths == [2, 4, 6, 8]


def test_later_blocks_do_not_change_earlier_scores(scorer: BlockCausalScorer) -> None:
    latents, quantized = _inputs()
    base = scorer(latents, quantized)
    changed = latents.clone()
    changed[:, 16:] += 5.0  # block 2
    after = scorer(changed, quantized)
    torch.testing.assert_close(after[:, :2], base[:, :2])
    assert not torch.allclose(after[:, 2], base[:, 2])


def _nontrivial(scorer: BlockCausalScorer, std: float = 0.3) -> BlockCausalScorer:
    """Weights of std 0.3: at the 0.02 initialisation leaks are too small to see (5.7e-6)."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in scorer.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    return scorer


def _reference_scores(
    scorer: BlockCausalScorer, latents: torch.Tensor, quantized: torch.Tensor, context: torch.Tensor
) -> torch.Tensor:
    """The official procedure with the dropped tokens physically removed, one clip and block
    at a time: the sequence is the kept prefix of every block < b, then all of block b."""
    k, m = scorer.num_blocks, scorer.tokens_per_block
    tokens = scorer.input_proj(torch.cat([latents, quantized], dim=-1)) + scorer.pos_embed
    scores = torch.zeros(latents.shape[0], k, scorer.num_candidates)
    for clip in range(latents.shape[0]):
        for block in range(k):
            kept = [j * m + t for j in range(block) for t in range(int(context[clip, j]))]
            kept += [block * m + t for t in range(m)]
            owner = torch.tensor(kept) // m
            mask = owner[:, None] >= owner[None, :]  # block-causal among the kept tokens
            hidden = scorer.transformer(tokens[clip, kept][None], mask)[0, -m:]
            scores[clip, block] = scorer.head(hidden[scorer.readout_slots]).squeeze(-1)
    return scores


@pytest.mark.parametrize("attention", ["blockwise", "dense"])
def test_context_lengths_hide_dropped_tail_tokens(
    scorer: BlockCausalScorer, attention: str
) -> None:
    """A dropped tail reaches no later block, exactly, with non-trivial weights (an earlier
    version let kept tokens of block 0 attend to its tail, which moved later scores by ~0.1)."""
    scorer = _nontrivial(scorer)
    scorer.attention = attention
    latents, quantized = _inputs()
    context = torch.tensor([[3, 8, 8], [3, 5, 8]])
    with torch.no_grad():
        base = scorer(latents, quantized, context)
        changed, changed_q = latents.clone(), quantized.clone()
        changed[:, 3:8] += 5.0  # dropped tail of block 0
        changed_q[:, 3:8] -= 5.0
        changed[1, 13:16] += 5.0  # dropped tail of clip 1's block 1
        after = scorer(changed, changed_q, context)
        assert torch.equal(after[0, 1:], base[0, 1:])
        assert torch.equal(after[:, 2], base[:, 2])  # later blocks never see a dropped tail
        assert (after[:, 0] - base[:, 0]).abs().max() > 1e-2  # a block sees all its tokens
        assert (after[1, 1] - base[1, 1]).abs().max() > 1e-2
        kept = latents.clone()
        kept[:, :3] += 5.0  # the kept head of block 0 does matter downstream
        moved = scorer(kept, quantized, context)
        assert (moved[:, 1:] - base[:, 1:]).abs().min() > 0


@pytest.mark.parametrize("attention", ["blockwise", "dense"])
def test_scores_equal_the_official_procedure_with_tokens_removed(
    scorer: BlockCausalScorer, attention: str
) -> None:
    """One pass gives, for every block, the official pass for that block: earlier blocks cut
    to their context, dropped tokens removed from the sequence (not merely masked)."""
    scorer = _nontrivial(scorer)
    scorer.attention = attention
    latents, quantized = _inputs(3)
    context = torch.tensor([[3, 8, 1], [8, 2, 8], [0, 6, 4]])
    with torch.no_grad():
        expected = _reference_scores(scorer, latents, quantized, context)
        got = scorer(latents, quantized, context)
        shared = scorer(latents, quantized, context[:1].expand(3, -1).contiguous())
        expected_shared = _reference_scores(scorer, latents, quantized, context[:1].expand(3, -1))
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=0)  # old code: 1.7e-3
    torch.testing.assert_close(shared, expected_shared, atol=2e-6, rtol=0)
    assert expected.abs().mean() > 0.1  # scores of a non-trivial size: the check has teeth


def test_wrong_shapes_are_refused(scorer: BlockCausalScorer) -> None:
    latents, quantized = _inputs()
    with pytest.raises(ValueError, match="expected latents and quantized"):
        scorer(latents[:, :16], quantized[:, :16])
    with pytest.raises(ValueError, match="must divide"):
        BlockCausalScorer(token_width=8, tokens_per_block=10, num_candidates=4)


@pytest.mark.parametrize(
    "context",
    [None, torch.tensor([[3, 8, 8], [3, 8, 8]]), torch.tensor([[1, 0, 8], [8, 5, 2]])],
    ids=["all", "shared", "per-sample"],
)
def test_blockwise_equals_dense(scorer: BlockCausalScorer, context: torch.Tensor | None) -> None:
    scorer = _nontrivial(scorer, std=0.1)
    latents, quantized = _inputs()
    scores = {}
    for attention in ("dense", "blockwise"):
        scorer.attention = attention
        scores[attention] = scorer(latents, quantized, context)
    scorer.attention = "blockwise"
    torch.testing.assert_close(scores["blockwise"], scores["dense"], atol=1e-5, rtol=0)


def test_blockwise_gradients_equal_dense(scorer: BlockCausalScorer) -> None:
    latents, quantized = _inputs()
    context = torch.tensor([[2, 8, 4], [8, 1, 8]])
    grads = {}
    for attention in ("dense", "blockwise"):
        scorer.zero_grad(set_to_none=True)
        scorer.attention = attention
        scorer(latents, quantized, context).square().sum().backward()
        grads[attention] = {n: p.grad.clone() for n, p in scorer.named_parameters()}
    scorer.attention = "blockwise"
    for name, grad in grads["dense"].items():
        torch.testing.assert_close(grads["blockwise"][name], grad, atol=1e-5, rtol=0, msg=name)


def test_bf16_scores_stay_close(scorer: BlockCausalScorer) -> None:
    """bf16 autocast: float32 scores within 0.05 of fp32 (scores are O(1) here)."""
    latents, quantized = _inputs()
    reference = scorer(latents, quantized)
    scorer.precision = "bf16"
    try:
        low = scorer(latents, quantized)
    finally:
        scorer.precision = "fp32"
    assert low.dtype == torch.float32
    assert (low - reference).abs().max() < 0.05 and not torch.equal(low, reference)


def test_bad_context_lengths_are_refused(scorer: BlockCausalScorer) -> None:
    latents, quantized = _inputs()
    with pytest.raises(ValueError, match="context_lengths must lie"):
        scorer(latents, quantized, torch.tensor([[9, 8, 8], [8, 8, 8]]))
    with pytest.raises(ValueError, match="integer context_lengths"):
        scorer(latents, quantized, torch.ones(2, 2, dtype=torch.long))
