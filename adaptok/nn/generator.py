"""Llama-style AR decoder over adaptive token blocks closed by `<EOB>` (docs/METHOD.md section 5).

Reference design (docs/METHOD.md section 5.1): pre-norm RMSNorm (eps 1e-5, computed in fp32),
multi-head attention through `scaled_dot_product_attention`, SwiGLU MLP, no biases, one
learned absolute position table (std 0.02), dropout on embeddings, residual and MLP, linear
and embedding init std 0.02, zero-initialised output head over the codes and `<EOB>`
(`<SEP>` is an input only). Paper size: 30 layers, 20 heads, width 1280, SwiGLU hidden 3584
(about 633M parameters).

Additions of this project:

- Each input position also carries the block index and the within-block position of the
  token it PREDICTS, so the model knows which block it is filling and how many tokens it has
  spent there (the reference has to count them from absolute positions). Prefix targets use
  their own block-index rows (`K + b`), so a condition block never shares an embedding with
  a generated one.
- A budget embedding (the annotated budget level) right after the class position, so the
  mean token count can be asked for at generation time.

Input layout for a target stream `t_0 .. t_{S-1}` (see `adaptok.nn.generator_sequence`):
position 0 = class embedding, position 1 = budget embedding, position `j + 2` = token
`t_j`; the output at position `i >= 1` predicts `t_{i-1}`. Frame prediction keeps the
condition codes and `<SEP>` inside the stream (its prefix, never a loss target) and uses
the null class. Without the class position (`class_slot=False`, frame prediction only, as
the official AdapTok-FP) token `t_j` sits at position `j` and its output predicts
`t_{j+1}`; `t_0`, the first condition code, is never predicted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaptok.nn.generator_sequence import GeneratorVocab

__all__ = ["ARGenerator", "GeneratorKVCache", "RMSNorm", "SwiGLU"]


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in fp32 (Zhang & Sennrich 2019; docs/METHOD.md section 5.1: eps 1e-5).

    Args:
        width: Feature size D.
        eps: Added to the mean square before the square root.
    """

    def __init__(self, width: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: Tensor) -> Tensor:
        """Normalises `(..., D)`; returns the input dtype."""
        y = F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps)
        return y.to(x.dtype)


