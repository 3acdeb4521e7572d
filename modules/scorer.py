"""ScorerModule: trains the block-causal scorer on labels measured with a frozen tokenizer."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from adaptok.data.replay_buffer import ReplayBuffer
from adaptok.distributed import gather_rows
from adaptok.losses.block_quality import (
    BlockQuality,
    QualityMetric,
    measure_block_costs,
    measure_cost_table,
)
from adaptok.losses.scorer_loss import scorer_loss
from adaptok.metrics.cost_curves import spearman
from adaptok.nn.scorer import BlockCausalScorer, upgrade_scorer_checkpoint
from adaptok.nn.tail_drop import TailDropSampler
from adaptok.nn.tokenizer import TokenizerEncoding
from modules.loading import CheckpointError, build_child_network
from modules.stage import OptimizerParameters, StageModule

__all__ = ["ScorerFactory", "ScorerModule"]

ScorerFactory = Callable[[int, int, int], BlockCausalScorer]
"""Builds the scorer network from the tokenizer's ``(token_width, num_blocks,
tokens_per_block)``: in a YAML, ``class_path: adaptok.nn.BlockCausalScorer`` with only its own
``init_args`` (``num_candidates``, ``width``, ``depth``, ``heads``, ...); in Python, e.g.
``functools.partial(BlockCausalScorer, num_candidates=8, width=128, depth=2, heads=4)``."""


class ScorerModule(StageModule):
    """Learns to predict each block's reconstruction cost for every candidate length.

    Each step (docs/METHOD.md section 3): encode the clip with the frozen tokenizer; draw random
    kept lengths for every block (the context) and one target block ``q`` per clip; decode
    ``J`` copies with block ``q`` kept at each candidate length, without gradients; the label
    is the z-normalised cost of block ``q`` (LPIPS by default); the loss is the MSE between
    the scorer's ``J`` predictions for block ``q`` and those labels.

    Label units: the normalisation lives in the scorer network's buffers (``label_mean``,
    ``label_std``, saved with its weights); ``scorer.to_label_units`` turns predictions into
    the metric's units and ``scorer.from_label_units`` makes the labels. ``target_mean`` and
    ``target_std`` set them; left null they are estimated before the first training step
    from the labels of the first ``label_stat_batches`` training batches (gathered over every
    rank), and the values are logged, so a retrained tokenizer needs no hand-measured
    constants.

    Validation reports what the paper did not: MAE (in the metric's own units) and the
    Spearman rank correlation between predicted and true costs, overall and per candidate.

    Geometry: the scorer's token width, blocks K and tokens per block M are the frozen
    tokenizer's (``tokenizer.width``, ``num_blocks``, ``tokens_per_block``), read from it and
    given to the ``scorer`` factory; the YAML states only the scorer's own settings. The
    resolved network spec is saved in the checkpoint (``scorer_spec``), so a scorer checkpoint
    restores alone.

    Args:
        scorer: Builds the block-causal scorer network from the tokenizer's geometry
            (:data:`ScorerFactory`); may be left unset when ``scorer_spec`` is given.
        tokenizer_ckpt: The tokenizer stage's checkpoint, or an ``adaptok export`` folder holding
            a tokenizer (loaded frozen when training starts).
        tokenizer_spec: Filled in by this module and saved in its checkpoint (the tokenizer's
            ``class_path``/``init_args``): restoring builds the tokenizer from it and never
            reads ``tokenizer_ckpt`` again. Leave unset.
        scorer_spec: Filled in by this module and saved in its checkpoint (the scorer's
            resolved ``class_path``/``init_args``, geometry included): restoring builds the
            scorer from it. Leave unset.
        metric: Label metric: ``lpips`` (paper), ``psnr``, ``mse`` or ``ssim``.
        target_mean: Mean used to z-normalise labels (paper, LPIPS: 0.1975), in the scorer's
            label space (after its ``label_transform``); None: estimated from the first
            training batches' labels.
        target_std: Std used to z-normalise labels (paper, LPIPS: 0.0762), > 0; None:
            estimated likewise.
        label_stat_batches: Training batches whose labels estimate a null ``target_mean`` /
            ``target_std`` before training starts (default 4; the batches are drawn from a
            fresh iterator of the training loader, so training still sees them).
        context_drop: Sampler of the context lengths, ``max_tokens`` at most M, null = M (default: the
            paper's truncated normal scaled to the tokenizer's M: mean M/2, std M/4, in
            ``[max(1, M/16), M]``).
        optimizer: Optimizer factory (default AdamW lr 1e-4, weight decay 0.01).
        scheduler: LR schedule stepped every batch (default: none, a constant rate).
        lpips_net: LPIPS backbone for ``metric='lpips'``.
        slope_weight: Weight of a second MSE on the steps between consecutive candidates'
            costs (:func:`adaptok.losses.scorer_loss`), >= 0; 0 (default): the paper's loss.
        replay_size: 0 (default): the paper's step above, each label regressed once. ``> 0``
            (a deviation, docs/DEVIATIONS.md): each step measures the cost table of *every*
            block of the batch's clips (``K x J`` decodes per clip, block ``b`` given the
            sampled context of the blocks before it), keeps the last ``replay_size`` clips'
            encodings, contexts and tables in memory (:class:`adaptok.data.replay_buffer.ReplayBuffer`,
            about ``2 x N x token_width x 4`` bytes per clip), and regresses all blocks of
            ``replay_batch`` clips drawn from that memory, so each measured table trains the
            scorer many times. The memory is not checkpointed: a resumed fit refills it.
        replay_batch: Clips drawn from the replay memory per step (with ``replay_size > 0``).
        measure_every: With ``replay_size > 0``, measure the loader's batch every this many
            steps (>= 1); the steps between only replay (their batches are not used), so
            labels cost ``1/measure_every`` of the decodes.
        init_weights: An export folder (``adaptok export``) or suite checkpoint of a scorer
            stage whose scorer weights a fit starts from, e.g. the committed demo weights
            ``pretrained/demo-scorer`` (docs/demo_weights.md). Loaded in ``setup("fit")``
            (before the strategy wraps the model; a resumed fit restores its own weights after
            it); its scorer spec must agree with this one's and its label metric with
            ``metric``; training shards with other bytes than the ones it was trained on
            (content fingerprint) give a warning. The scorer's label normalisation
            (``label_mean`` / ``label_std``) comes with its weights, which predict in its
            units: it replaces ``target_mean`` / ``target_std``, and nothing is estimated.
            Only the scorer is taken: the frozen tokenizer still comes from
            ``tokenizer_ckpt`` (for the demo, a fine-tune of the tokenizer the scorer weights
            were trained on, which is why a short scorer fine-tune follows).
    """

    frozen_parts = ("tokenizer", "quality")
    child_network = "scorer"

    def __init__(
        self,
        scorer: ScorerFactory | None = None,
        tokenizer_ckpt: str | None = None,
        metric: QualityMetric = "lpips",
        target_mean: float | None = 0.1975,
        target_std: float | None = 0.0762,
        context_drop: TailDropSampler | None = None,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        lpips_net: str = "vgg",
        tokenizer_spec: dict[str, Any] | None = None,
        label_stat_batches: int = 4,
        scorer_spec: dict[str, Any] | None = None,
        slope_weight: float = 0.0,
        replay_size: int = 0,
        replay_batch: int = 16,
        measure_every: int = 1,
        init_weights: str | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler)
        self.save_hyperparameters()
        tokenizer = self.attach_frozen_tokenizer(tokenizer_ckpt, tokenizer_spec)
        geometry = {
            "token_width": tokenizer.width,
            "num_blocks": tokenizer.num_blocks,
            "tokens_per_block": tokenizer.tokens_per_block,
        }
        network, self.hparams["scorer_spec"] = build_child_network(
            "scorer", scorer, self.hparams.get("scorer"), scorer_spec, geometry
        )
        scorer = self.scorer = network
        perceptual = None
        if metric == "lpips":
            from adaptok.metrics.lpips import load_lpips

            perceptual = load_lpips(lpips_net)
        self.quality = BlockQuality(metric, perceptual)
        if getattr(scorer, "label_transform", "identity") == "log" and metric in ("psnr", "ssim"):
            raise ValueError(
                f"the scorer's label_transform 'log' needs non-negative costs; metric {metric!r} "
                "costs are negated scores: use mse or lpips, or label_transform identity"
            )
        if target_std is not None and not target_std > 0:
            raise ValueError(f"target_std must be > 0 or null (estimated), got {target_std}")
        if label_stat_batches < 1:
            raise ValueError(f"label_stat_batches must be >= 1, got {label_stat_batches}")
        self.label_stat_batches = label_stat_batches
        if slope_weight < 0:
            raise ValueError(f"slope_weight must be >= 0, got {slope_weight}")
        self.slope_weight = slope_weight
        if replay_size < 0 or replay_batch < 1 or measure_every < 1:
            raise ValueError(
                "replay_size must be >= 0, replay_batch and measure_every >= 1, got "
                f"{replay_size}, {replay_batch} and {measure_every}"
            )
        self.measure_every = measure_every
        self._replay_calls = 0  # replay steps so far in this process (a resumed fit refills)
        self.replay = ReplayBuffer(replay_size) if replay_size > 0 else None
        self.replay_batch = replay_batch
        self.init_weights = init_weights
        self._given_normalisation = (target_mean, target_std)
        if target_mean is None or target_std is None:
            scorer.set_label_normalisation(math.nan, math.nan)  # estimated in on_fit_start
        else:
            scorer.set_label_normalisation(target_mean, target_std)
        tokens = self.tokenizer.tokens_per_block
        # a given sampler's max_tokens: null = M, more than M refused (TailDropSampler.resolve)
        self.context_drop = (
            context_drop.resolve(tokens)
            if context_drop is not None
            else TailDropSampler(
                mean=tokens / 2, std=tokens / 4, min_tokens=max(1, tokens // 16), max_tokens=tokens
            )
        )
        self._val_predictions: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []

    # ------------------------------------------------------------------ helpers
    @property
    def candidate_lengths(self) -> list[int]:
        """The scorer's candidate lengths (tokens per block), ascending."""
        return self.scorer.candidate_lengths

    @property
    def target_mean(self) -> float:
        """The label mean in use (the scorer's ``label_mean`` buffer; NaN before estimation)."""
        return self.scorer.label_normalisation[0]

    @property
    def target_std(self) -> float:
        """The label std in use (the scorer's ``label_std`` buffer; NaN before estimation)."""
        return self.scorer.label_normalisation[1]

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

    def _draw(
        self, batch: dict[str, Any], generator: torch.Generator | None = None
    ) -> tuple[TokenizerEncoding, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One draw of a training step.

        Returns:
            The encoding, context lengths ``(B, K)``, target blocks ``(B,)`` and the target
            blocks' labels ``(B, J)`` in the metric's units.
        """
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
        return encoding, context, blocks, raw

    def _step(
        self, batch: dict[str, Any], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        encoding, context, blocks, raw = self._draw(batch, generator)
        labels = self.scorer.from_label_units(raw)
        rows = torch.arange(blocks.shape[0], device=blocks.device)
        predictions = self.predict_costs(encoding, context)[rows, blocks]
        return predictions, labels

    def _replay_step(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Measure the batch's cost tables, remember them, regress a draw from the memory.

        The batch is measured on the first call and every ``measure_every`` calls after it
        (counted over the whole fit, not per epoch), and whenever the memory is empty.

        Returns:
            Predictions and labels, both ``(replay_batch, K, J)`` normalised costs.
        """
        assert self.replay is not None
        due = self._replay_calls % self.measure_every == 0
        self._replay_calls += 1
        if due or len(self.replay) == 0:
            video = batch["video"]
            encoding = self.encode(video)
            context = self.context_drop.sample(video.shape[0], self.tokenizer.num_blocks)
            context = context.to(video.device)
            table = measure_cost_table(
                self.tokenizer, self.quality, video, encoding.codes, context, self.candidate_lengths
            )
            self.replay.add(
                latents=encoding.latents, quantized=encoding.quantized, context=context, costs=table
            )
        rows = self.replay.sample(self.replay_batch)
        predictions = self.scorer(rows["latents"], rows["quantized"], rows["context"])
        return predictions, self.scorer.from_label_units(rows["costs"])

    def estimate_label_normalisation(self, batches: list[dict[str, Any]]) -> tuple[float, float]:
        """Set a null ``target_mean`` / ``target_std`` from the labels of ``batches``.

        The labels of every rank are gathered, so every rank stores the same values. A
        value given in the configuration is kept.

        Args:
            batches: Training batches (``video`` on this module's device).

        Returns:
            ``(mean, std)`` now in the scorer's buffers.

        Raises:
            ValueError: No labels, or labels with zero spread (a std of 0 cannot normalise).
        """
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            local = [
                self.scorer.label_space(self._draw(batch, generator)[3]).double().flatten()
                for batch in batches
            ]
        labels = gather_rows(torch.cat([torch.zeros(0, device=self.device).double(), *local]))
        if labels.numel() == 0:
            raise ValueError("no training labels to estimate target_mean/target_std from")
        given_mean, given_std = self._given_normalisation
        mean = float(labels.mean()) if given_mean is None else float(given_mean)
        std = float(labels.std(correction=0)) if given_std is None else float(given_std)
        if not std > 0:
            raise ValueError(
                f"the {labels.numel()} training labels all equal {float(labels[0]):.6g}: their "
                "std is 0; set target_std in the scorer YAML"
            )
        self.scorer.set_label_normalisation(mean, std)
        rank_zero_info(
            f"ScorerModule: label normalisation estimated from {len(batches)} training "
            f"batch(es) per rank ({labels.numel()} labels, metric {self.hparams.metric}): "
            f"target_mean {mean:.6g}, target_std {std:.6g}"
        )
        return mean, std

    # ------------------------------------------------------------------ Lightning hooks
    @override
    def setup(self, stage: str) -> None:
        """Give the datamodule the tokenizer's clip size; a fresh fit loads ``init_weights``.

        Runs before :meth:`on_fit_start`: the label normalisation restored with the scorer's
        weights is kept there, not estimated.

        Raises:
            modules.loading.CheckpointError: ``init_weights`` cannot start this scorer
                (:meth:`~modules.stage.StageModule.load_init_weights`), or its scorer learned
                another label metric than ``metric``.
        """
        super().setup(stage)  # the datamodule's clip size: the tokenizer's
        info = self.load_init_weights(
            stage, "scorer", self.init_weights, self.hparams["scorer_spec"]
        )
        stored = None if info is None else info.get("metric")
        if stored is not None and stored != self.hparams.metric:
            raise CheckpointError(
                f"model.init_args.init_weights: {self.init_weights}: its scorer learned "
                f"{stored!r} labels, this run measures {self.hparams.metric!r} (metric); "
                "fine-tune with the same metric, or train from scratch: leave init_weights unset"
            )

    @override
    def on_fit_start(self) -> None:
        """Estimate a null label normalisation before any step (a restored one is kept).

        The first ``label_stat_batches`` batches of a fresh training loader are read off the
        books (``ShardDataModule.private_loaders``: a private skip ledger, no resume state
        consumed, no workers forked), so the training run's skip counts and resume position
        are those of its own passes.

        Raises:
            ValueError: No datamodule to read from, or labels that cannot normalise
                (:meth:`estimate_label_normalisation`).
        """
        if self.scorer.has_label_normalisation:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            raise ValueError(
                "target_mean/target_std null are estimated from the training data: give a "
                "datamodule, or set both in the scorer YAML"
            )
        private = getattr(datamodule, "private_loaders", None)
        batches = []
        with private() if callable(private) else contextlib.nullcontext():
            iterator = iter(datamodule.train_dataloader())
            try:
                for batch in iterator:
                    batch = self.transfer_batch_to_device(batch, self.device, 0)
                    batches.append(datamodule.on_after_batch_transfer(batch, 0))
                    if len(batches) == self.label_stat_batches:
                        break
            finally:
                close = getattr(iterator, "close", None)
                if callable(close):
                    close()  # the pass ends here, not when the iterator is collected
        self.estimate_label_normalisation(batches)

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Upgrade a checkpoint saved before the label buffers existed, then restore it.

        The buffers ``scorer.label_mean`` / ``scorer.label_std`` are filled from its
        ``target_mean`` / ``target_std`` (``adaptok.nn.scorer.upgrade_scorer_checkpoint``);
        the frozen metric weights are put back by :class:`~modules.stage.StageModule`.
        """
        upgrade_scorer_checkpoint(checkpoint)  # written before the label buffers existed
        super().on_load_checkpoint(checkpoint)

    @override
    def optimizer_parameters(self) -> OptimizerParameters:
        return [p for p in self.scorer.parameters() if p.requires_grad]

    @override
    def default_optimizer(self, parameters: OptimizerParameters) -> torch.optim.Optimizer:
        return torch.optim.AdamW(parameters, lr=1e-4, weight_decay=0.01)

    @override
    def on_fit_end(self) -> None:
        """Free the replay memory (hundreds of MB at demo scale) once training is over."""
        if self.replay is not None:
            self.replay = ReplayBuffer(self.replay.capacity)

    @override
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        replay = self.replay is not None
        predictions, labels = self._replay_step(batch) if replay else self._step(batch)
        loss = scorer_loss(predictions, labels, self.slope_weight)
        if replay:
            self.log("train/replay_clips", float(len(self.replay)), batch_size=1)
        self.log("train/loss", loss, prog_bar=True, batch_size=labels.shape[0])
        return loss

    def _evaluation_start(self) -> None:
        """Clear the gathered rows; refuse to evaluate without a label normalisation.

        Raises:
            RuntimeError: The scorer's ``label_mean`` / ``label_std`` are still NaN
                (``target_mean`` / ``target_std`` null and never estimated by a fit).
        """
        if not self.scorer.has_label_normalisation:
            raise RuntimeError(
                "ScorerModule: the label normalisation is unset (target_mean/target_std null "
                "and never estimated by a fit), so every metric would be NaN; evaluate a "
                "trained scorer checkpoint or set target_mean and target_std"
            )
        self._val_predictions.clear()
        self._val_labels.clear()

    def _evaluation_step(self, batch: dict[str, Any], batch_idx: int, split: str) -> None:
        # Fixed draws per batch index, so every evaluation pass scores the same problems.
        generator = torch.Generator().manual_seed(batch_idx)
        predictions, labels = self._step(batch, generator)
        loss = scorer_loss(predictions, labels, self.slope_weight)
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
        to_label_units = self.scorer.to_label_units
        accuracy = scorer_accuracy(
            to_label_units(predictions), to_label_units(labels), self.candidate_lengths, split
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
        f"{prefix}/scorer_spearman": spearman(pred.ravel(), real.ravel()),
    }
    for column, length in enumerate(candidates):
        metrics[f"{prefix}/scorer_mae_at_{length}"] = float(
            np.abs(pred[:, column] - real[:, column]).mean()
        )
        metrics[f"{prefix}/scorer_spearman_at_{length}"] = spearman(
            pred[:, column], real[:, column]
        )
    return metrics
