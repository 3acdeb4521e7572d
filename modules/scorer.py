"""ScorerModule: trains the block-causal scorer on online labels from a frozen tokenizer."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from scipy.stats import spearmanr
from typing_extensions import override

from adaptok.distributed import gather_rows
from adaptok.losses.block_quality import BlockQuality, QualityMetric, measure_block_costs
from adaptok.nn.scorer import BlockCausalScorer
from adaptok.nn.tail_drop import TailDropSampler
from adaptok.nn.tokenizer import TokenizerEncoding
from modules.stage import OptimizerParameters, StageModule

__all__ = ["ScorerModule"]


class ScorerModule(StageModule):
    """Learns to predict each block's reconstruction cost for every candidate length.

    Each step (docs/METHOD.md section 3): encode the clip with the frozen tokenizer; draw random
    kept lengths for every block (the context) and one target block ``q`` per clip; decode
    ``J`` copies with block ``q`` kept at each candidate length, without gradients; the label
    is the z-normalised cost of block ``q`` (LPIPS by default); the loss is the MSE between
    the scorer's ``J`` predictions for block ``q`` and those labels.

    Validation reports what the paper did not: MAE (in the metric's own units) and the
    Spearman rank correlation between predicted and true costs, overall and per candidate.

    Args:
        scorer: The block-causal scorer network.
        tokenizer_ckpt: The tokenizer stage's checkpoint (loaded frozen when training starts).
        tokenizer_spec: Filled in by this module and saved in its checkpoint (the tokenizer's
            ``class_path``/``init_args``): restoring builds the tokenizer from it and never
            reads ``tokenizer_ckpt`` again. Leave unset.
        metric: Label metric: ``lpips`` (paper), ``psnr``, ``mse`` or ``ssim``.
        target_mean: Mean used to z-normalise labels (paper, LPIPS: 0.1975).
        target_std: Std used to z-normalise labels (paper, LPIPS: 0.0762).
        context_drop: Sampler of the context lengths (default: the paper's truncated normal,
            scaled to the tokenizer's tokens per block).
        optimizer: Optimizer factory (default AdamW lr 1e-4, weight decay 0.01).
        scheduler: LR schedule stepped every batch (default: none, a constant rate).
        lpips_net: LPIPS backbone for ``metric='lpips'``.
    """

    frozen_parts = ("tokenizer", "quality")

    def __init__(
        self,
        scorer: BlockCausalScorer,
        tokenizer_ckpt: str | None = None,
        metric: QualityMetric = "lpips",
        target_mean: float = 0.1975,
        target_std: float = 0.0762,
        context_drop: TailDropSampler | None = None,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        lpips_net: str = "vgg",
        tokenizer_spec: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler)
        self.save_hyperparameters()
        self.attach_frozen_tokenizer(tokenizer_ckpt, tokenizer_spec)
        if (scorer.num_blocks, scorer.tokens_per_block) != (
            self.tokenizer.num_blocks,
            self.tokenizer.tokens_per_block,
        ):
            raise ValueError(
                f"scorer is built for {scorer.num_blocks} blocks x {scorer.tokens_per_block} tokens, "
                f"the tokenizer has {self.tokenizer.num_blocks} x {self.tokenizer.tokens_per_block}"
            )
        self.scorer = scorer
        perceptual = None
        if metric == "lpips":
            from adaptok.metrics.lpips import load_lpips

            perceptual = load_lpips(lpips_net)
        self.quality = BlockQuality(metric, perceptual)
        if target_std <= 0:
            raise ValueError(f"target_std must be > 0, got {target_std}")
        self.target_mean = target_mean
        self.target_std = target_std
        tokens = self.tokenizer.tokens_per_block
        self.context_drop = context_drop or TailDropSampler(
            mean=tokens / 2, std=tokens / 4, min_tokens=max(1, tokens // 16), max_tokens=tokens
        )
        self._val_predictions: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []

    # ------------------------------------------------------------------ helpers
    @property
    def candidate_lengths(self) -> list[int]:
        """The scorer's candidate lengths (tokens per block), ascending."""
        return self.scorer.candidate_lengths

    def normalise(self, cost: torch.Tensor) -> torch.Tensor:
        """Cost in the metric's units -> the z-normalised label the scorer predicts."""
        return (cost - self.target_mean) / self.target_std

    def denormalise(self, score: torch.Tensor) -> torch.Tensor:
        """Scorer output -> cost in the metric's units (inverse of :meth:`normalise`)."""
        return score * self.target_std + self.target_mean

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> TokenizerEncoding:
        """Frozen, deterministic (argmax) encoding of ``video`` (B, C, T, H, W)."""
        self.tokenizer.eval()
        return self.tokenizer.encode(video)

    def predict_costs(
        self, encoding: TokenizerEncoding, context_lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Predicted normalised costs ``(B, K, J)``; block b is conditioned on blocks < b at ``context_lengths``."""
        return self.scorer(encoding.latents, encoding.quantized, context_lengths)

    def _step(
        self, batch: dict[str, Any], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        video = batch["video"]
        size, num_blocks = video.shape[0], self.tokenizer.num_blocks
        encoding = self.encode(video)
        context = self.context_drop.sample(size, num_blocks, generator=generator).to(video.device)
        blocks = torch.randint(num_blocks, (size,), generator=generator).to(video.device)
        raw = measure_block_costs(
            self.tokenizer,
            self.quality,
            video,
            encoding.codes,
            context,
            blocks,
            self.candidate_lengths,
        )
        labels = self.normalise(raw)
        predictions = self.predict_costs(encoding, context)[
            torch.arange(size, device=video.device), blocks
        ]
        return predictions, labels

    # ------------------------------------------------------------------ Lightning hooks
    @override
    def optimizer_parameters(self) -> OptimizerParameters:
        return [p for p in self.scorer.parameters() if p.requires_grad]

    @override
    def default_optimizer(self, parameters: OptimizerParameters) -> torch.optim.Optimizer:
        return torch.optim.AdamW(parameters, lr=1e-4, weight_decay=0.01)

    @override
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        predictions, labels = self._step(batch)
        loss = F.mse_loss(predictions, labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=labels.shape[0])
        return loss

    def _evaluation_start(self) -> None:
        self._val_predictions.clear()
        self._val_labels.clear()

    def _evaluation_step(self, batch: dict[str, Any], batch_idx: int, split: str) -> None:
        # Fixed draws per batch index, so every evaluation pass scores the same problems.
        generator = torch.Generator().manual_seed(batch_idx)
        predictions, labels = self._step(batch, generator)
        loss = F.mse_loss(predictions, labels)
        self.log(f"{split}/loss", loss, sync_dist=True, batch_size=labels.shape[0])
        self._val_predictions.append(predictions.detach())
        self._val_labels.append(labels.detach())

    def _evaluation_end(self, split: str) -> None:
        columns = self.scorer.num_candidates
        empty = torch.zeros((0, columns), device=self.device)
        # Ranks may hold different numbers of rows, even none (uneven shards): Lightning's
        # all_gather needs equal shapes and would stall; gather_rows pads and trims, and every
        # rank enters it.
        predictions = gather_rows(torch.cat([empty, *self._val_predictions]))
        labels = gather_rows(torch.cat([empty, *self._val_labels]))
        if predictions.shape[0] == 0:
            return
        accuracy = scorer_accuracy(
            self.denormalise(predictions), self.denormalise(labels), self.candidate_lengths, split
        )
        self.log_dict(accuracy, sync_dist=False, rank_zero_only=True)

    @override
    def on_validation_epoch_start(self) -> None:
        self._evaluation_start()

    @override
    def on_test_epoch_start(self) -> None:
        self._evaluation_start()

    @override
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluation_step(batch, batch_idx, "val")

    @override
    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluation_step(batch, batch_idx, "test")

    @override
    def on_validation_epoch_end(self) -> None:
        self._evaluation_end("val")

    @override
    def on_test_epoch_end(self) -> None:
        self._evaluation_end("test")


def scorer_accuracy(
    predicted: torch.Tensor, true: torch.Tensor, candidates: list[int], prefix: str = "val"
) -> dict[str, float]:
    """MAE and Spearman correlation of predicted vs true costs, overall and per candidate.

    Args:
        predicted: ``(N, J)`` predicted costs in the metric's units.
        true: ``(N, J)`` measured costs.
        candidates: The ``J`` candidate lengths (for the log keys).
        prefix: Log-key prefix (``val`` or ``test``).

    Returns:
        ``{prefix}/scorer_mae``, ``{prefix}/scorer_spearman`` and per-candidate ``.../at_{l}``.
    """
    pred = predicted.float().cpu().numpy()
    real = true.float().cpu().numpy()
    metrics = {
        f"{prefix}/scorer_mae": float(np.abs(pred - real).mean()),
        f"{prefix}/scorer_spearman": _spearman(pred.ravel(), real.ravel()),
    }
    for column, length in enumerate(candidates):
        metrics[f"{prefix}/scorer_mae_at_{length}"] = float(
            np.abs(pred[:, column] - real[:, column]).mean()
        )
        metrics[f"{prefix}/scorer_spearman_at_{length}"] = _spearman(
            pred[:, column], real[:, column]
        )
    return metrics


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)
