"""LARP's prior as the official code trains it: cosine logits, detached codebook, 2 rounds."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from adaptok.nn.prior import Prior

CODEBOOK, DIM, LENGTH = 32, 8, 12


def _prior(**overrides: object) -> Prior:
    torch.manual_seed(0)
    options = dict(code_dim=DIM, num_tokens=LENGTH, width=16, depth=1, heads=2)
    options.update(overrides)
    return Prior(**options).train()


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit code vectors of random codes, a keep mask with a dropped tail, a codebook param."""
    generator = torch.Generator().manual_seed(seed)
    codebook = torch.nn.Parameter(torch.randn(CODEBOOK, DIM, generator=generator))
    codes = torch.randint(0, CODEBOOK, (3, LENGTH), generator=generator)
    keep = torch.ones(3, LENGTH, dtype=torch.bool)
    keep[0, 8:] = False
    keep[1, 4:6] = False
    return codes, keep, codebook, generator


def _loss(
    prior: Prior, codes: torch.Tensor, keep: torch.Tensor, codebook: torch.Tensor
) -> torch.Tensor:
    unit = F.normalize(codebook, dim=-1)
    return prior(unit[codes], codes, keep, unit)


def test_codebook_gets_no_gradient_through_the_prior_logits() -> None:
    codes, keep, codebook, _ = _inputs()
    unit = F.normalize(codebook, dim=-1)
    # input vectors detached: the logits are the only path left to the codebook
    _prior()(unit[codes].detach(), codes, keep, unit).backward()
    assert codebook.grad is None or torch.count_nonzero(codebook.grad) == 0
    # the straight-through input vectors still carry the prior's gradient to the latents
    _loss(_prior(), codes, keep, codebook).backward()
    assert codebook.grad is not None and torch.count_nonzero(codebook.grad) > 0
    # the older variant (raw dot products, codebook attached) sent a gradient through logits
    codebook.grad = None
    unit = F.normalize(codebook, dim=-1)
    old = _prior(normalize_prediction=False, detach_codebook=False, rounds=1)
    old(unit[codes].detach(), codes, keep, unit).backward()
    assert codebook.grad.norm() > 0


def test_logits_are_cosines_at_temperature_one() -> None:
    codes, keep, codebook, _ = _inputs()
    prior = _prior(rounds=1)
    unit = F.normalize(codebook.detach(), dim=-1)
    mask = torch.ones(LENGTH, LENGTH).tril().bool()
    logits = prior._logits(unit[codes], torch.arange(LENGTH).expand(3, -1), mask, unit)
    assert logits.abs().max() <= 1.0 + 1e-5
    with torch.no_grad():
        reference = _loss(prior, codes, keep, codebook)
        prior.output_proj.weight.mul_(10.0)
        prior.output_proj.bias.mul_(10.0)
        scaled = _loss(prior, codes, keep, codebook)
    torch.testing.assert_close(scaled, reference)  # only the prediction's direction counts
    assert (
        _prior(rounds=1, temperature=0.5)
        ._logits(unit[codes], torch.arange(LENGTH).expand(3, -1), mask, unit)
        .abs()
        .max()
        > 1.0 + 1e-3
    )


def test_scheduled_sampling_ramps_to_half_over_the_first_30_percent() -> None:
    prior = _prior()
    ratios = []
    for progress in (0.0, 0.15, 0.3, 0.9):
        prior.progress = progress
        ratios.append(prior.mix_ratio())
    assert ratios == pytest.approx([0.0, 0.25, 0.5, 0.5])


def test_two_rounds_average_teacher_forced_and_mixed_losses() -> None:
    codes, keep, codebook, _ = _inputs()
    prior = _prior()
    single = _prior(rounds=1)
    with torch.no_grad():
        teacher_forced = _loss(single, codes, keep, codebook)
        prior.progress = 0.0  # nothing replaced: both rounds see the true codes
        torch.testing.assert_close(_loss(prior, codes, keep, codebook), teacher_forced)
        prior.progress = 1.0
        prior.mix_max_ratio = 1.0  # round 2 reads only sampled codes
        torch.manual_seed(1)
        mixed = _loss(prior, codes, keep, codebook)
    assert not torch.allclose(mixed, teacher_forced)
    prior.eval()  # evaluation: no sampling
    with torch.no_grad():
        torch.testing.assert_close(_loss(prior, codes, keep, codebook), teacher_forced)


def test_bad_options_are_refused() -> None:
    for options, message in (
        ({"rounds": 0}, "rounds"),
        ({"temperature": 0.0}, "temperature"),
        ({"mix_max_ratio": 1.5}, "mix_max_ratio"),
    ):
        with pytest.raises(ValueError, match=message):
            _prior(**options)
