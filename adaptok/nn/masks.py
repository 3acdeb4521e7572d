"""Block-causal attention masks of the AdapTok encoder and decoder (True = may attend).

Token layouts (K blocks, P patch tokens and M latent tokens per block):

- encoder: blocks interleaved, `[patches_0, latents_0, patches_1, latents_1, ...]`, length
  `K * (P + M)`. Every token of block i sees all patches and latents of blocks 0..i.
- decoder: latents first, `[latents_0..K-1, patch_queries_0..K-1]`, length `K * (M + P)`.
  Latents of block i see latents of blocks 0..i; patch queries of block i see latents of
  blocks 0..i and the patch queries of block i only.

Static masks are built once per (sizes, device) and cached; do not modify them in place. The
only per-step work is `with_key_padding`, which removes dropped latents from the keys.

These masks drive the dense reference path (`attention="dense"`); the default blockwise path
computes the same pattern by groups (`adaptok.nn.block_layout`), and the tests check that
each layout's `dense_mask()` equals the mask built here.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

__all__ = [
    "causal_mask",
    "decoder_key_keep",
    "decoder_mask",
    "encoder_mask",
    "with_key_padding",
]


def _block_ids(num_blocks: int, tokens_per_block: int, device: torch.device) -> Tensor:
    """`(num_blocks * tokens_per_block,)` block index of each token of consecutive blocks."""
    return torch.arange(num_blocks, device=device).repeat_interleave(tokens_per_block)


@lru_cache(maxsize=32)
def encoder_mask(
    num_blocks: int, patches_per_block: int, tokens_per_block: int, device: torch.device
) -> Tensor:
    """Block-causal encoder mask for the interleaved layout.

    Args:
        num_blocks: K.
        patches_per_block: P.
        tokens_per_block: M.
        device: Where the (cached) mask lives.

    Returns:
        Bool `(K * (P + M), K * (P + M))`, True where a query (row) may attend a key.
    """
    ids = _block_ids(num_blocks, patches_per_block + tokens_per_block, device)
    return ids[:, None] >= ids[None, :]


@lru_cache(maxsize=32)
def decoder_mask(
    num_blocks: int, patches_per_block: int, tokens_per_block: int, device: torch.device
) -> Tensor:
    """Block-causal decoder mask for the latents-first layout.

    Args:
        num_blocks: K.
        patches_per_block: P.
        tokens_per_block: M.
        device: Where the (cached) mask lives.

    Returns:
        Bool `(K * (M + P), K * (M + P))`, True where a query (row) may attend a key.
    """
    latent_ids = _block_ids(num_blocks, tokens_per_block, device)
    patch_ids = _block_ids(num_blocks, patches_per_block, device)
    latent_rows = torch.cat(
        [
            latent_ids[:, None] >= latent_ids[None, :],
            torch.zeros(latent_ids.numel(), patch_ids.numel(), dtype=torch.bool, device=device),
        ],
        dim=1,
    )
    patch_rows = torch.cat(
        [patch_ids[:, None] >= latent_ids[None, :], patch_ids[:, None] == patch_ids[None, :]],
        dim=1,
    )
    return torch.cat([latent_rows, patch_rows], dim=0)


@lru_cache(maxsize=8)
def causal_mask(length: int, device: torch.device) -> Tensor:
    """Token-causal mask: bool `(length, length)`, True on and below the diagonal."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


def with_key_padding(mask: Tensor, key_keep: Tensor) -> Tensor:
    """Combines a static mask with a per-sample key mask.

    Args:
        mask: Bool `(L, L)`.
        key_keep: Bool `(B, L)`, False for keys removed from attention (dropped latents).

    Returns:
        Bool `(B, 1, L, L)` for `scaled_dot_product_attention` (broadcast over heads).
    """
    return mask[None, None] & key_keep[:, None, None, :]


def decoder_key_keep(keep: Tensor, num_patches: int) -> Tensor:
    """Key mask of the decoder layout: kept latents, then every patch query.

    Args:
        keep: Bool `(B, K * M)`, True for kept latent tokens.
        num_patches: `K * P`, the number of patch queries.

    Returns:
        Bool `(B, K * M + K * P)`.
    """
    patches = torch.ones(keep.shape[0], num_patches, dtype=torch.bool, device=keep.device)
    return torch.cat([keep, patches], dim=1)
