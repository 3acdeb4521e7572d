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


@pytest.fixture(scope="module", params=[False, True], ids=["paper", "token_mixing"])
def tokenizer(request: pytest.FixtureRequest) -> AdapTokTokenizer:
    """Eval-mode tokenizer with a random (not zero) output layer, so decodes vary; once as the
    paper's and once with random (not zero) token-mixing routes, so every causality,
    streaming and equivalence test below also covers them."""
    model = _tokenizer(token_mixing=request.param)
    torch.nn.init.normal_(model.output.weight, std=0.5)
    if request.param:
        torch.nn.init.normal_(model.decoder_mixing, std=0.05)
        torch.nn.init.normal_(model.encoder_mixing, std=0.05)
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


# ------------------------------------------------------- fast paths against the dense oracle
def _lengths(seed: int, batch: int = 4) -> Tensor:
    """Random lengths with 1 and M present."""
    lengths = torch.randint(1, M + 1, (batch, 3), generator=torch.Generator().manual_seed(seed))
    lengths[0, 0], lengths[-1, -1] = 1, M
    return lengths


def _both(model: AdapTokTokenizer, run: object) -> tuple[object, object]:
    """`run()` with the dense reference, then with the blockwise path."""
    results = []
    for attention in ("dense", "blockwise"):
        model.attention = attention
        results.append(run())  # type: ignore[operator]
    return results[0], results[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_blockwise_equals_dense_in_eval(tokenizer: AdapTokTokenizer, seed: int) -> None:
    """Encodes and decodes (mixed lengths: packed path; equal lengths: batched path; all
    tokens; a 2-block prefix) equal the dense masked reference within 1e-5."""
    video = _video(seed, batch=4)
    with torch.no_grad():
        dense, fast = _both(tokenizer, lambda: tokenizer.encode(video))
        torch.testing.assert_close(fast.latents, dense.latents, atol=1e-5, rtol=0)
        assert torch.equal(fast.codes, dense.codes)
        for lengths in (_lengths(seed), torch.full((4, 3), 5), torch.full((4, 3), M)):
            a, b = _both(tokenizer, lambda n=lengths: tokenizer.decode(dense.codes, n))
            torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
        prefix = _lengths(seed)[:, :2]
        a, b = _both(tokenizer, lambda: tokenizer.decode(dense.codes[:, : 2 * M], prefix))
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("seed", "token_mixing"), [(0, False), (1, False), (0, True)])
def test_blockwise_train_step_equals_dense(seed: int, token_mixing: bool) -> None:
    """The training forward with tail drop gives the same reconstruction, losses and
    gradients (every parameter, the token-mixing routes included) on both paths; the
    stochastic VQ draws the same codes under the same seed."""
    model = _tokenizer(
        prior_depth=1, prior_width=16, prior_heads=2, token_mixing=token_mixing
    ).train()
    torch.nn.init.normal_(model.output.weight, std=0.5)
    if token_mixing:
        torch.nn.init.normal_(model.decoder_mixing, std=0.05)
        torch.nn.init.normal_(model.encoder_mixing, std=0.05)
    video = _video(seed, batch=4)
    lengths = _lengths(seed)

    def step() -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(seed)
        out = model(video, lengths)
        assert out.prior_loss is not None
        loss = (out.recon - video).abs().mean() + out.vq_loss + out.prior_loss
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return out.recon.detach(), out.codes, grads

    (recon_a, codes_a, grads_a), (recon_b, codes_b, grads_b) = _both(model, step)
    assert torch.equal(codes_a, codes_b)
    torch.testing.assert_close(recon_b, recon_a, atol=1e-5, rtol=0)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) == len(list(model.parameters()))
    for name, grad in grads_a.items():
        scale = grad.abs().max().clamp_min(1.0)
        torch.testing.assert_close(grads_b[name], grad, atol=1e-5 * scale, rtol=0, msg=name)


@pytest.mark.parametrize("attention", ["dense", "blockwise"])
def test_streaming_equals_full_encode_on_both_paths(attention: str) -> None:
    model = _tokenizer(attention=attention).eval()
    video = _video(seed=5)
    with torch.no_grad():
        full = model.encode(video)
    parts = list(model.encode_stream(_block(video, b) for b in range(3)))
    assert torch.equal(torch.cat([p.codes for p in parts], 1), full.codes)
    streamed = torch.cat([p.latents for p in parts], 1)
    torch.testing.assert_close(streamed, full.latents, atol=1e-5, rtol=0)


def test_stochastic_depth_training_falls_back_to_dense_decoder() -> None:
    """With drop_path in training, mixed lengths cannot share a packed row (DropPath drops per
    row); the decoder then runs the dense path, and its drops still differ per sample."""
    model = _tokenizer(drop_path=0.5).train()
    assert not model._use_blockwise_decoder(_lengths(0))
    assert model._use_blockwise_decoder(torch.full((4, 3), 7))
    out = model(_video(batch=4), _lengths(0))
    assert out.recon.shape == (4, 3, 12, 32, 32)
    assert model.eval()._use_blockwise_decoder(_lengths(0))


def test_bf16_stays_close_to_fp32(tokenizer: AdapTokTokenizer) -> None:
    """bf16 autocast: float32 outputs; decodes of the same codes within 1 % (max) and 0.2 %
    (mean) of the output's spread around 0.5 of fp32 (this random-weight model outputs about
    [-3, 3]: bf16 keeps 8 bits of mantissa); encodes choose (almost) the same codes. The
    quality cost on real clips is measured by `benchmarks/tokenizer.py --psnr`."""
    video = _video(seed=7, batch=4)
    lengths = _lengths(7)
    with torch.no_grad():
        tokenizer.precision = "fp32"
        reference = tokenizer.encode(video)
        decoded = tokenizer.decode(reference.codes, lengths)
        tokenizer.precision = "bf16"
        try:
            low = tokenizer.encode(video)
            low_decoded = tokenizer.decode(reference.codes, lengths)
        finally:
            tokenizer.precision = "fp32"
    assert low.latents.dtype == low_decoded.dtype == torch.float32
    assert (low.codes == reference.codes).float().mean() > 0.9
    spread = (decoded - 0.5).abs().max()
    assert (low_decoded - decoded).abs().max() < 0.01 * spread
    assert (low_decoded - decoded).abs().mean() < 0.002 * spread
    assert not torch.equal(low_decoded, decoded)  # bf16 really ran
    with pytest.raises(ValueError, match="precision"):
        _tokenizer(precision="fp16")
    with pytest.raises(ValueError, match="attention"):
        _tokenizer(attention="flash")


def test_state_dict_is_shared_by_both_paths() -> None:
    """Checkpoints of either path (and of earlier versions: same keys) load into the other."""
    dense = _tokenizer(attention="dense")
    fast = _tokenizer(attention="blockwise", precision="bf16")
    assert dense.state_dict().keys() == fast.state_dict().keys()
    fast.load_state_dict(dense.state_dict())
