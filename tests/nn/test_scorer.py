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


def test_context_lengths_hide_dropped_tail_tokens(scorer: BlockCausalScorer) -> None:
    latents, quantized = _inputs()
    context = torch.tensor([[3, 8, 8], [3, 8, 8]])
    base = scorer(latents, quantized, context)
    changed = latents.clone()
    changed[:, 3:8] += 5.0  # dropped tail of block 0
    after = scorer(changed, quantized, context)
    torch.testing.assert_close(after[:, 1:], base[:, 1:])  # later blocks never see the dropped tail
    assert not torch.allclose(after[:, 0], base[:, 0])  # block 0 sees all of its own tokens
    kept = latents.clone()
    kept[:, :3] += 5.0  # kept head of block 0 does matter downstream
    assert not torch.allclose(scorer(kept, quantized, context)[:, 1], base[:, 1])


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
