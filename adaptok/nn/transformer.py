"""Pre-LN ViT blocks with masked scaled-dot-product attention and an optional KV cache.

Masks follow the `torch.nn.functional.scaled_dot_product_attention` convention: a boolean
mask is True where a query may attend to a key; a float mask is added to the logits. Masks
broadcast to `(B, heads, L_query, L_key)`, so `(L, L)` and `(B, 1, L, L)` both work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import Tensor, nn


class LayerKVCache:
    """Keys and values of every token one attention layer has seen so far (for streaming).

    Attributes:
        keys: `(B, heads, L_past, head_dim)` or None before the first call.
        values: `(B, heads, L_past, head_dim)` or None before the first call.
    """

    def __init__(self) -> None:
        self.keys: Tensor | None = None
        self.values: Tensor | None = None

    def extend(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Appends new keys/values and returns all of them.

        Args:
            keys: `(B, heads, L_new, head_dim)`.
            values: `(B, heads, L_new, head_dim)`.

        Returns:
            Keys and values `(B, heads, L_past + L_new, head_dim)`.
        """
        if self.keys is None or self.values is None:
            self.keys, self.values = keys, values
        else:
            self.keys = torch.cat([self.keys, keys], dim=2)
            self.values = torch.cat([self.values, values], dim=2)
        return self.keys, self.values

    @property
    def length(self) -> int:
        """Number of cached tokens."""
        return 0 if self.keys is None else self.keys.shape[2]


class Attention(nn.Module):
    """Multi-head self-attention through `scaled_dot_product_attention`.

    Args:
        width: Token width D.
        heads: Number of heads; must divide `width`.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads != 0:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(
        self, x: Tensor, attn_mask: Tensor | None = None, cache: LayerKVCache | None = None
    ) -> Tensor:
        """Attends.

        Args:
            x: Tokens `(B, L, D)`.
            attn_mask: Boolean (True = may attend) or additive mask broadcastable to
                `(B, heads, L, L_key)`, where `L_key = L` plus the cached length.
            cache: When given, the new keys/values are appended to it and the queries
                attend to every cached token as well.

        Returns:
            `(B, L, D)`.
        """
        batch, length, width = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.heads, width // self.heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if cache is not None:
            key, value = cache.extend(key, value)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(batch, length, width))


class TransformerBlock(nn.Module):
    """Pre-LN transformer block: `x + attn(LN(x))`, then `x + mlp(LN(x))`.

    Args:
        width: Token width D.
        heads: Attention heads.
        mlp_ratio: MLP hidden width as a multiple of D.
        drop_path: Stochastic-depth probability of both residual branches.
    """

    def __init__(
        self, width: int, heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, hidden_features=int(width * mlp_ratio), act_layer=nn.GELU)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self, x: Tensor, attn_mask: Tensor | None = None, cache: LayerKVCache | None = None
    ) -> Tensor:
        """Applies the block to `x` `(B, L, D)`; see `Attention.forward` for the mask/cache."""
        x = x + self.drop_path(self.attn(self.norm1(x), attn_mask, cache))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TransformerStack(nn.Module):
    """`depth` pre-LN blocks followed by a final LayerNorm.

    Args:
        width: Token width D.
        depth: Number of blocks.
        heads: Attention heads.
        mlp_ratio: MLP hidden width as a multiple of D.
        drop_path: Maximum stochastic-depth rate, increased linearly over the blocks.
    """

    def __init__(
        self,
        width: int,
        depth: int,
        heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        rates = [drop_path * index / max(depth - 1, 1) for index in range(depth)]
        self.blocks = nn.ModuleList(
            TransformerBlock(width, heads, mlp_ratio, rate) for rate in rates
        )
        self.norm = nn.LayerNorm(width)

    def new_cache(self) -> list[LayerKVCache]:
        """Returns an empty KV cache, one entry per block, for `forward(..., cache=...)`."""
        return [LayerKVCache() for _ in self.blocks]

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        cache: list[LayerKVCache] | None = None,
    ) -> Tensor:
        """Runs the stack.

        Args:
            x: Tokens `(B, L, D)`.
            attn_mask: Mask shared by all blocks (see `Attention.forward`); None = full.
            cache: From `new_cache()`; the tokens of `x` then also attend to every token
                passed in earlier calls with the same cache.

        Returns:
            Normalised tokens `(B, L, D)`.
        """
        for index, block in enumerate(self.blocks):
            x = block(x, attn_mask, None if cache is None else cache[index])
        return self.norm(x)


def init_weights(module: nn.Module) -> None:
    """ViT initialisation, for `Module.apply`: truncated-normal(0.02) Linear, unit LayerNorm."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
