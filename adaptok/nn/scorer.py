"""Block-causal scorer: predicts each block's reconstruction cost for every candidate length.

docs/METHOD.md section 3: the input is ``concat(continuous encoder output, quantized
latent)``, projected to the scorer width, with a learned position embedding; a block-causal
transformer runs over the latent blocks; a head reads the outputs at every
``tokens_per_block / num_candidates``-th position of each block, giving the cost of keeping
``64, 128, ..., 512`` tokens (paper scale) from ONE forward pass (attention inside a block is
full, so each read-out slot sees the whole block and is trained to predict the cost of one
prefix length).

Context: the score of block ``b`` must describe block ``b`` *given the lengths already chosen
for blocks < b*. With ``context_lengths`` block ``b`` keeps all of its own tokens and each
earlier block ``j`` only its first ``context_lengths[j]``; the dropped tail is removed from
the rows and the columns of the attention, as in the official code (``decode_scorer``): a
kept token of block ``j`` never attends to block ``j``'s dropped tail, so no trace of it
reaches a later block through any number of layers. Every block's scores equal those of the
official procedure's pass for that block (lengths ``context[:b]``, ``M``, then nothing).

Implementations (``attention``): "blockwise" (default) computes all K blocks in ONE pass over
an extended sequence, the K full blocks plus a kept-prefix copy of every truncated earlier
block (``adaptok.nn.block_layout.scorer_layout``; per-sample groups when the samples' context
lengths differ), and computes only the read-out slots in the last layer; "dense" is the
reference, literally the official procedure: K masked passes, one per scored block. Both give
the same scores within float rounding.

Label units: the network predicts z-normalised labels (docs/METHOD.md section 3: LPIPS
standardised with a mean and a standard deviation). The two numbers are buffers of the
network (``label_mean``, ``label_std``, saved with its weights), and
:meth:`BlockCausalScorer.to_label_units` is the one conversion from predictions to the label
metric's units (:meth:`~BlockCausalScorer.from_label_units` its inverse). Weights written
before the buffers existed get them from the stage's hyper-parameters
(:func:`upgrade_scorer_checkpoint`).
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from adaptok.nn.block_layout import (
    AttentionImpl,
    check_attention,
    scorer_layout,
    scorer_token_spans,
    take_spans,
)
from adaptok.nn.masks import encoder_mask
from adaptok.nn.precision import Precision, autocast_for, check_precision
from adaptok.nn.transformer import TransformerStack, init_weights

__all__ = ["LABEL_BUFFERS", "LOG_LABEL_FLOOR", "BlockCausalScorer", "upgrade_scorer_checkpoint"]

LABEL_BUFFERS = ("label_mean", "label_std")
"""The scorer's buffers holding its label normalisation (mean, standard deviation)."""

LOG_LABEL_FLOOR = 1e-6
"""Smallest cost the ``log`` label transform distinguishes (an MSE of 1e-6 is 60 dB PSNR)."""

LabelTransform = Literal["identity", "log"]


