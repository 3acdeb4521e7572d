"""Block-causal masks, key padding, keep masks and the tail-drop sampler."""

from __future__ import annotations

import pytest
import torch

from adaptok.nn.masks import (
    causal_mask,
    decoder_key_keep,
    decoder_mask,
    encoder_mask,
    with_key_padding,
)
from adaptok.nn.tail_drop import TailDropSampler, keep_mask

CPU = torch.device("cpu")
K, P, M = 3, 2, 4


def _encoder_token(index: int) -> tuple[int, str]:
    """(block, kind) of a token of the interleaved encoder layout."""
    block, offset = divmod(index, P + M)
    return block, "patch" if offset < P else "latent"


def _decoder_token(index: int) -> tuple[int, str]:
    """(block, kind) of a token of the latents-first decoder layout."""
    if index < K * M:
        return index // M, "latent"
    return (index - K * M) // P, "patch"


def test_encoder_mask_matches_definition() -> None:
    mask = encoder_mask(K, P, M, CPU)
    assert mask.shape == (K * (P + M), K * (P + M)) and mask.dtype == torch.bool
    for q in range(mask.shape[0]):
        for k in range(mask.shape[1]):
            assert bool(mask[q, k]) == (_encoder_token(k)[0] <= _encoder_token(q)[0])


def test_decoder_mask_matches_definition() -> None:
    mask = decoder_mask(K, P, M, CPU)
    assert mask.shape == (K * (M + P), K * (M + P))
    for q in range(mask.shape[0]):
        q_block, q_kind = _decoder_token(q)
        for k in range(mask.shape[1]):
            k_block, k_kind = _decoder_token(k)
            if k_kind == "latent":
                expected = k_block <= q_block
            else:
                expected = q_kind == "patch" and k_block == q_block
            assert bool(mask[q, k]) == expected, (q, k)


def test_static_masks_are_cached() -> None:
    assert encoder_mask(K, P, M, CPU) is encoder_mask(K, P, M, CPU)
    assert decoder_mask(K, P, M, CPU) is decoder_mask(K, P, M, CPU)
    assert causal_mask(5, CPU) is causal_mask(5, CPU)


def test_key_padding_removes_dropped_latents_only() -> None:
    lengths = torch.tensor([[1, 4, 2], [4, 4, 4]])
    keep = keep_mask(lengths, M)
    mask = with_key_padding(decoder_mask(K, P, M, CPU), decoder_key_keep(keep, K * P))
    assert mask.shape == (2, 1, K * (M + P), K * (M + P))
    static = decoder_mask(K, P, M, CPU)
    assert torch.equal(mask[1, 0], static)
    dropped = (~keep[0]).nonzero().flatten()
    assert not mask[0, 0][:, dropped].any()
    kept_keys = torch.cat([keep[0], torch.ones(K * P, dtype=torch.bool)])
    assert torch.equal(mask[0, 0][:, kept_keys], static[:, kept_keys])
    # Every query row still sees at least one key (no NaN from an all-masked row).
    assert mask.any(dim=-1).all()


def test_keep_mask() -> None:
    keep = keep_mask(torch.tensor([[1, 3]]), 3)
    assert keep.tolist() == [[True, False, False, True, True, True]]


@pytest.mark.parametrize("distribution", ["truncnorm", "uniform", "fixed"])
def test_tail_drop_sampler_range_and_reproducibility(distribution: str) -> None:
    sampler = TailDropSampler(distribution, mean=256, std=128, min_tokens=32, max_tokens=512)
    draw = sampler.sample(4000, 4, generator=torch.Generator().manual_seed(0))
    again = sampler.sample(4000, 4, generator=torch.Generator().manual_seed(0))
    assert draw.shape == (4000, 4) and draw.dtype == torch.long
    assert torch.equal(draw, again)
    assert draw.min() >= 32 and draw.max() <= 512
    if distribution == "fixed":
        assert (draw == 512).all()
    else:
        assert len(draw.unique()) > 300


def test_truncnorm_statistics() -> None:
    draw = TailDropSampler(min_tokens=32, max_tokens=512).sample(
        20000, 4, generator=torch.Generator().manual_seed(1)
    )
    # Normal(256, 128) truncated to [32, 512]: mean about 263, std about 111.
    assert abs(draw.float().mean().item() - 263) < 4
    assert abs(draw.float().std().item() - 111) < 4


def test_tail_drop_sampler_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="distribution"):
        TailDropSampler("beta")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_tokens"):
        TailDropSampler(min_tokens=0)
    with pytest.raises(ValueError, match="fixed"):
        TailDropSampler("fixed", min_tokens=1, max_tokens=16, fixed=17)


def test_tail_drop_max_tokens_defaults_to_the_tokenizers_tokens_per_block() -> None:
    """max_tokens None is M, filled in by resolve (TokenizerModule calls it); a larger one is
    refused with both values."""
    sampler = TailDropSampler("uniform", min_tokens=1)
    with pytest.raises(RuntimeError, match=r"call resolve\(tokens_per_block\)"):
        sampler.sample(2, 4)
    assert sampler.resolve(8) is sampler and (sampler.max_tokens, sampler.fixed) == (8, 8)
    assert int(sampler.sample(500, 4, generator=torch.Generator().manual_seed(0)).max()) == 8
    assert sampler.resolve(16).max_tokens == 16  # another tokenizer: from the given settings
    given = TailDropSampler(min_tokens=1, max_tokens=6)
    assert given.resolve(8).max_tokens == 6
    with pytest.raises(ValueError, match=r"max_tokens=6 exceeds the tokenizer's .* M=4"):
        given.resolve(4)
    with pytest.raises(ValueError, match=r"min_tokens=32 exceeds the tokenizer's .* M=8"):
        TailDropSampler().resolve(8)
    with pytest.raises(ValueError, match="fixed must lie in"):
        TailDropSampler("fixed", min_tokens=1, fixed=12).resolve(8)
