"""Pre-LN ViT blocks with masked or block-sparse attention and an optional KV cache.

Two ways to restrict attention, exclusive:

- a mask, in the `torch.nn.functional.scaled_dot_product_attention` convention: a boolean
  mask is True where a query may attend to a key; a float mask is added to the logits. Masks
  broadcast to `(B, heads, L_query, L_key)`, so `(L, L)` and `(B, 1, L, L)` both work. This
  is the dense path: every pair is computed, then masked.
- a `BlockLayout` (`adaptok.nn.block_layout`): one unmasked attention call per group of
  queries that see the same keys, so only the admitted pairs are computed. A layout that
  keeps only some query rows also shrinks the residual stream to those rows (the last layer
  of a stack computes only what is read out).

The KV cache (streaming) works with both: keys are the cached tokens followed by the new ones.

Under bfloat16 autocast on CPU the attention itself (softmax(QK^T)V) runs in float32: with
torch 2.14 on AVX-512-BF16 CPUs the bf16 SDPA kernel is slower than the fp32 one (measured
1.6 vs 1.2 ms for 4 heads x 128 queries x 512 keys x 64, 96 vs 91 ms at the S size), and fp32
is more accurate. The projections around it stay in bf16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import Tensor, nn

from adaptok.nn.block_layout import BlockLayout, take_spans

__all__ = [
    "Attention",
    "LayerKVCache",
    "TransformerBlock",
    "TransformerStack",
    "block_sparse_attention",
    "init_weights",
]


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


def block_sparse_attention(
    query: Tensor, key: Tensor, value: Tensor, layout: BlockLayout
) -> Tensor:
    """Attention restricted to a layout, one unmasked SDPA call per group.

    Args:
        query: `(B, heads, R, head_dim)`, the rows of `layout.query_spans` in that order
            (R = `layout.num_outputs`).
        key: `(B, heads, layout.num_keys, head_dim)`.
        value: Same shape as `key`.
        layout: Which keys each group of queries attends.

    Returns:
        `(B, heads, R, head_dim)`; equal (up to float rounding) to a dense SDPA with
        `layout.dense_mask()`.

    Raises:
        ValueError: When the shapes do not match the layout.
    """
    if query.shape[2] != layout.num_outputs or key.shape[2] != layout.num_keys:
        raise ValueError(
            f"layout expects {layout.num_outputs} query rows and {layout.num_keys} keys, got "
            f"{query.shape[2]} and {key.shape[2]}"
        )
    outputs = []
    row = 0
    for group in layout.groups:
        rows = query.narrow(2, row, group.num_queries)
        row += group.num_queries
        keys = take_spans(key, group.keys, 2)
        values = take_spans(value, group.keys, 2)
        outputs.append(F.scaled_dot_product_attention(rows, keys, values))
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)


class Attention(nn.Module):
    """Multi-head self-attention through `scaled_dot_product_attention`.

    Args:
        width: Token width D.
        heads: Number of heads; must divide `width`.
        qkv_bias: Bias on the query/key/value projection (the official AdapTok has none).
    """

    def __init__(self, width: int, heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if width % heads != 0:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=qkv_bias)
        self.proj = nn.Linear(width, width)

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        cache: LayerKVCache | None = None,
        layout: BlockLayout | None = None,
    ) -> Tensor:
        """Attends.

        Args:
            x: Tokens `(B, L, D)`.
            attn_mask: Boolean (True = may attend) or additive mask broadcastable to
                `(B, heads, L, L_key)`, where `L_key = L` plus the cached length.
            cache: When given, the new keys/values are appended to it and the queries
                attend to every cached token as well.
            layout: Block-sparse pattern instead of a mask; its key coordinates include the
                cached tokens. Only the rows of `layout.query_spans` are computed.

        Returns:
            `(B, L, D)`, or `(B, layout.num_outputs, D)` with a layout.

        Raises:
            ValueError: When both a mask and a layout are given, or on a layout of the wrong
                length.
        """
        batch, length, width = x.shape
        head_dim = width // self.heads
        if layout is not None and attn_mask is not None:
            raise ValueError("pass either attn_mask or layout, not both")
        if layout is not None and layout.num_queries != length:
            raise ValueError(f"layout is for {layout.num_queries} tokens, got {length}")
        if layout is None or layout.is_full:
            qkv = self.qkv(x).view(batch, length, 3, self.heads, head_dim)
            query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        else:
            # Queries of the kept rows only; keys and values of every token.
            rows = take_spans(x, layout.query_spans, 1)
            weight, bias = self.qkv.weight, self.qkv.bias
            query = F.linear(rows, weight[:width], None if bias is None else bias[:width])
            query = query.view(batch, rows.shape[1], self.heads, head_dim).transpose(1, 2)
            kv = F.linear(x, weight[width:], None if bias is None else bias[width:])
            key, value = kv.view(batch, length, 2, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        if cache is not None:
            key, value = cache.extend(key, value)
        if query.device.type == "cpu" and query.dtype == torch.bfloat16:
            with torch.autocast("cpu", enabled=False):
                query, key, value = query.float(), key.float(), value.float()
                out = self._attend(query, key, value, attn_mask, layout)
        else:
            out = self._attend(query, key, value, attn_mask, layout)
        return self.proj(out.transpose(1, 2).reshape(batch, out.shape[2], width))

    @staticmethod
    def _attend(
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attn_mask: Tensor | None,
        layout: BlockLayout | None,
    ) -> Tensor:
        """Dense masked SDPA, or `block_sparse_attention` with a layout."""
        if layout is None:
            return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask)
        return block_sparse_attention(query, key, value, layout)


class TransformerBlock(nn.Module):
    """Pre-LN transformer block: `x + attn(LN(x))`, then `x + mlp(LN(x))`.

    Args:
        width: Token width D.
        heads: Attention heads.
        mlp_ratio: MLP hidden width as a multiple of D.
        drop_path: Stochastic-depth probability of both residual branches.
        qkv_bias: Bias on the query/key/value projection.
    """

    def __init__(
        self,
        width: int,
        heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, hidden_features=int(width * mlp_ratio), act_layer=nn.GELU)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        cache: LayerKVCache | None = None,
        layout: BlockLayout | None = None,
    ) -> Tensor:
        """Applies the block to `x` `(B, L, D)`; see `Attention.forward` for mask/cache/layout.

        Returns:
            `(B, L, D)`, or only the rows of `layout.query_spans` `(B, R, D)`.
        """
        attended = self.attn(self.norm1(x), attn_mask, cache, layout)
        if layout is not None and not layout.is_full:
            x = take_spans(x, layout.query_spans, 1)
        x = x + self.drop_path(attended)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TransformerStack(nn.Module):
    """`depth` pre-LN blocks followed by a final LayerNorm (optional).

    Args:
        width: Token width D.
        depth: Number of blocks.
        heads: Attention heads.
        mlp_ratio: MLP hidden width as a multiple of D.
        drop_path: Maximum stochastic-depth rate, increased linearly over the blocks.
        qkv_bias: Bias on the query/key/value projections.
        final_norm_eps: Epsilon of the final LayerNorm; None = no final LayerNorm (the
            official AdapTok encoder has none, its decoder uses 1e-6).
    """

    def __init__(
        self,
        width: int,
        depth: int,
        heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        qkv_bias: bool = True,
        final_norm_eps: float | None = 1e-5,
    ) -> None:
        super().__init__()
        rates = [drop_path * index / max(depth - 1, 1) for index in range(depth)]
        self.blocks = nn.ModuleList(
            TransformerBlock(width, heads, mlp_ratio, rate, qkv_bias) for rate in rates
        )
        self.norm = nn.Identity() if final_norm_eps is None else nn.LayerNorm(width, final_norm_eps)

    def new_cache(self) -> list[LayerKVCache]:
        """Returns an empty KV cache, one entry per block, for `forward(..., cache=...)`."""
        return [LayerKVCache() for _ in self.blocks]

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        cache: list[LayerKVCache] | None = None,
        layout: BlockLayout | None = None,
        output_layout: BlockLayout | None = None,
    ) -> Tensor:
        """Runs the stack.

        Args:
            x: Tokens `(B, L, D)`.
            attn_mask: Mask shared by all blocks (see `Attention.forward`); None = full.
            cache: From `new_cache()`; the tokens of `x` then also attend to every token
                passed in earlier calls with the same cache.
            layout: Block-sparse pattern of every block instead of a mask (a full layout).
            output_layout: Pattern of the last block, whose query spans are the rows to
                return (defaults to `layout`). With a cache, every new token's keys and
                values are still cached.

        Returns:
            Normalised tokens `(B, L, D)`, or the rows of `output_layout.query_spans`.

        Raises:
            ValueError: When `layout` drops rows (only `output_layout` may).
        """
        if layout is not None and not layout.is_full:
            raise ValueError("only the output layout may keep a subset of the rows")
        last = len(self.blocks) - 1
        for index, block in enumerate(self.blocks):
            block_layout = output_layout if index == last and output_layout is not None else layout
            x = block(x, attn_mask, None if cache is None else cache[index], block_layout)
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