class BlockCausalScorer(nn.Module):
    """Scores every candidate token count of every block in one pass.

    Args:
        token_width: Width of the tokenizer's latents (the input is twice that: continuous +
            quantized).
        num_blocks: Temporal blocks K.
        tokens_per_block: Latent tokens per block M.
        num_candidates: Candidate lengths J per block; must divide M. The candidates are
            ``M/J, 2M/J, ..., M``.
        width: Scorer transformer width.
        depth: Transformer layers.
        heads: Attention heads.
        mlp_ratio: MLP width multiple in the transformer.
        attention: "blockwise" (fast) or "dense" (masked reference); an attribute too.
        precision: "auto" (follow the caller's autocast, e.g. the trainer's), "fp32" or
            "bf16" (forced for the forward); scores are float32.
        qkv_bias: Bias on the attention's query/key/value projections (official: none).
        context_attention: "block_causal" (ours: a token sees its own block and earlier
            ones) or "full" (the official ``scorer_attn_type: none``: every kept token sees
            every kept token, so context tokens also see the scored block). "full" always
            runs the "dense" passes (one per scored block), as the official inference does;
            without ``context_lengths`` the earlier blocks are kept whole and the later
            ones dropped, so a block's scores still never depend on later blocks.
        label_transform: What the network learns of a cost before z-normalisation:
            ``identity`` (the paper: the cost itself) or ``log`` (ours: ``log(max(cost,
            LOG_LABEL_FLOOR))``, for positive costs such as MSE or LPIPS). In log space one
            learned offset scales a block's whole cost curve, so a block twice as costly is
            predicted to gain twice as much from more tokens; with ``identity`` the same offset
            shifts the curve and every block is predicted to gain the same, which gives an
            allocator nothing to choose by (docs/DEVIATIONS.md).
        candidate_bias: Add a learned offset per candidate to the read-out (ours; the paper
            has none): the read-out slots of a block differ only by their position
            embedding, and at demo scale the plain read-out did not learn even the mean fall
            of the cost with more tokens (docs/DEVIATIONS.md).

    Attributes:
        label_mean: Buffer, the mean of the labels the predictions are z-normalised with,
            in the label space (after ``label_transform``; 0 until
            :meth:`set_label_normalisation`).
        label_std: Buffer, their standard deviation (1 until set): with the defaults the
            predictions are the labels.

    Raises:
        ValueError: ``num_candidates`` does not divide ``tokens_per_block``, or an unknown
            ``attention``/``precision``/``context_attention``/``label_transform``.
    """

    def __init__(
        self,
        token_width: int = 768,
        num_blocks: int = 4,
        tokens_per_block: int = 512,
        num_candidates: int = 8,
        width: int = 768,
        depth: int = 12,
        heads: int = 12,
        mlp_ratio: float = 4.0,
        attention: AttentionImpl = "blockwise",
        precision: Precision = "auto",
        qkv_bias: bool = True,
        context_attention: Literal["block_causal", "full"] = "block_causal",
        label_transform: LabelTransform = "identity",
        candidate_bias: bool = False,
    ) -> None:
        super().__init__()
        if label_transform not in ("identity", "log"):
            raise ValueError(
                f"label_transform must be 'identity' or 'log', got {label_transform!r}"
            )
        self.label_transform = label_transform
        self.register_buffer("label_mean", torch.tensor(0.0))
        self.register_buffer("label_std", torch.tensor(1.0))
        check_attention(attention)
        check_precision(precision)
        self.attention = attention
        self.precision = precision
        if context_attention not in ("block_causal", "full"):
            raise ValueError(
                f"context_attention must be 'block_causal' or 'full', got {context_attention!r}"
            )
        self.context_attention = context_attention
        if tokens_per_block % num_candidates != 0:
            raise ValueError(
                f"num_candidates ({num_candidates}) must divide tokens_per_block ({tokens_per_block})"
            )
        self.num_blocks = num_blocks
        self.tokens_per_block = tokens_per_block
        self.num_candidates = num_candidates
        num_tokens = num_blocks * tokens_per_block
        self.input_proj = nn.Linear(2 * token_width, width)
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, width))
        self.transformer = TransformerStack(width, depth, heads, mlp_ratio, qkv_bias=qkv_bias)
        self.head = nn.Sequential(nn.Linear(width, 2 * width), nn.Tanh(), nn.Linear(2 * width, 1))
        # (J,) offsets of the read-out, or None (the paper's read-out)
        self.candidate_bias = nn.Parameter(torch.zeros(num_candidates)) if candidate_bias else None
        step = tokens_per_block // num_candidates
        block_of_token = torch.arange(num_tokens) // tokens_per_block
        slot_in_block = torch.arange(num_tokens) % tokens_per_block
        self.register_buffer("block_of_token", block_of_token, persistent=False)
        self.register_buffer("slot_in_block", slot_in_block, persistent=False)
        # Latents only: the encoder's block-causal mask with no patch tokens.
        causal = encoder_mask(num_blocks, 0, tokens_per_block, torch.device("cpu"))
        if context_attention == "full":
            causal = torch.ones_like(causal)
        self.register_buffer("causal_mask", causal.clone(), persistent=False)
        readout = torch.arange(1, num_candidates + 1) * step - 1
        self.register_buffer("readout_slots", readout, persistent=False)
        self._readout_tuple = tuple(readout.tolist())
        self.apply(init_weights)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def set_label_normalisation(self, mean: float, std: float) -> None:
        """Store the label mean and standard deviation the predictions are normalised with.

        Args:
            mean: Label mean in the label space (:meth:`label_space`; finite), or NaN (not
                known yet).
            std: Label standard deviation there (finite and > 0), or NaN with a NaN ``mean``.

        Raises:
            ValueError: A non-finite or non-positive ``std``, or only one of them NaN.
        """
        mean, std = float(mean), float(std)
        unknown = math.isnan(mean) and math.isnan(std)
        if not unknown and not (math.isfinite(mean) and math.isfinite(std) and std > 0):
            raise ValueError(
                f"label normalisation needs a finite mean and a std > 0, got mean {mean}, std {std}"
            )
        self.label_mean.fill_(mean)
        self.label_std.fill_(std)

    @property
    def label_normalisation(self) -> tuple[float, float]:
        """``(mean, std)`` of the labels in the label space (NaN: not known yet)."""
        return float(self.label_mean), float(self.label_std)

    @property
    def has_label_normalisation(self) -> bool:
        """Whether the label mean and standard deviation are known (not NaN)."""
        return not math.isnan(float(self.label_std))

    def label_space(self, costs: Tensor) -> Tensor:
        """Costs in the metric's units -> the label space (``label_transform``), float32.

        Raises:
            ValueError: ``log`` transform and a negative cost (e.g. negated PSNR or SSIM).
        """
        costs = costs.float()
        if self.label_transform == "identity":
            return costs
        if bool((costs < 0).any()):
            raise ValueError(
                "label_transform 'log' needs non-negative costs (MSE, LPIPS), got "
                f"{float(costs.min()):.4g}"
            )
        return costs.clamp_min(LOG_LABEL_FLOOR).log()

    def to_label_units(self, predictions: Tensor) -> Tensor:
        """Predictions (z-normalised) -> costs in the label metric's units.

        Args:
            predictions: Any shape, e.g. ``(B, K, J)`` from :meth:`forward`.

        Returns:
            ``predictions x label_std + label_mean`` in float32, exponentiated under the
            ``log`` transform (lower = better).
        """
        values = predictions.float() * self.label_std.float() + self.label_mean.float()
        return values.exp() if self.label_transform == "log" else values

    def from_label_units(self, costs: Tensor) -> Tensor:
        """Costs in the label metric's units -> the z-normalised values the network predicts.

        The inverse of :meth:`to_label_units` (training labels, quality thresholds; under
        ``log``, exact for costs above ``LOG_LABEL_FLOOR``).
        """
        return (self.label_space(costs) - self.label_mean.float()) / self.label_std.float()

    @property
    def candidate_lengths(self) -> list[int]:
        """Token counts the scores refer to, ascending: ``[M/J, 2M/J, ..., M]``."""
        return [int(slot) + 1 for slot in self.readout_slots.tolist()]

    def attention_mask(self, kept_lengths: Tensor) -> Tensor:
        """Block-causal mask of one pass with tokens beyond ``kept_lengths`` removed.

        A dropped token is removed from the rows and the columns (it attends only to itself
        and nothing attends to it), as the official ``decoder_attn_mask_with_latent_mask``
        with ``fill_diag=True``.

        Args:
            kept_lengths: ``(B, K)`` tokens kept per block.

        Returns:
            ``(B, 1, N, N)`` boolean mask, True where a query may attend.
        """
        kept = self.slot_in_block[None, :] < kept_lengths[:, self.block_of_token]  # (B, N)
        mask = self.causal_mask[None] & kept[:, :, None] & kept[:, None, :]
        eye = torch.eye(mask.shape[-1], dtype=torch.bool, device=mask.device)
        return (mask | eye)[:, None]

    def forward(
        self, latents: Tensor, quantized: Tensor, context_lengths: Tensor | None = None
    ) -> Tensor:
        """Predicts costs.

        Args:
            latents: ``(B, N, token_width)`` continuous encoder outputs.
            quantized: ``(B, N, token_width)`` quantized latents (after the post-quant projection).
            context_lengths: ``(B, K)`` lengths of the blocks as they will be kept; block ``b``'s
                scores are conditioned on blocks ``< b`` at these lengths (their dropped
                tails removed from the attention), whatever ``context_lengths[:, b:]`` say.
                None = all tokens.

        Returns:
            ``(B, K, J)`` predicted (normalised) cost of block ``k`` kept at candidate ``j``.

        Raises:
            ValueError: Inputs of the wrong shape, or context lengths that are not integers
                in ``[0, M]`` of shape ``(B, K)``.
        """
        expected = self.num_blocks * self.tokens_per_block
        if latents.shape != quantized.shape or latents.shape[1] != expected:
            raise ValueError(
                f"expected latents and quantized of shape (B, {expected}, D), got "
                f"{tuple(latents.shape)} and {tuple(quantized.shape)}"
            )
        batch = latents.shape[0]
        if context_lengths is not None:
            self._check_context(context_lengths, batch)
        with autocast_for(latents.device, self.precision):
            tokens = self.input_proj(torch.cat([latents, quantized], dim=-1)) + self.pos_embed
            if self.attention == "dense" or self.context_attention == "full":
                hidden = self._dense(tokens, context_lengths)
            else:
                hidden = self._blockwise(tokens, context_lengths)
            scores = self.head(hidden).squeeze(-1).float()
        return scores if self.candidate_bias is None else scores + self.candidate_bias.float()

    def _check_context(self, context_lengths: Tensor, batch: int) -> None:
        """Raises ValueError unless ``context_lengths`` is integer ``(B, K)`` in [0, M]."""
        expected = (batch, self.num_blocks)
        if tuple(context_lengths.shape) != expected or context_lengths.is_floating_point():
            raise ValueError(
                f"expected integer context_lengths of shape {expected}, got "
                f"{context_lengths.dtype} {tuple(context_lengths.shape)}"
            )
        if bool((context_lengths < 0).any() | (context_lengths > self.tokens_per_block).any()):
            raise ValueError(f"context_lengths must lie in [0, {self.tokens_per_block}]")

    def _dense(self, tokens: Tensor, context_lengths: Tensor | None) -> Tensor:
        """Masked reference; returns the read-out rows ``(B, K, J, width)``.

        Without context one causal pass; with context the official procedure: pass ``b``
        keeps ``context[:, :b]``, all of block ``b`` and nothing after, and gives block b.
        """
        batch, k, m = tokens.shape[0], self.num_blocks, self.tokens_per_block
        if context_lengths is None and self.context_attention == "block_causal":
            hidden = self.transformer(tokens, self.causal_mask)
            return hidden.view(batch, k, m, -1)[:, :, self.readout_slots]
        if context_lengths is None:  # "full": earlier blocks whole, later blocks dropped
            context_lengths = torch.full((batch, k), m, dtype=torch.long, device=tokens.device)
        rows = []
        for block in range(k):
            kept = context_lengths.clone()
            kept[:, block] = m
            kept[:, block + 1 :] = 0
            hidden = self.transformer(tokens, self.attention_mask(kept))
            rows.append(hidden.view(batch, k, m, -1)[:, block, self.readout_slots])
        return torch.stack(rows, dim=1)

    def _blockwise(self, tokens: Tensor, context_lengths: Tensor | None) -> Tensor:
        """Block-sparse transformer; returns the read-out rows ``(B, K, J, width)``."""
        batch = tokens.shape[0]
        k, m = self.num_blocks, self.tokens_per_block
        rows = None if context_lengths is None else tuple(map(tuple, context_lengths.tolist()))
        if rows is not None and len(set(rows)) > 1:  # per-sample groups in one sequence
            sequences = [
                take_spans(tokens[s], scorer_token_spans(row, k, m), 0)
                for s, row in enumerate(rows)
            ]
            tokens = torch.cat(sequences, dim=0)[None]
        elif rows is not None:
            rows = rows[:1]
            tokens = take_spans(tokens, scorer_token_spans(rows[0], k, m), 1)
        hidden = self.transformer(
            tokens,
            layout=scorer_layout(rows, k, m),
            output_layout=scorer_layout(rows, k, m, self._readout_tuple),
        )
        return hidden.reshape(batch, k, self.num_candidates, -1)


