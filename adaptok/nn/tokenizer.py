"""AdapTok tokenizer: block-causal 1D video tokenizer with variable tokens per block.

A clip `(B, C, T, H, W)` in [0, 1] is cut into K temporal blocks of `frames_per_block`
frames. The encoder reads `[patches_b ; latent queries_b]` for every block b under a
block-causal mask and keeps its outputs at the latent positions: M tokens per block,
N = K * M in total. A stochastic VQ turns them into codes. The decoder reads
`[quantized latents ; patch queries]` (latents carry a sin-cos embedding of their ABSOLUTE
index), with the tail of each block dropped according to `lengths` (B, K), and predicts the
patches of every block from the latents of that block and the earlier ones.

Two implementations of the same network (`attention`), equal within float rounding:

- "blockwise" (default, fast): block-causal attention as one unmasked attention call per
  block (`adaptok.nn.block_layout`), dropped latents gathered out of the decoder's sequence
  (a quarter of the tokens costs about a quarter of the latent work), and the last layer of
  each stack computes only the rows it returns (encoder: latents; decoder: patch queries).
- "dense": the reference. Dense masked attention over every token, dropped latents zeroed
  and masked from the keys. Kept as the test oracle and the benchmark's baseline.

`precision="auto"` (default) runs encoder and decoder in the caller's autocast state (the
trainer's `16-mixed` / `bf16-mixed`); "fp32" switches autocast off inside them and "bf16" forces
CPU/CUDA bfloat16 autocast (`adaptok.nn.precision`). The quantizer always stays in float32 so
that code choices do not flip on rounding; outputs are float32.

Parameters: `AdapTokTokenizer.parameter_count()` (or `sum(p.numel() for p in
m.parameters())`); the paper configuration (defaults) has about 173M without the prior.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from timm.layers import trunc_normal_
from torch import Tensor, nn

from adaptok.nn.block_layout import AttentionImpl, check_attention, decoder_layout, encoder_layout
from adaptok.nn.masks import decoder_key_keep, decoder_mask, encoder_mask, with_key_padding
from adaptok.nn.pos_embed import sincos_1d, sincos_3d
from adaptok.nn.precision import Precision, autocast_for, check_precision
from adaptok.nn.prior import Prior
from adaptok.nn.quantizer import StochasticQuantizer
from adaptok.nn.tail_drop import keep_mask
from adaptok.nn.transformer import TransformerStack, init_weights

__all__ = ["AdapTokTokenizer", "StreamingEncoder", "TokenizerEncoding", "TokenizerOutput"]


@dataclass
class TokenizerEncoding:
    """Result of `AdapTokTokenizer.encode` (N = number of blocks encoded x M).

    Attributes:
        latents: `(B, N, width)` continuous encoder outputs.
        codes: `(B, N)` long code indices.
        quantized: `(B, N, width)` straight-through quantized tokens after the post-quant
            projection (what the decoder reads).
        code_vectors: `(B, N, code_dim)` unit-norm straight-through code vectors (the
            prior's input).
        commit_loss: Scalar commitment loss (over kept tokens, or all in `encode`).
        codebook_loss: Scalar codebook loss (same tokens).
    """

    latents: Tensor
    codes: Tensor
    quantized: Tensor
    code_vectors: Tensor
    commit_loss: Tensor
    codebook_loss: Tensor


@dataclass
class TokenizerOutput:
    """Result of `AdapTokTokenizer.forward` (training).

    Attributes:
        recon: `(B, C, T, H, W)` reconstruction, [0, 1] scale, not clamped.
        codes: `(B, N)` long codes (all N; only the kept ones were decoded).
        lengths: `(B, K)` long kept tokens per block.
        keep: Bool `(B, N)`, True for kept tokens.
        latents: `(B, N, width)` continuous encoder outputs.
        quantized: `(B, N, width)` straight-through quantized tokens.
        commit_loss: Scalar commitment loss over kept tokens.
        codebook_loss: Scalar codebook loss over kept tokens.
        vq_loss: `commit_weight * commit_loss + codebook_loss`.
        prior_loss: Scalar next-code cross-entropy of the prior, or None without a prior.
    """

    recon: Tensor
    codes: Tensor
    lengths: Tensor
    keep: Tensor
    latents: Tensor
    quantized: Tensor
    commit_loss: Tensor
    codebook_loss: Tensor
    vq_loss: Tensor
    prior_loss: Tensor | None


class AdapTokTokenizer(nn.Module):
    """Block-causal, variable-length 1D video tokenizer (encoder, VQ, decoder, prior).

    Args:
        num_frames: Frames per clip T (a multiple of `frames_per_block`).
        image_size: Frame height = width.
        in_channels: Video channels C.
        patch_size: `(pt, ph, pw)` of the 3D patch embedding (kernel = stride).
        frames_per_block: Frames per temporal block (a multiple of pt).
        tokens_per_block: Latent tokens per block M.
        width: Transformer width of encoder and decoder.
        depth: Encoder depth.
        heads: Attention heads.
        mlp_ratio: MLP hidden width as a multiple of `width`.
        decoder_depth: Decoder depth; None = `depth`.
        codebook_size: Number of codes.
        code_dim: Width of the codebook vectors.
        temperature: Sampling temperature of the quantizer.
        commit_weight: Weight of the commitment term inside `vq_loss`.
        drop_path: Stochastic-depth rate of encoder and decoder.
        prior_depth: Depth of LARP's prior; 0 = no prior (paper: 12).
        prior_width: Width of the prior (paper: 384).
        prior_heads: Attention heads of the prior.
        query_init_std: Init std of the learned latent queries (paper: 0.02). Small models
            start with near-identical latents and a collapsed codebook; ~1.0 avoids that.
        attention: "blockwise" (fast) or "dense" (reference); same weights, same results.
            May be changed on a built model (attribute of the same name).
        precision: "auto" (follow the caller's autocast, e.g. the trainer's), "fp32" or
            "bf16" (forced inside encoder and decoder); an attribute too.
        qkv_bias: Bias on the attention's query/key/value projections (official: none).
        encoder_norm: Final LayerNorm on the encoder's outputs (official: none).
        decoder_norm_eps: Epsilon of the decoder's final LayerNorm (official: 1e-6).
        unit_pixels: The network reads and writes pixels on the [0, 1] scale, as the
            official code does, instead of [-1, 1] (inputs and outputs of the public
            methods are on [0, 1] either way).
        stored_positions: The position tables (encoder patches, decoder patch queries,
            decoder latents) are persistent buffers that a checkpoint fills (the official
            tables, whose sin-cos layout differs from ours), instead of computed ones.
        token_mixing: Learned linear routes between patches and 1D tokens in both stacks
            (not in the paper; `docs/tokenizer_collapse.md`). Encoder: latent query j of
            block b starts as the paper's query plus `sum_p U[b, j, p] * x_p` over block b's
            patch embeddings x_p. Decoder: patch query p of block b starts as the paper's
            query plus `sum_j W[b, p, j] * q_j` over the KEPT quantized tokens q_j of block
            b. U and W are zero-initialised, so a new model starts as the paper's, and both
            read block b only, so block-causality holds. Without them a small model has to
            learn through attention alone which token describes which patches; at demo
            scale it never does (attention stays uniform, every token carries the block's
            average, and the codes collapse to a few per block).
        token_mixing_gain: U and W are stored divided by this factor (a `gain`-times larger
            learning rate under Adam; their gradients, as seen by gradient clipping, are
            `gain` times larger): a pooling weight must reach about 1/P (encoder; x_p
            includes the patch's position) or 1/M (decoder) within a few hundred steps.
    """

    def __init__(
        self,
        num_frames: int = 16,
        image_size: int = 128,
        in_channels: int = 3,
        patch_size: tuple[int, int, int] = (4, 8, 8),
        frames_per_block: int = 4,
        tokens_per_block: int = 512,
        width: int = 768,
        depth: int = 12,
        heads: int = 12,
        mlp_ratio: float = 4.0,
        decoder_depth: int | None = None,
        codebook_size: int = 8192,
        code_dim: int = 16,
        temperature: float = 0.03,
        commit_weight: float = 0.25,
        drop_path: float = 0.0,
        prior_depth: int = 0,
        prior_width: int = 384,
        prior_heads: int = 6,
        query_init_std: float = 0.02,
        attention: AttentionImpl = "blockwise",
        precision: Precision = "auto",
        qkv_bias: bool = True,
        encoder_norm: bool = True,
        decoder_norm_eps: float = 1e-5,
        unit_pixels: bool = False,
        stored_positions: bool = False,
        token_mixing: bool = False,
        token_mixing_gain: float = 10.0,
    ) -> None:
        super().__init__()
        check_attention(attention)
        check_precision(precision)
        self.attention = attention
        self.precision = precision
        self.drop_path = drop_path
        pt, ph, pw = patch_size = tuple(patch_size)
        if frames_per_block % pt != 0 or num_frames % frames_per_block != 0:
            raise ValueError(
                f"need num_frames ({num_frames}) a multiple of frames_per_block "
                f"({frames_per_block}), itself a multiple of the temporal patch ({pt})"
            )
        if image_size % ph != 0 or image_size % pw != 0:
            raise ValueError(f"image_size {image_size} is not divisible by patch {(ph, pw)}")
        self.num_frames = num_frames
        self.image_size = image_size
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.frames_per_block = frames_per_block
        self.commit_weight = commit_weight
        self.query_init_std = query_init_std
        self.unit_pixels = unit_pixels
        self.stored_positions = stored_positions
        self._tokens_per_block = tokens_per_block
        self.grid = (num_frames // pt, image_size // ph, image_size // pw)
        self.patches_per_block = (frames_per_block // pt) * self.grid[1] * self.grid[2]

        self.patch_embed = nn.Conv3d(in_channels, width, kernel_size=patch_size, stride=patch_size)
        patch_pos = sincos_3d(self.grid, width)
        self.register_buffer("patch_pos", patch_pos, persistent=stored_positions)
        if stored_positions:  # the official decoder has its own patch-query table
            self.register_buffer("decoder_patch_pos", patch_pos.clone())
        self.latent_queries = nn.Parameter(torch.zeros(self.num_blocks, tokens_per_block, width))
        self.encoder = TransformerStack(
            width,
            depth,
            heads,
            mlp_ratio,
            drop_path,
            qkv_bias=qkv_bias,
            final_norm_eps=1e-5 if encoder_norm else None,
        )
        self.quantizer = StochasticQuantizer(width, codebook_size, code_dim, temperature)
        self.register_buffer(
            "latent_pos",
            sincos_1d(torch.arange(self.num_tokens), width),
            persistent=stored_positions,
        )
        self.patch_query = nn.Parameter(torch.zeros(width))
        self.token_mixing_gain = token_mixing_gain
        shape = (self.num_blocks, self.patches_per_block, tokens_per_block)
        # decoder: (K, P, M) token -> patch-query weights W; encoder: (K, M, P) patch -> query U
        self.decoder_mixing = nn.Parameter(torch.zeros(shape)) if token_mixing else None
        self.encoder_mixing = (
            nn.Parameter(torch.zeros(shape).transpose(1, 2).contiguous()) if token_mixing else None
        )
        self.decoder = TransformerStack(
            width,
            depth if decoder_depth is None else decoder_depth,
            heads,
            mlp_ratio,
            drop_path,
            qkv_bias=qkv_bias,
            final_norm_eps=decoder_norm_eps,
        )
        self.output = nn.Linear(width, in_channels * pt * ph * pw)
        self.prior = (
            Prior(code_dim, self.num_tokens, prior_width, prior_depth, prior_heads, mlp_ratio)
            if prior_depth > 0
            else None
        )
        self._init_weights()

    def _init_weights(self) -> None:
        """ViT init; balanced post-quant projection; latent queries; zero output.

        The decoder adds a sin-cos index embedding of norm ``sqrt(width / 2)`` to each code's
        content. A plain Xavier post-quant projection of a unit code vector has norm ~1.4, so
        the content would start several times smaller than its position (6x at width 128,
        14x at 768); the gain below starts both at the same scale.
        """
        for module in (self.encoder, self.decoder, self.quantizer.pre_proj):
            module.apply(init_weights)
        post_proj = self.quantizer.post_proj
        fan_in, fan_out = post_proj.in_features, post_proj.out_features
        nn.init.xavier_uniform_(post_proj.weight, gain=((fan_in + fan_out) / 4) ** 0.5)
        nn.init.zeros_(self.quantizer.post_proj.bias)
        weight = self.patch_embed.weight
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        trunc_normal_(self.latent_queries, std=self.query_init_std)
        trunc_normal_(self.patch_query, std=0.02)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    @property
    def num_blocks(self) -> int:
        """K, temporal blocks of a full clip."""
        return self.num_frames // self.frames_per_block

    @property
    def tokens_per_block(self) -> int:
        """M, latent tokens per block."""
        return self._tokens_per_block

    @property
    def num_tokens(self) -> int:
        """N = K * M, latent tokens of a full clip."""
        return self.num_blocks * self.tokens_per_block

    @property
    def width(self) -> int:
        """D, width of the latent tokens (``encode``'s ``latents`` and ``quantized``)."""
        return self.patch_query.shape[0]

    def parameter_count(self, include_prior: bool = True) -> int:
        """Number of parameters, optionally leaving out the prior."""
        total = sum(p.numel() for p in self.parameters())
        if self.prior is not None and not include_prior:
            total -= sum(p.numel() for p in self.prior.parameters())
        return total

    # ----------------------------------------------------------------------------- checks
    def check_input(self, video: Tensor) -> int:
        """Validates a clip and returns its number of blocks.

        Args:
            video: `(B, C, T, H, W)` with T a positive multiple of `frames_per_block`, at most
                `num_frames` (shorter clips encode a prefix of blocks).

        Returns:
            The number of blocks of `video`.

        Raises:
            ValueError: On any other shape.
        """
        c, s = self.in_channels, self.image_size
        expected = (
            f"(B, {c}, T, {s}, {s}) with T a multiple of {self.frames_per_block} "
            f"up to {self.num_frames}"
        )
        if video.dim() != 5:
            raise ValueError(f"expected video {expected}, got shape {tuple(video.shape)}")
        _, channels, frames, height, width = video.shape
        if (
            channels != c
            or (height, width) != (s, s)
            or frames == 0
            or frames % self.frames_per_block != 0
            or frames > self.num_frames
        ):
            raise ValueError(f"expected video {expected}, got shape {tuple(video.shape)}")
        return frames // self.frames_per_block

    def check_lengths(self, lengths: Tensor, batch_size: int, num_blocks: int) -> None:
        """Validates `lengths`: long `(batch_size, num_blocks)` in [1, tokens_per_block].

        Raises:
            ValueError: On a wrong shape, dtype or value.
        """
        expected = (batch_size, num_blocks)
        if tuple(lengths.shape) != expected or lengths.dtype.is_floating_point:
            raise ValueError(
                f"expected integer lengths of shape {expected}, got {lengths.dtype} "
                f"{tuple(lengths.shape)}"
            )
        low, high = int(lengths.min()), int(lengths.max())
        if low < 1 or high > self.tokens_per_block:
            raise ValueError(
                f"lengths must lie in [1, {self.tokens_per_block}] (tokens per block), "
                f"got values in [{low}, {high}]"
            )

    def _check_tokens(self, tokens: Tensor, lengths: Tensor) -> int:
        """Validates `(B, N')` codes or `(B, N', D)` tokens against lengths; returns K'."""
        num_blocks = lengths.shape[-1] if lengths.dim() == 2 else 0
        if not 1 <= num_blocks <= self.num_blocks:
            raise ValueError(
                f"lengths must be (B, K) with 1 <= K <= {self.num_blocks}, "
                f"got {tuple(lengths.shape)}"
            )
        if tokens.shape[1] != num_blocks * self.tokens_per_block:
            raise ValueError(
                f"expected {num_blocks} x {self.tokens_per_block} tokens for lengths "
                f"{tuple(lengths.shape)}, got tokens of shape {tuple(tokens.shape)}"
            )
        self.check_lengths(lengths, tokens.shape[0], num_blocks)
        return num_blocks

    # ---------------------------------------------------------------------------- encoder
    def _patch_tokens(self, video: Tensor, first_patch: int = 0) -> Tensor:
        """Embeds `(B, C, T', H, W)` in [0, 1] -> `(B, P', D)`, positions from `first_patch`."""
        pixels = video if self.unit_pixels else video * 2 - 1
        tokens = self.patch_embed(pixels).flatten(2).transpose(1, 2)
        return tokens + self.patch_pos[first_patch : first_patch + tokens.shape[1]]

    def _quantize(self, latents: Tensor, keep: Tensor | None) -> TokenizerEncoding:
        """Quantizes `(B, N', D)` encoder outputs into a `TokenizerEncoding` (in float32)."""
        with torch.autocast(latents.device.type, enabled=False):
            out = self.quantizer(latents.float(), keep)
        return TokenizerEncoding(
            latents=latents,
            codes=out.codes,
            quantized=out.quantized,
            code_vectors=out.code_vectors,
            commit_loss=out.commit_loss,
            codebook_loss=out.codebook_loss,
        )

    def encode_latents(self, video: Tensor) -> Tensor:
        """Continuous encoder outputs.

        Args:
            video: `(B, C, T, H, W)` in [0, 1] (see `check_input`).

        Returns:
            `(B, K' * M, width)`, K' = T / frames_per_block.
        """
        num_blocks = self.check_input(video)
        with autocast_for(video.device, self.precision):
            return self._encode_latents(video, num_blocks).float()

    def _encode_latents(self, video: Tensor, num_blocks: int) -> Tensor:
        """`encode_latents` after the checks, in the current autocast state."""
        batch = video.shape[0]
        p, m = self.patches_per_block, self.tokens_per_block
        patches = self._patch_tokens(video).view(batch, num_blocks, p, -1)
        queries = self._latent_queries(patches, 0)
        tokens = torch.cat([patches, queries.to(patches.dtype)], dim=2).flatten(1, 2)
        if self.attention == "blockwise":
            return self.encoder(
                tokens,
                layout=encoder_layout(num_blocks, p, m),
                output_layout=encoder_layout(num_blocks, p, m, latents_only=True),
            )
        mask = encoder_mask(num_blocks, p, m, video.device)
        out = self.encoder(tokens, mask).view(batch, num_blocks, -1, tokens.shape[-1])
        return out[:, :, p:].flatten(1, 2)

    def _latent_queries(self, patches: Tensor, first_block: int) -> Tensor:
        """Encoder latent queries `(B, K', M, D)` for patch tokens `(B, K', P, D)`.

        The learned queries of blocks `first_block ..`, plus, with `token_mixing`, a learned
        linear pooling of each block's own patch tokens.
        """
        batch, num_blocks = patches.shape[:2]
        blocks = slice(first_block, first_block + num_blocks)
        queries = self.latent_queries[blocks].expand(batch, -1, -1, -1)
        if self.encoder_mixing is None:
            return queries
        weights = (self.encoder_mixing[blocks] * self.token_mixing_gain).to(patches.dtype)
        return queries + torch.einsum("kmp,bkpd->bkmd", weights, patches)

    def encode(self, video: Tensor) -> TokenizerEncoding:
        """Encodes and quantizes every latent token (sampling in train mode, argmax in eval).

        Args:
            video: `(B, C, T, H, W)` in [0, 1].

        Returns:
            A `TokenizerEncoding` with N = K' * M tokens; the VQ losses cover all tokens.
        """
        return self._quantize(self.encode_latents(video), None)

    def stream_encoder(self) -> StreamingEncoder:
        """A stateful encoder that consumes one block of frames at a time (see its `push`)."""
        return StreamingEncoder(self)

    def encode_stream(self, blocks: Iterable[Tensor]) -> Iterator[TokenizerEncoding]:
        """Encodes a stream of frame blocks; in eval mode the codes equal those of `encode`.

        Args:
            blocks: Iterable of `(B, C, frames_per_block, H, W)` in [0, 1], at most
                `num_blocks` of them.

        Yields:
            One `TokenizerEncoding` per block, with M tokens each.
        """
        encoder = self.stream_encoder()
        for frames in blocks:
            yield encoder.push(frames)

    # ---------------------------------------------------------------------------- decoder
    def decode_quantized(self, quantized: Tensor, lengths: Tensor) -> Tensor:
        """Decodes quantized tokens, using the first `lengths[b, k]` tokens of each block.

        Args:
            quantized: `(B, K' * M, width)` (as in `TokenizerEncoding.quantized`); the
                dropped tokens are ignored whatever their values.
            lengths: Long `(B, K')`, 1 <= l <= M.

        Returns:
            `(B, C, K' * frames_per_block, H, W)` on the [0, 1] scale, not clamped.
        """
        num_blocks = self._check_tokens(quantized, lengths)
        with autocast_for(quantized.device, self.precision):
            if self._use_blockwise_decoder(lengths):
                out = self._decode_blockwise(quantized, lengths, num_blocks)
            else:
                out = self._decode_dense(quantized, lengths, num_blocks)
        video = self._unpatchify(out.float(), num_blocks)
        return video if self.unit_pixels else video * 0.5 + 0.5

    def _use_blockwise_decoder(self, lengths: Tensor) -> bool:
        """Whether to run the blockwise decoder.

        Not when "dense" is asked for, nor when stochastic depth is on in training and the
        samples' lengths differ: the packed sequence then mixes samples in one row and
        `DropPath` would drop them together.
        """
        if self.attention == "dense":
            return False
        if self.training and self.drop_path > 0:
            return bool((lengths == lengths[:1]).all())
        return True

    def _patch_queries(self, quantized: Tensor, keep: Tensor, num_blocks: int) -> Tensor:
        """Decoder patch queries: the learned query plus the 3D position (plus token mixing).

        Args:
            quantized: `(B, K' * M, D)` quantized tokens (without positions).
            keep: Bool `(B, K' * M)`, True for kept tokens.
            num_blocks: K'.

        Returns:
            `(1, K' * P, D)`, or `(B, K' * P, D)` with `token_mixing` (block b's patch queries
            read only block b's kept tokens, so block-causality holds).
        """
        num_patches = num_blocks * self.patches_per_block
        table = self.decoder_patch_pos if self.stored_positions else self.patch_pos
        queries = (self.patch_query + table[:num_patches])[None]
        if self.decoder_mixing is None:
            return queries
        batch, _, width = quantized.shape
        content = torch.where(keep.unsqueeze(-1), quantized, 0.0)
        content = content.view(batch, num_blocks, self.tokens_per_block, width)
        weights = self.decoder_mixing[:num_blocks] * self.token_mixing_gain
        mixed = torch.einsum("kpm,bkmd->bkpd", weights.to(content.dtype), content)
        return queries + mixed.reshape(batch, num_patches, width)

    def _decode_dense(self, quantized: Tensor, lengths: Tensor, num_blocks: int) -> Tensor:
        """Reference decoder: dropped latents zeroed and masked. Returns `(B, K' * P, C*pt*ph*pw)`."""
        batch, num_latents, _ = quantized.shape
        keep = keep_mask(lengths, self.tokens_per_block)
        latents = torch.where(keep.unsqueeze(-1), quantized + self.latent_pos[:num_latents], 0.0)
        num_patches = num_blocks * self.patches_per_block
        queries = self._patch_queries(quantized, keep, num_blocks).expand(batch, -1, -1)
        tokens = torch.cat([latents.to(queries.dtype), queries], dim=1)
        mask = decoder_mask(
            num_blocks, self.patches_per_block, self.tokens_per_block, tokens.device
        )
        if not bool(keep.all()):
            mask = with_key_padding(mask, decoder_key_keep(keep, num_patches))
        return self.output(self.decoder(tokens, mask)[:, num_latents:])

    def _decode_blockwise(self, quantized: Tensor, lengths: Tensor, num_blocks: int) -> Tensor:
        """Fast decoder: only the kept latents enter.

        Each kept latent carries the embedding of its ABSOLUTE index (docs/METHOD.md section 1);
        block-sparse attention; the last layer computes the patch queries only. Samples with
        equal lengths share one batched layout; otherwise the samples are packed into one
        sequence with per-sample groups.

        Returns:
            `(B, K' * P, C * pt * ph * pw)`.
        """
        batch, num_latents, width = quantized.shape
        p = self.patches_per_block
        num_patches = num_blocks * p
        latents = quantized + self.latent_pos[:num_latents]
        rows = tuple(tuple(row) for row in lengths.tolist())
        keep = keep_mask(lengths, self.tokens_per_block)
        queries = self._patch_queries(quantized, keep, num_blocks).expand(batch, -1, -1)
        if len(set(rows)) == 1:
            kept = latents if bool(keep.all()) else latents[keep].view(batch, -1, width)
            tokens = torch.cat([kept.to(queries.dtype), queries], dim=1)
            layout_rows = rows[:1]
        else:
            pieces = latents[keep].to(queries.dtype).split(lengths.sum(1).tolist())
            tokens = torch.cat([t for piece, own in zip(pieces, queries) for t in (piece, own)])
            tokens = tokens[None]
            layout_rows = rows
        hidden = self.decoder(
            tokens,
            layout=decoder_layout(layout_rows, p),
            output_layout=decoder_layout(layout_rows, p, patches_only=True),
        )
        return self.output(hidden.reshape(batch, num_patches, -1))

    def decode(self, codes: Tensor, lengths: Tensor) -> Tensor:
        """Decodes codes, using the first `lengths[b, k]` codes of each block.

        Args:
            codes: Long `(B, K' * M)`; dropped positions may hold any value (e.g. -1).
            lengths: Long `(B, K')`, 1 <= l <= M.

        Returns:
            `(B, C, K' * frames_per_block, H, W)` on the [0, 1] scale, not clamped.
        """
        self._check_tokens(codes, lengths)
        keep = keep_mask(lengths, self.tokens_per_block)
        return self.decode_quantized(
            self.quantizer.embed_codes(codes.masked_fill(~keep, 0)), lengths
        )

    def _unpatchify(self, patches: Tensor, num_blocks: int) -> Tensor:
        """`(B, K' * P, C * pt * ph * pw)` -> `(B, C, K' * frames_per_block, H, W)`."""
        pt, ph, pw = self.patch_size
        gt = num_blocks * self.frames_per_block // pt
        _, gh, gw = self.grid
        video = patches.view(patches.shape[0], gt, gh, gw, self.in_channels, pt, ph, pw)
        video = video.permute(0, 4, 1, 5, 2, 6, 3, 7)
        return video.reshape(patches.shape[0], self.in_channels, gt * pt, gh * ph, gw * pw)

    # --------------------------------------------------------------------------- training
    def forward(self, video: Tensor, lengths: Tensor) -> TokenizerOutput:
        """Encode, quantize (sampling in train mode), tail-drop and decode.

        Args:
            video: `(B, C, T, H, W)` in [0, 1].
            lengths: Long `(B, K')` kept tokens per block, K' = T / frames_per_block.

        Returns:
            A `TokenizerOutput`; VQ and prior losses cover kept tokens only.
        """
        num_blocks = self.check_input(video)
        self.check_lengths(lengths, video.shape[0], num_blocks)
        keep = keep_mask(lengths, self.tokens_per_block)
        with autocast_for(video.device, self.precision):
            latents = self._encode_latents(video, num_blocks).float()
        encoding = self._quantize(latents, keep)
        recon = self.decode_quantized(encoding.quantized, lengths)
        prior_loss = None
        if self.prior is not None:
            prior_loss = self.prior(
                encoding.code_vectors,
                encoding.codes,
                keep,
                self.quantizer.normalized_codebook(),
            )
        return TokenizerOutput(
            recon=recon,
            codes=encoding.codes,
            lengths=lengths,
            keep=keep,
            latents=encoding.latents,
            quantized=encoding.quantized,
            commit_loss=encoding.commit_loss,
            codebook_loss=encoding.codebook_loss,
            vq_loss=self.commit_weight * encoding.commit_loss + encoding.codebook_loss,
            prior_loss=prior_loss,
        )


class StreamingEncoder:
    """Encodes a clip block by block with a KV cache (block-causality makes this exact).

    Each `push` runs the encoder on one block's patch tokens and latent queries only; they
    attend to themselves and to the cached keys/values of every earlier block, which is
    what the block-causal mask of the full `encode` allows. Gradients are not tracked.

    Args:
        tokenizer: The tokenizer whose encoder and quantizer are used.
    """

    def __init__(self, tokenizer: AdapTokTokenizer) -> None:
        self.tokenizer = tokenizer
        self.cache = tokenizer.encoder.new_cache()
        self.blocks_seen = 0

    @torch.no_grad()
    def push(self, frames: Tensor) -> TokenizerEncoding:
        """Encodes the next block.

        Args:
            frames: `(B, C, frames_per_block, H, W)` in [0, 1].

        Returns:
            A `TokenizerEncoding` of this block's M tokens.

        Raises:
            ValueError: On a wrong shape or more than `num_blocks` blocks.
        """
        tok = self.tokenizer
        if tok.check_input(frames) != 1:
            raise ValueError(
                f"push expects one block of {tok.frames_per_block} frames, "
                f"got shape {tuple(frames.shape)}"
            )
        if self.blocks_seen >= tok.num_blocks:
            raise ValueError(f"the tokenizer encodes at most {tok.num_blocks} blocks")
        block = self.blocks_seen
        p, m = tok.patches_per_block, tok.tokens_per_block
        with autocast_for(frames.device, tok.precision):
            patches = tok._patch_tokens(frames, first_patch=block * p)
            queries = tok._latent_queries(patches[:, None], block)[:, 0]
            tokens = torch.cat([patches, queries.to(patches.dtype)], dim=1)
            # Block `block` against the cached blocks 0..block-1: the same layout group as
            # block `block` of the full-clip encoder (`encoder_layout`), with cached keys.
            out = tok.encoder(
                tokens,
                cache=self.cache,
                layout=encoder_layout(1, p, m, first_block=block),
                output_layout=encoder_layout(1, p, m, latents_only=True, first_block=block),
            )
        self.blocks_seen += 1
        return tok._quantize(out.float(), None)
