"""AdapTokTokenizer: shapes, block causality, streaming, absolute positions, training."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from adaptok.nn import AdapTokTokenizer, Discriminator, TailDropSampler

M = 16  # tokens per block
FPB = 4  # frames per block


def _tokenizer(**overrides: object) -> AdapTokTokenizer:
    """Tiny 3-block tokenizer: 12 frames x 32 x 32, patch 2x8x8, width 32, depth 2."""
    config = dict(
        num_frames=12,
        image_size=32,
        patch_size=(2, 8, 8),
        frames_per_block=FPB,
        tokens_per_block=M,
        width=32,
        depth=2,
        heads=4,
        codebook_size=64,
        code_dim=8,
    )
    config.update(overrides)
    torch.manual_seed(0)
    return AdapTokTokenizer(**config)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tokenizer() -> AdapTokTokenizer:
    """Eval-mode tokenizer with a random (not zero) output layer, so decodes vary."""
    model = _tokenizer()
    torch.nn.init.normal_(model.output.weight, std=0.5)
    return model.eval()


def _video(seed: int = 0, batch: int = 2, frames: int = 12) -> Tensor:
    return torch.rand(batch, 3, frames, 32, 32, generator=torch.Generator().manual_seed(seed))


def _block(video: Tensor, block: int) -> Tensor:
    return video[:, :, block * FPB : (block + 1) * FPB]


def test_shapes_and_properties() -> None:
    model = _tokenizer(prior_depth=1, prior_width=16, prior_heads=2).train()
    assert (model.num_blocks, model.tokens_per_block, model.num_tokens) == (3, M, 3 * M)
    video = _video()
    lengths = TailDropSampler("uniform", min_tokens=1, max_tokens=M).sample(2, 3)
    out = model(video, lengths)
    assert out.recon.shape == video.shape
    # Zero-initialised output layer: the first reconstruction is mid-grey.
    assert torch.allclose(out.recon, torch.full_like(video, 0.5))
    assert out.codes.shape == (2, 3 * M) and out.codes.dtype == torch.long
    assert out.latents.shape == out.quantized.shape == (2, 3 * M, 32)
    assert out.keep.sum(1).tolist() == lengths.sum(1).tolist()
    assert out.prior_loss is not None
    for loss in (out.vq_loss, out.commit_loss, out.codebook_loss, out.prior_loss):
        assert loss.dim() == 0 and torch.isfinite(loss)
    assert model.parameter_count() > model.parameter_count(include_prior=False)


def test_paper_config_parameter_count() -> None:
    with torch.device("meta"):
        model = AdapTokTokenizer(prior_depth=12)
        discriminator = Discriminator()
    assert abs(model.parameter_count(include_prior=False) / 1e6 - 173) < 1.5
    assert abs(model.parameter_count() / 1e6 - 195) < 1.5
    assert discriminator.patch_embed.out_channels == 512


def test_encoder_is_block_causal(tokenizer: AdapTokTokenizer) -> None:
    video = _video()
    changed = video.clone()
    changed[:, :, 2 * FPB :] = torch.rand_like(changed[:, :, 2 * FPB :])
    with torch.no_grad():
        a, b = tokenizer.encode(video), tokenizer.encode(changed)
    past = slice(0, 2 * M)
    assert torch.equal(a.codes[:, past], b.codes[:, past])
    assert torch.allclose(a.latents[:, past], b.latents[:, past], atol=1e-6)
    assert not torch.allclose(a.latents[:, 2 * M :], b.latents[:, 2 * M :])


def test_prefix_encode_matches_full_encode(tokenizer: AdapTokTokenizer) -> None:
    video = _video()
    with torch.no_grad():
        full, prefix = tokenizer.encode(video), tokenizer.encode(video[:, :, : 2 * FPB])
    assert torch.equal(prefix.codes, full.codes[:, : 2 * M])


def test_streaming_encode_equals_full_encode(tokenizer: AdapTokTokenizer) -> None:
    video = _video(seed=3)
    with torch.no_grad():
        full = tokenizer.encode(video)
    parts = list(tokenizer.encode_stream(_block(video, b) for b in range(3)))
    assert [p.codes.shape for p in parts] == [(2, M)] * 3
    assert torch.equal(torch.cat([p.codes for p in parts], 1), full.codes)
    streamed = torch.cat([p.latents for p in parts], 1)
    assert torch.allclose(streamed, full.latents, atol=1e-5)
    stream = tokenizer.stream_encoder()
    for b in range(3):
        stream.push(_block(video, b))
    with pytest.raises(ValueError, match="at most 3 blocks"):
        stream.push(_block(video, 0))
    with pytest.raises(ValueError, match="one block"):
        tokenizer.stream_encoder().push(video[:, :, : 2 * FPB])


def test_decoder_is_block_causal(tokenizer: AdapTokTokenizer) -> None:
    with torch.no_grad():
        codes = tokenizer.encode(_video()).codes
        lengths = torch.tensor([[5, 9, 16], [16, 3, 7]])
        base = tokenizer.decode(codes, lengths)
        later = codes.clone()
        later[:, 2 * M :] = torch.randint(0, 64, (2, M))
        other_lengths = lengths.clone()
        other_lengths[:, 2] = torch.tensor([1, 16])
        changed = tokenizer.decode(later, other_lengths)
        earlier = codes.clone()
        earlier[:, :4] = (earlier[:, :4] + 1) % 64
        changed_past = tokenizer.decode(earlier, lengths)
    past = slice(0, 2 * FPB)
    assert torch.allclose(base[:, :, past], changed[:, :, past], atol=1e-6)
    assert not torch.allclose(base[:, :, 2 * FPB :], changed[:, :, 2 * FPB :])
    # Block 1 reads block 0's tokens.
    assert not torch.allclose(base[:, :, FPB : 2 * FPB], changed_past[:, :, FPB : 2 * FPB])


def test_prefix_decode_matches_full_decode(tokenizer: AdapTokTokenizer) -> None:
    codes = torch.randint(0, 64, (2, 3 * M), generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([[5, 9, 16], [16, 3, 7]])
    with torch.no_grad():
        full = tokenizer.decode(codes, lengths)
        prefix = tokenizer.decode(codes[:, : 2 * M], lengths[:, :2])
    assert prefix.shape[2] == 2 * FPB
    assert torch.allclose(prefix, full[:, :, : 2 * FPB], atol=1e-5)


def test_dropped_tokens_are_ignored(tokenizer: AdapTokTokenizer) -> None:
    codes = torch.randint(0, 64, (2, 3 * M), generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([[2, 16, 4], [7, 1, 16]])
    keep = torch.arange(M).repeat(3)[None] < lengths.repeat_interleave(M, dim=1)
    with torch.no_grad():
        a = tokenizer.decode(codes, lengths)
        b = tokenizer.decode(codes.masked_fill(~keep, -1), lengths)
        garbage = tokenizer.quantizer.embed_codes(codes).masked_fill(~keep[..., None], 1e4)
        c = tokenizer.decode_quantized(garbage, lengths)
    assert torch.equal(a, b)
    assert torch.allclose(a, c, atol=1e-5)


@pytest.mark.parametrize("attention", ["dense", "blockwise"])
def test_kept_tokens_keep_absolute_positions(tokenizer: AdapTokTokenizer, attention: str) -> None:
    """Block 1's tokens enter the decoder with the embedding of indices M..2M-1 whatever
    block 0 keeps (no re-packing of positions after a drop). The dense path keeps them at
    sequence positions M..2M-1; the blockwise path packs them right after block 0's kept
    tokens."""
    captured: list[Tensor] = []
    hook = tokenizer.decoder.register_forward_pre_hook(lambda _, args: captured.append(args[0]))
    codes = torch.randint(0, 64, (1, 3 * M), generator=torch.Generator().manual_seed(2))
    firsts = (1, 6, 16)
    tokenizer.attention = attention
    try:
        with torch.no_grad():
            for first in firsts:
                tokenizer.decode(codes, torch.tensor([[first, 16, 16]]))
    finally:
        hook.remove()
        tokenizer.attention = "blockwise"
    block1 = slice(M, 2 * M)
    expected = tokenizer.quantizer.embed_codes(codes)[:, block1] + tokenizer.latent_pos[block1]
    for first, tokens in zip(firsts, captured, strict=True):
        start = M if attention == "dense" else first
        assert torch.allclose(tokens[:, start : start + M], expected, atol=1e-6)
        if attention == "blockwise":  # the dropped tokens of block 0 are not in the sequence
            assert tokens.shape[1] == first + 2 * M + 3 * tokenizer.patches_per_block


def test_input_validation(tokenizer: AdapTokTokenizer) -> None:
    with pytest.raises(ValueError, match=r"\(B, 3, T, 32, 32\)"):
        tokenizer.encode(torch.rand(1, 3, 6, 32, 32))
    with pytest.raises(ValueError, match="multiple of 4"):
        tokenizer.check_input(torch.rand(1, 3, 16, 32, 32))
    with pytest.raises(ValueError, match="got shape"):
        tokenizer.check_input(torch.rand(1, 3, 12, 24, 32))
    with pytest.raises(ValueError, match="got shape"):
        tokenizer.check_input(torch.rand(3, 12, 32, 32))
    codes = torch.zeros(1, 3 * M, dtype=torch.long)
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 16\]"):
        tokenizer.decode(codes, torch.tensor([[1, 17, 3]]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 16\]"):
        tokenizer.decode(codes, torch.tensor([[0, 1, 3]]))
    with pytest.raises(ValueError, match="tokens"):
        tokenizer.decode(codes[:, :-1], torch.tensor([[1, 1, 3]]))
    with pytest.raises(ValueError, match="integer lengths"):
        tokenizer(torch.rand(1, 3, 12, 32, 32), torch.ones(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible"):
        _tokenizer(image_size=36)


def _smooth_clips(count: int) -> Tensor:
    """Trilinear upsamplings of random 2x2x2 colour grids: `(count, 3, 8, 32, 32)` in [0, 1]."""
    low = torch.rand(count, 3, 2, 2, 2, generator=torch.Generator().manual_seed(123))
    return F.interpolate(low, size=(8, 32, 32), mode="trilinear", align_corners=True)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread: deterministic, and faster than 2 threads on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_reconstruction_improves_with_more_tokens() -> None:
    """After 500 steps of tail-drop training on 12 clips, more tokens reconstruct better.

    About 25 s with one thread on a busy 2-core machine (hence `slow`).

    A 4-code codebook (2 bits per token) keeps one token from naming a clip, so later
    tokens must refine. The VQ terms are left out: at this size and budget, Adam drives
    the encoder to a constant output (one code for every token) within ~50 steps even at
    a VQ weight of 0.01; the codes are trained through the straight-through path alone.
    The codebook starts from encoder outputs so that the initial codes differ.
    """
    model = _tokenizer(num_frames=8, tokens_per_block=8, width=48, codebook_size=4)
    clips = _smooth_clips(12)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        features = model.quantizer.pre_proj(model.encode_latents(clips)).flatten(0, 1)
        start = torch.randperm(features.shape[0], generator=generator)[:4]
        model.quantizer.codebook.copy_(F.normalize(features[start], dim=-1))
    sampler = TailDropSampler("uniform", min_tokens=1, max_tokens=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(500):
        out = model(clips, sampler.sample(12, 2, generator=generator))
        loss = (out.recon - clips).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        codes = model.encode(clips).codes
        errors = [
            (model.decode(codes, torch.full((12, 2), n)) - clips).abs().mean().item()
            for n in (1, 2, 4, 8)
        ]
    # One token is clearly worse than more; more never hurts (beyond noise).
    assert all(error < errors[0] - 0.005 for error in errors[1:]), errors
    assert all(b < a + 0.002 for a, b in zip(errors, errors[1:])), errors
