"""Stochastic VQ: eval argmax, train sampling, straight-through, losses over kept tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from adaptok.nn.quantizer import StochasticQuantizer


def _quantizer(temperature: float = 0.03) -> StochasticQuantizer:
    torch.manual_seed(0)
    return StochasticQuantizer(width=24, codebook_size=32, code_dim=8, temperature=temperature)


def test_eval_is_deterministic_argmax() -> None:
    quantizer = _quantizer().eval()
    features = torch.randn(2, 10, 24)
    first, second = quantizer(features), quantizer(features)
    assert first.codes.dtype == torch.long and first.codes.shape == (2, 10)
    assert torch.equal(first.codes, second.codes)
    z = F.normalize(quantizer.pre_proj(features), dim=-1)
    cosines = z @ F.normalize(quantizer.codebook, dim=-1).t()
    assert torch.equal(first.codes, cosines.argmax(-1))
    assert torch.allclose(first.quantized, quantizer.embed_codes(first.codes), atol=1e-6)
    assert torch.allclose(first.code_vectors.norm(dim=-1), torch.ones(2, 10), atol=1e-5)


def test_train_samples_from_softmax() -> None:
    quantizer = _quantizer(temperature=1.0).train()
    features = torch.randn(1, 1, 24).expand(1, 4000, 24)
    torch.manual_seed(1)
    codes = quantizer(features).codes.flatten()
    assert len(codes.unique()) > 5
    z = F.normalize(quantizer.pre_proj(features[0, :1]), dim=-1)
    cosines = z @ F.normalize(quantizer.codebook, dim=-1).t()
    probs = (cosines / quantizer.temperature).softmax(-1).flatten()
    frequencies = torch.bincount(codes, minlength=32).float() / codes.numel()
    assert (frequencies - probs).abs().max() < 0.03


def test_straight_through_gradients() -> None:
    quantizer = _quantizer().train()
    features = torch.randn(2, 6, 24, requires_grad=True)
    out = quantizer(features)
    (out.quantized.sum() + out.codebook_loss).backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
    assert quantizer.codebook.grad is not None and quantizer.codebook.grad.abs().sum() > 0


def test_losses_cover_kept_tokens_only() -> None:
    quantizer = _quantizer().eval()
    features = torch.randn(2, 6, 24)
    keep = torch.tensor([[True] * 3 + [False] * 3, [True] * 6])
    changed = features.clone()
    changed[0, 3:] = 100 * torch.randn(3, 24)
    a, b = quantizer(features, keep), quantizer(changed, keep)
    assert torch.allclose(a.commit_loss, b.commit_loss)
    assert torch.allclose(a.codebook_loss, b.codebook_loss)
    full = quantizer(features[1:])
    only_second = quantizer(features, torch.tensor([[False] * 6, [True] * 6]))
    assert torch.allclose(full.commit_loss, only_second.commit_loss)
    assert torch.allclose(a.commit_loss, a.codebook_loss)