class SwiGLU(nn.Module):
    """`w2(dropout(silu(w1 x) * w3 x))` without biases (Shazeer 2020).

    `w1` and `w3` are stored as one `(2 * hidden, D)` matrix `w13` (one matmul per call).

    Args:
        width: D.
        hidden: Hidden size (paper 3584 for D = 1280).
        dropout: Dropout on the gated hidden features.
    """

    def __init__(self, width: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.w13 = nn.Linear(width, 2 * hidden, bias=False)
        self.w2 = nn.Linear(hidden, width, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """`(..., D) -> (..., D)`."""
        gate, value = self.w13(x).chunk(2, dim=-1)
        hidden = F.silu(gate) * value
        if self.training:
            hidden = self.dropout(hidden)
        return self.w2(hidden)


class GeneratorKVCache:
    """Keys/values of every layer for incremental decoding, preallocated per layer.

    Each layer's buffer is allocated at its first write, `(B, heads, max_length, head_dim)` in
    the dtype of the keys written (so autocast decoding caches bf16 keys), and filled in place
    afterwards (no concatenation per step).

    Attributes:
        keys: Per layer, the buffer or None before the first write.
        values: Same as `keys`.
        length: Number of positions filled so far (the same for every row).
        max_length: Capacity in positions.
    """

    def __init__(self, depth: int, max_length: int) -> None:
        self.keys: list[Tensor | None] = [None] * depth
        self.values: list[Tensor | None] = [None] * depth
        self.length = 0
        self.max_length = max_length

    def write(self, layer: int, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Stores `(B, heads, L_new, head_dim)` keys/values at `length`; returns all so far.

        Raises:
            ValueError: When the new positions do not fit.
        """
        start, end = self.length, self.length + keys.shape[2]
        if end > self.max_length:
            raise ValueError(f"KV cache of {self.max_length} positions cannot hold {end}")
        buffer_k, buffer_v = self.keys[layer], self.values[layer]
        if buffer_k is None or buffer_v is None:
            shape = (keys.shape[0], keys.shape[1], self.max_length, keys.shape[3])
            buffer_k = keys.new_zeros(shape)
            buffer_v = values.new_zeros(shape)
        elif buffer_k.dtype != keys.dtype:
            buffer_k, buffer_v = buffer_k.to(keys.dtype), buffer_v.to(values.dtype)
        buffer_k[:, :, start:end] = keys
        buffer_v[:, :, start:end] = values
        self.keys[layer], self.values[layer] = buffer_k, buffer_v
        return buffer_k[:, :, :end], buffer_v[:, :, :end]

    def select(self, rows: Tensor) -> None:
        """Keeps only `rows` (long `(B',)`), e.g. to drop finished clips from the batch."""
        self.keys = [None if k is None else k.index_select(0, rows) for k in self.keys]
        self.values = [None if v is None else v.index_select(0, rows) for v in self.values]


class _Attention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float, attn_dropout: float) -> None:
        super().__init__()
        if width % heads != 0:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = width // heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)
        self.attn_dropout = attn_dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, cache: GeneratorKVCache | None, layer: int) -> Tensor:
        batch, length, width = x.shape
        q, k, v = (
            self.qkv(x).view(batch, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        )
        dropout = self.attn_dropout if self.training else 0.0
        if cache is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        else:
            start, end = cache.length, cache.length + length
            keys, values = cache.write(layer, k, v)
            if length == 1:
                out = F.scaled_dot_product_attention(q, keys, values, dropout_p=dropout)
            elif start == 0:
                out = F.scaled_dot_product_attention(
                    q, keys, values, is_causal=True, dropout_p=dropout
                )
            else:
                rows = torch.arange(start, end, device=x.device)[:, None]
                mask = torch.arange(end, device=x.device)[None, :] <= rows
                out = F.scaled_dot_product_attention(
                    q, keys, values, attn_mask=mask, dropout_p=dropout
                )
        out = self.proj(out.transpose(1, 2).reshape(batch, length, width))
        return self.resid_dropout(out) if self.training else out


class _Block(nn.Module):
    def __init__(
        self,
        width: int,
        heads: int,
        mlp_hidden: int,
        dropout: float,
        attn_dropout: float,
        norm_eps: float,
    ) -> None:
        super().__init__()
        self.norm1 = RMSNorm(width, norm_eps)
        self.attn = _Attention(width, heads, dropout, attn_dropout)
        self.norm2 = RMSNorm(width, norm_eps)
        self.mlp = SwiGLU(width, mlp_hidden, dropout)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, cache: GeneratorKVCache | None, layer: int) -> Tensor:
        x = x + self.attn(self.norm1(x), cache, layer)
        mlp = self.mlp(self.norm2(x))
        return x + (self.resid_dropout(mlp) if self.training else mlp)


class ARGenerator(nn.Module):
    """Class- and budget-conditioned AR decoder over `<EOB>`-closed adaptive blocks.

    Args:
        codebook_size: V, codes of the tokenizer (ids `0..V-1`; `<EOB> = V`, `<SEP> = V + 1`).
        num_blocks: K, blocks per clip.
        tokens_per_block: M, maximum codes per block.
        num_classes: Number of classes; the null class (CFG, label dropout) is
            `num_classes`. 0 for frame prediction (only the null class exists).
        num_budgets: Number of annotated budget levels (rows of the budget embedding).
        prefix_blocks: Frame prediction: condition blocks in the prefix (paper 2); 0 for
            class-conditional generation. With a prefix, block 0 is not modelled.
        width: Model width D (paper 1280).
        depth: Layers (paper 30).
        heads: Attention heads (paper 20).
        mlp_hidden: SwiGLU hidden size (paper 3584).
        dropout: Dropout on embeddings, residual branches and MLP (paper 0.1).
        attn_dropout: Dropout on attention weights (paper 0).
        label_dropout: Probability of replacing the class by the null class in training
            (paper 0.1; enables classifier-free guidance).
        norm_eps: RMSNorm epsilon (paper 1e-5).
        init_std: Std of linear and embedding initialisation (paper 0.02).
        budget_slot: Input position 1 carries the budget embedding (ours). False, as in the
            official model: no budget position (``budget`` is then ignored), token ``t_j``
            sits at position ``j + 1`` and the class position predicts ``t_0``.
        block_embeddings: Add the block-index and within-block-position embeddings of the
            predicted token (ours); False, as in the official model: none.
        class_slot: Input position 0 carries the class embedding (ours, also for frame
            prediction, where it is the null class). False, as in the official
            frame-prediction model (AdapTok-FP): no class position and no class table, the
            stream starts at position 0 with the condition codes; only for frame
            prediction (`prefix_blocks > 0`, `num_classes = 0`) without a budget slot.

    Raises:
        ValueError: On non-positive sizes, a width not divisible by `heads`, or
            `class_slot=False` outside frame prediction or with a budget slot.
    """

    def __init__(
        self,
        codebook_size: int,
        num_blocks: int,
        tokens_per_block: int,
        num_classes: int = 0,
        num_budgets: int = 4,
        prefix_blocks: int = 0,
        width: int = 1280,
        depth: int = 30,
        heads: int = 20,
        mlp_hidden: int = 3584,
        dropout: float = 0.1,
        attn_dropout: float = 0.0,
        label_dropout: float = 0.1,
        norm_eps: float = 1e-5,
        init_std: float = 0.02,
        budget_slot: bool = True,
        block_embeddings: bool = True,
        class_slot: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (
            ("num_blocks", num_blocks),
            ("tokens_per_block", tokens_per_block),
            ("num_budgets", num_budgets),
            ("width", width),
            ("depth", depth),
            ("heads", heads),
            ("mlp_hidden", mlp_hidden),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if num_classes < 0 or not 0 <= prefix_blocks <= num_blocks:
            raise ValueError(
                f"need num_classes >= 0 and 0 <= prefix_blocks <= num_blocks, got "
                f"{num_classes}, {prefix_blocks}"
            )
        if not 0.0 <= label_dropout < 1.0:
            raise ValueError(f"label_dropout must lie in [0, 1), got {label_dropout}")
        if not class_slot and (prefix_blocks == 0 or num_classes != 0 or budget_slot):
            raise ValueError(
                "class_slot=False is for frame prediction only: it needs prefix_blocks > 0, "
                f"num_classes = 0 and budget_slot=False, got {prefix_blocks}, {num_classes}, "
                f"{budget_slot}"
            )
        self.vocab = GeneratorVocab(codebook_size)
        self.codebook_size = codebook_size
        self.num_blocks = num_blocks
        self.tokens_per_block = tokens_per_block
        self.num_classes = num_classes
        self.num_budgets = num_budgets
        self.prefix_blocks = prefix_blocks
        self.width = width
        self.depth = depth
        self.heads = heads
        self.label_dropout = label_dropout
        self.init_std = init_std
        self.budget_slot = budget_slot
        self.block_embeddings = block_embeddings
        self.class_slot = class_slot
        #: input position of the first stream token t_0 (after the class and budget slots).
        self.slot_offset = int(class_slot) + int(budget_slot)
        self.first_block = 1 if prefix_blocks > 0 else 0
        self.prefix_length = prefix_blocks * tokens_per_block + 1 if prefix_blocks > 0 else 0
        modelled = num_blocks - self.first_block
        #: longest target stream S and the input positions it needs: the slots and every
        #: token but the last (which is only a target).
        self.max_stream_length = self.prefix_length + modelled * (tokens_per_block + 1)
        self.max_positions = self.max_stream_length - 1 + self.slot_offset

        if class_slot:
            self.class_embed = nn.Embedding(num_classes + 1, width)
        if budget_slot:
            self.budget_embed = nn.Embedding(num_budgets, width)
        self.token_embed = nn.Embedding(self.vocab.size, width)
        if block_embeddings:
            self.block_embed = nn.Embedding(2 * num_blocks, width)
            self.block_position_embed = nn.Embedding(tokens_per_block + 1, width)
        self.position_embed = nn.Parameter(torch.zeros(self.max_positions, width))
        self.embed_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            _Block(width, heads, mlp_hidden, dropout, attn_dropout, norm_eps) for _ in range(depth)
        )
        self.norm = RMSNorm(width, norm_eps)
        self.head = nn.Linear(width, self.vocab.num_outputs, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Linear/embedding weights and positions ~ N(0, init_std^2); output head zero."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=self.init_std)
        nn.init.normal_(self.position_embed, std=self.init_std)
        nn.init.zeros_(self.head.weight)

    @property
    def null_class(self) -> int:
        """Index of the null class (unconditional branch of CFG)."""
        return self.num_classes

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.width // self.heads

    def parameter_count(self) -> int:
        """Number of parameters."""
        return sum(p.numel() for p in self.parameters())

    def new_cache(self) -> GeneratorKVCache:
        """An empty KV cache for the longest sequence (buffers are sized at the first write)."""
        return GeneratorKVCache(self.depth, self.max_positions)

    # ------------------------------------------------------------------------ embeddings
    def _check_conditions(self, label: Tensor, budget: Tensor) -> None:
        if label.dim() != 1 or budget.shape != label.shape:
            raise ValueError(
                f"label and budget must be (B,), got {tuple(label.shape)} and {tuple(budget.shape)}"
            )
        if label.numel() and (int(label.min()) < 0 or int(label.max()) > self.num_classes):
            raise ValueError(
                f"labels must lie in [0, {self.num_classes}] ({self.num_classes} = null class)"
            )
        if not self.budget_slot:
            return
        if budget.numel() and (int(budget.min()) < 0 or int(budget.max()) >= self.num_budgets):
            raise ValueError(f"budget levels must lie in [0, {self.num_budgets})")

    def target_embedding(
        self, block_index: Tensor, block_position: Tensor, stream_index: Tensor
    ) -> Tensor:
        """Embedding of the block index and within-block position of the predicted token.

        Args:
            block_index: Long `(B, L)`, block of the target token in `[0, K)`.
            block_position: Long `(B, L)`, its position in `[0, M]`.
            stream_index: Long `(L,)` or `(B, L)`, index of the target in the stream; targets
                inside the FP prefix use the block rows `K + b`.

        Returns:
            `(B, L, D)`.
        """
        in_prefix = stream_index < self.prefix_length
        rows = block_index + in_prefix.long() * self.num_blocks
        return self.block_embed(rows) + self.block_position_embed(block_position)

    def _check_stream(self, tokens: Tensor, block_index: Tensor, block_position: Tensor) -> None:
        if (
            tokens.dim() != 2
            or block_index.shape != tokens.shape
            or block_position.shape != tokens.shape
        ):
            raise ValueError(
                "tokens, block_index and block_position must share one (B, S) shape, got "
                f"{tuple(tokens.shape)}, {tuple(block_index.shape)}, {tuple(block_position.shape)}"
            )
        if tokens.shape[1] > self.max_stream_length:
            raise ValueError(
                f"stream of {tokens.shape[1]} tokens exceeds the maximum {self.max_stream_length}"
            )
        if tokens.numel():
            if int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab.size:
                raise ValueError(f"token ids must lie in [0, {self.vocab.size})")
            if int(block_index.min()) < 0 or int(block_index.max()) >= self.num_blocks:
                raise ValueError(f"block_index must lie in [0, {self.num_blocks})")
            if int(block_position.min()) < 0 or int(block_position.max()) > self.tokens_per_block:
                raise ValueError(f"block_position must lie in [0, {self.tokens_per_block}]")

    def _drop_labels(self, label: Tensor) -> Tensor:
        if not self.training or self.label_dropout == 0.0:
            return label
        drop = torch.rand(label.shape, device=label.device) < self.label_dropout
        return torch.where(drop, torch.full_like(label, self.null_class), label)

    def _run(self, x: Tensor, cache: GeneratorKVCache | None) -> Tensor:
        x = self.embed_dropout(x)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)
        if cache is not None:
            cache.length += x.shape[1]
        return self.head(self.norm(x))

    # --------------------------------------------------------------------------- forward
    def forward(
        self,
        tokens: Tensor,
        block_index: Tensor,
        block_position: Tensor,
        label: Tensor,
        budget: Tensor,
        cache: GeneratorKVCache | None = None,
    ) -> Tensor:
        """Teacher-forced logits of every stream token.

        The last token of `tokens` is never an input (only a target), so a placeholder may
        stand there when only the next-token distribution is wanted.

        Args:
            tokens: Long `(B, S)` target stream, ids in `[0, V + 2)` (right padding allowed:
                attention is causal, so real tokens never see it).
            block_index: Long `(B, S)`, block of each token.
            block_position: Long `(B, S)`, position of each token in its block.
            label: Long `(B,)` class ids in `[0, num_classes]`; in training a share
                `label_dropout` is replaced by the null class. Unused without a class slot.
            budget: Long `(B,)` budget levels in `[0, num_budgets)`.
            cache: Optional empty KV cache to fill (prefill before `step`).

        Returns:
            Logits `(B, S, V + 1)` (float, autocast dtype under autocast): row j predicts
            `tokens[:, j]` (row 0 is zero without a class slot: nothing precedes `t_0`).

        Raises:
            ValueError: On inconsistent shapes or out-of-range ids.
        """
        self._check_stream(tokens, block_index, block_position)
        self._check_conditions(label, budget)
        if cache is not None and cache.length != 0:
            raise ValueError("forward fills an empty cache; continue with step()")
        batch, length = tokens.shape
        stream_index = torch.arange(length, device=tokens.device)
        if not self.class_slot:
            return self._forward_without_class_slot(
                tokens, block_index, block_position, stream_index, cache
            )
        label = self._drop_labels(label)
        classes = self.class_embed(label)[:, None]
        # Row j of `predicting` is the input whose output predicts tokens[:, j].
        first = self.budget_embed(budget)[:, None] if self.budget_slot else classes
        predicting = torch.cat([first, self.token_embed(tokens[:, :-1])], dim=1)
        if self.block_embeddings:
            predicting = predicting + self.target_embedding(
                block_index, block_position, stream_index
            )
        x = torch.cat([classes, predicting], dim=1) if self.budget_slot else predicting
        x = x + self.position_embed[: x.shape[1]]
        out = self._run(x, cache)
        return out[:, 1:] if self.budget_slot else out

    def _forward_without_class_slot(
        self,
        tokens: Tensor,
        block_index: Tensor,
        block_position: Tensor,
        stream_index: Tensor,
        cache: GeneratorKVCache | None,
    ) -> Tensor:
        """`forward` of a frame-prediction model without a class position.

        Token `t_j` sits at position `j`; the output there predicts `t_{j+1}`. Row 0 of the
        result (the prediction of `t_0`, the first condition code, which nothing precedes)
        is zero; it is never a target.
        """
        if tokens.shape[1] < 2:
            raise ValueError(
                "without a class slot the stream needs >= 2 tokens (t_0 is only an input)"
            )
        x = self.token_embed(tokens[:, :-1])
        if self.block_embeddings:
            x = x + self.target_embedding(
                block_index[:, 1:], block_position[:, 1:], stream_index[1:]
            )
        out = self._run(x + self.position_embed[: x.shape[1]], cache)
        return torch.cat([out.new_zeros(out.shape[0], 1, out.shape[2]), out], dim=1)

    def step(
        self,
        token: Tensor,
        next_block: Tensor,
        next_position: Tensor,
        cache: GeneratorKVCache,
    ) -> Tensor:
        """One decoding step with the KV cache: feeds the last sampled token.

        Args:
            token: Long `(B,)`, the token sampled last (stream index
                `cache.length - slot_offset`).
            next_block: Long `(B,)`, block of the token to predict.
            next_position: Long `(B,)`, its position in that block.
            cache: The cache filled by `forward` and earlier steps (its rows match B).

        Returns:
            Logits `(B, V + 1)` of the next token.

        Raises:
            ValueError: When the cache is empty or full.
        """
        position = cache.length
        if position < max(self.slot_offset, 1):
            raise ValueError("prefill the cache with forward() before step()")
        if position >= self.max_positions:
            raise ValueError(f"the sequence is full ({self.max_positions} positions)")
        x = self.token_embed(token)
        if self.block_embeddings:
            stream_index = torch.full_like(next_block, position - self.slot_offset + 1)
            x = x + self.target_embedding(next_block, next_position, stream_index)
        x = x + self.position_embed[position]
        return self._run(x[:, None], cache)[:, 0]
