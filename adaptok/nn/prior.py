"""LARP's learned autoregressive prior: a small causal GPT over the quantized tokens.

It reads the kept tokens of a clip in order (block 0's kept tokens, then block 1's, ...) and
predicts each next code. By default it follows the official LARP / AdapTok code
(VisionXLab/AdapTok ``models/adaptok.py``: ``prior_ar_predict_n_rounds_ss``,
``calculate_logits_and_ar_pred_cont``, ``get_emb``; ``models/gptc.py``: ``ar_predict`` with
``l2_normalized``; ``cfgs/adaptok.yaml``: ``prior_model``):

- the prediction is L2-normalised and the logits are cosine similarities with the unit-norm
  codebook divided by a temperature of 1;
- the codebook is DETACHED inside those logits (the prior's loss reaches the encoder through
  the straight-through input vectors, never the codebook);
- scheduled sampling: 2 rounds; round 2 reads, at a random subset of positions, a code drawn
  from round 1's softmax instead of the true one; the share of replaced positions rises
  linearly from 0 to ``mix_max_ratio`` (0.5) over the first ``mix_peak_fraction`` (0.3) of
  training, then stays; the loss is the mean cross-entropy of both rounds.

The training progress (0 at the first step, 1 at the last) is the attribute ``progress``,
set by the trainer (``modules.TokenizerModule`` does it every step); left at 0 no position is
replaced. The older variant of this suite (raw dot products with a codebook that receives
gradient, one round) is ``Prior(normalize_prediction=False, detach_codebook=False,
rounds=1)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import Tensor, nn

from adaptok.nn.masks import causal_mask
from adaptok.nn.transformer import TransformerStack, init_weights

__all__ = ["Prior"]


class Prior(nn.Module):
    """Causal transformer predicting the next code of the kept-token sequence.

    Args:
        code_dim: Width of the quantizer's code vectors.
        num_tokens: N, the largest absolute token index + 1 (learned index embedding).
        width: Transformer width (paper: 384).
        depth: Transformer depth (paper: 12).
        heads: Attention heads.
        mlp_ratio: MLP hidden width as a multiple of `width`.
        normalize_prediction: L2-normalise the prediction (cosine logits), as LARP.
        temperature: Logits are divided by it (official: 1.0).
        detach_codebook: No gradient into the codebook through the logits, as LARP.
        rounds: Scheduled-sampling rounds (official: 2; 1 = teacher forcing only).
        mix_max_ratio: Largest share of positions whose input is a sampled code (official 0.5).
        mix_peak_fraction: Fraction of training over which that share ramps up from 0
            (official 0.3).

    Raises:
        ValueError: ``rounds < 1``, a non-positive temperature or ``mix_peak_fraction``, or
            ``mix_max_ratio`` outside [0, 1].
    """

    def __init__(
        self,
        code_dim: int = 16,
        num_tokens: int = 2048,
        width: int = 384,
        depth: int = 12,
        heads: int = 6,
        mlp_ratio: float = 4.0,
        normalize_prediction: bool = True,
        temperature: float = 1.0,
        detach_codebook: bool = True,
        rounds: int = 2,
        mix_max_ratio: float = 0.5,
        mix_peak_fraction: float = 0.3,
    ) -> None:
        super().__init__()
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        if temperature <= 0 or mix_peak_fraction <= 0:
            raise ValueError(
                f"temperature and mix_peak_fraction must be > 0, got {temperature} and "
                f"{mix_peak_fraction}"
            )
        if not 0.0 <= mix_max_ratio <= 1.0:
            raise ValueError(f"mix_max_ratio must lie in [0, 1], got {mix_max_ratio}")
        self.normalize_prediction = normalize_prediction
        self.temperature = temperature
        self.detach_codebook = detach_codebook
        self.rounds = rounds
        self.mix_max_ratio = mix_max_ratio
        self.mix_peak_fraction = mix_peak_fraction
        self.progress = 0.0  # training progress in [0, 1], set by the trainer
        self.input_proj = nn.Linear(code_dim, width)
        self.index_embed = nn.Parameter(torch.zeros(num_tokens, width))
        self.transformer = TransformerStack(width, depth, heads, mlp_ratio)
        self.output_proj = nn.Linear(width, code_dim)
        self.apply(init_weights)
        trunc_normal_(self.index_embed, std=0.02)

    def mix_ratio(self) -> float:
        """Share of round-2 input positions replaced by sampled codes at ``progress``.

        ``min(progress / mix_peak_fraction, 1) * mix_max_ratio`` (official:
        ``global_step / (max_steps * peak_steps_ratio) * max_ratio``, capped).
        """
        return min(max(self.progress, 0.0) / self.mix_peak_fraction, 1.0) * self.mix_max_ratio

    def _logits(self, inputs: Tensor, index: Tensor, mask: Tensor, codebook: Tensor) -> Tensor:
        """`(B, L, code_dim)` inputs -> `(B, L - 1, codebook_size)` next-code logits."""
        hidden = self.input_proj(inputs) + self.index_embed[index]
        hidden = self.transformer(hidden, mask)
        prediction = self.output_proj(hidden[:, :-1])
        if self.normalize_prediction:
            prediction = F.normalize(prediction.float(), dim=-1)
        return (prediction.float() @ codebook.float().t()) / self.temperature

    def forward(
        self, code_vectors: Tensor, codes: Tensor, keep: Tensor, codebook: Tensor
    ) -> Tensor:
        """Next-code cross-entropy over the kept tokens, averaged over the rounds.

        Args:
            code_vectors: `(B, N, code_dim)` (straight-through) unit-norm code vectors.
            codes: `(B, N)` long code indices (the targets).
            keep: Bool `(B, N)`, True for kept tokens.
            codebook: `(codebook_size, code_dim)` unit-norm codebook.

        Returns:
            Scalar mean cross-entropy over every kept token that has a kept successor (and
            over the rounds).
        """
        length = codes.shape[1]
        # Stable sort moves the kept tokens to the front, in order; the rest is padding.
        order = torch.argsort((~keep).to(torch.uint8), dim=1, stable=True)
        kept = torch.gather(keep, 1, order)
        vectors = torch.gather(code_vectors, 1, order.unsqueeze(-1).expand_as(code_vectors))
        targets = torch.gather(codes, 1, order)[:, 1:].flatten()
        weights = kept[:, 1:].flatten().float()
        mask = causal_mask(length, codes.device)
        if self.detach_codebook:
            codebook = codebook.detach()
        inputs = vectors
        losses = []
        replace = None
        if self.rounds > 1:
            # one draw of the replaced positions per step, shared by the rounds (official)
            ratio = self.mix_ratio() if self.training else 0.0
            replace = torch.rand(vectors.shape[:2], device=vectors.device)[:, 1:] < ratio
        for round_index in range(self.rounds):
            logits = self._logits(inputs, order, mask, codebook)
            loss = F.cross_entropy(logits.flatten(0, 1), targets, reduction="none")
            losses.append((loss * weights).sum() / weights.sum().clamp_min(1.0))
            if round_index + 1 < self.rounds:
                with torch.no_grad():
                    probs = logits.float().softmax(dim=-1).flatten(0, 1)
                    drawn = torch.multinomial(probs, 1).view(logits.shape[:2])
                    sampled = codebook.detach()[drawn].to(vectors.dtype)
                tail = torch.where(replace.unsqueeze(-1), sampled, vectors[:, 1:])
                inputs = torch.cat([vectors[:, :1], tail], dim=1)
        return torch.stack(losses).mean()