def upgrade_scorer_checkpoint(checkpoint: MutableMapping[str, Any]) -> None:
    """Give a scorer stage checkpoint written before the label buffers existed its buffers.

    Such a checkpoint keeps the label normalisation only in its hyper-parameters
    (``target_mean``, ``target_std``); they are copied into ``scorer.label_mean`` and
    ``scorer.label_std`` of its state dict, in place, so strict loading finds every tensor.
    A checkpoint without scorer weights, or with the buffers already, is left as it is.

    Args:
        checkpoint: A suite checkpoint (``hyper_parameters``, ``state_dict``).

    Raises:
        ValueError: The buffers are missing and the hyper-parameters hold no normalisation.
    """
    state = checkpoint.get("state_dict")
    if not isinstance(state, MutableMapping):
        return
    if not any(key.startswith("scorer.") for key in state):
        return
    missing = [name for name in LABEL_BUFFERS if f"scorer.{name}" not in state]
    if not missing:
        return
    hparams = checkpoint.get("hyper_parameters") or {}
    values = {"label_mean": hparams.get("target_mean"), "label_std": hparams.get("target_std")}
    for name in missing:
        if values[name] is None:
            raise ValueError(
                f"the checkpoint's scorer has no {name} and its hyper-parameters no "
                "target_mean/target_std to fill it from"
            )
        state[f"scorer.{name}"] = torch.tensor(float(values[name]))
