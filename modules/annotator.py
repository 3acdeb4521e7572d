"""AnnotatorModule: the predict step of token annotation (frozen tokenizer + scorer + IPAL).

``adaptok predict --config experiments/<set>/annotate.yaml`` feeds every window of the training
videos (``datamodules.VideoWindowsDataModule``) through this module; the
``callbacks.AnnotationWriter`` callback writes what it returns as token shards.

Per window (docs/METHOD.md section 5.4): deterministic (argmax) codes of
all K blocks x M tokens, the scorer's predicted cost table (K x J, in the metric's units, for the
full-length context), and the per-block lengths chosen by IPAL at each of P budgets.

The lengths come from :class:`adaptok.budget_planner.TokenBudgetPlanner`, the planning path the
``AllocationEvaluator`` callback uses too, on the scorer's predictions: for the same clips,
budget and mode, annotation and evaluation choose the same lengths.

Allocation modes (``allocation``):

- ``causal_table``: the official code's annotation (``scripts/prepare_annotations_for_ar.sh``,
  ``encode_eval``): block by block, each block scored given the lengths chosen for the earlier
  blocks, one ILP over the batch per block whose total is B x the block's target from the
  per-block table (``adaptok.alloc.REFERENCE_BLOCK_TABLE``; 50 % -> about 1020 of 1024 tokens
  per clip at paper scale). Clips share each block's budget, so clip totals vary with content
  (sample-wise adaptivity, the paper's), and a window's lengths depend on its batch-mates, the
  batch size and the number of devices (the reference: 128 windows per GPU).
- ``per_clip``: every window exactly ``K x budget`` tokens, only the split between its blocks
  adapts; independent of batch-mates and hardware.
- ``streaming``: causal, block by block (each block scored given the lengths chosen for the
  earlier ones) with a price per token started afresh for each clip alone (independent too).

``annotation_summary.md`` reports the spread of the clip totals. Everything runs in fp32
whatever the trainer's precision (the reference annotated in fp16 and evaluated prefixes in
fp32).
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningModule

from adaptok.alloc import TokenBudget
from adaptok.budget_planner import PLANNING_VERSION, TokenBudgetPlanner
from adaptok.nn.frame_condition import condition_clip
from adaptok.nn.tokenizer import AdapTokTokenizer, TokenizerEncoding
from modules.loading import load_frozen_scorer
from modules.stage import configure_data_clip

__all__ = ["AnnotatorModule", "state_sha256"]


def state_sha256(module: torch.nn.Module) -> str:
    """SHA-256 of a module's state dict (names, dtypes, shapes and raw bytes, sorted by name).

    Two networks with the same hash compute the same function; it identifies the tokenizer
    an annotation set was made with.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class AnnotatorModule(LightningModule):
    """Encodes windows and allocates their tokens at several budgets (predict only).

    Args:
        scorer_ckpt: A scorer stage checkpoint (``adaptok fit --config .../scorer.yaml``); it
            carries the frozen tokenizer and the scorer.
        budgets: Budgets as fractions of the tokens per block M (mean tokens per block =
            fraction x M), each in (0, 1]; e.g. ``[0.25, 0.5, 0.75, 1.0]``.
        allocation: ``causal_table`` (the official procedure over each batch: clip totals
            vary with content, lengths depend on the batch), ``per_clip`` (exact knapsack per
            clip, docs/METHOD.md section 4 with a per-clip budget) or ``streaming`` (causal
            block-by-block price, started afresh for each clip alone).
        solver: ``fast`` (exact numpy) or ``mip`` (python-mip CBC).
        equality: Spend each clip's budget exactly (IPAL, the paper) rather than at most
            (``per_clip``, ``streaming``; ``causal_table`` spends its rounded block totals
            exactly, as the official code).
        condition_frames: Frame prediction (Kinetics-600: 5): also encode the condition clip,
            its first ``condition_frames`` frames with the last repeated to the clip length,
            with no dropping. ``None``: class-conditional annotations (UCF-101).
        block_table: ``causal_table``'s targets: budget fraction -> one target fraction (of
            M) per block; None = the official table.

    Raises:
        ValueError: A budget outside (0, 1], an unknown mode, a condition length outside
            [1, clip length], a codebook too large for uint16 codes, or (``causal_table``) a
            budget without a row in the block table.
        InfeasibleBudgetError: A budget the scorer's candidate lengths cannot meet per clip.
    """

    def __init__(
        self,
        scorer_ckpt: str,
        budgets: list[float] = [0.25, 0.5, 0.75, 1.0],  # noqa: B006 (jsonargparse reads it)
        allocation: Literal["causal_table", "per_clip", "streaming"] = "per_clip",
        solver: Literal["fast", "mip"] = "fast",
        equality: bool = True,
        condition_frames: int | None = None,
        block_table: dict[float, list[float]] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if allocation not in ("causal_table", "per_clip", "streaming"):
            raise ValueError(
                "allocation must be 'causal_table' (the official procedure over the batch), "
                f"'per_clip' or 'streaming' (independent of batch-mates), got {allocation!r}"
            )
        if not budgets or any(not 0 < float(b) <= 1 for b in budgets):
            raise ValueError(f"budgets must be fractions in (0, 1], got {budgets}")
        stage = load_frozen_scorer(scorer_ckpt)
        self.tokenizer: AdapTokTokenizer = stage.tokenizer
        self.scorer = stage.scorer
        self.candidate_lengths = [int(x) for x in stage.candidate_lengths]
        self.scorer_ckpt = str(scorer_ckpt)
        self.budgets = [float(b) for b in budgets]
        self.allocation, self.solver, self.equality = allocation, solver, equality
        self.num_blocks = int(self.tokenizer.num_blocks)
        self.tokens_per_block = int(self.tokenizer.tokens_per_block)
        self.codebook_size = int(self.tokenizer.quantizer.codebook_size)
        if self.codebook_size > np.iinfo(np.uint16).max + 1:
            raise ValueError(f"codebook of {self.codebook_size} codes does not fit uint16 codes")
        clip = int(self.tokenizer.num_frames)
        if condition_frames is not None and not 1 <= condition_frames <= clip:
            raise ValueError(f"condition_frames must lie in [1, {clip}], got {condition_frames}")
        self.condition_frames = condition_frames
        self.block_table = block_table
        # The YAML's fractions, converted once; the planner allocates every window.
        self.token_budgets = [
            TokenBudget.from_fraction(fraction, self.tokens_per_block) for fraction in self.budgets
        ]
        self.planner = TokenBudgetPlanner(
            self.tokenizer,
            self.scorer,
            mode=allocation,
            solver=solver,
            equality=equality,
            candidates=self.candidate_lengths,
            block_table=block_table,
            carry_price=False,  # streaming: every window alone, whatever its batch
        )
        self.block_targets: dict[float, list[float]] = {}
        for fraction, budget in zip(self.budgets, self.token_budgets, strict=True):
            targets = self.planner.check_budget(budget)  # causal_table: the block targets
            if targets is not None:
                self.block_targets[fraction] = targets
        self.provenance = {
            "ckpt": self.scorer_ckpt,
            "sha256": state_sha256(self.tokenizer),
            "scorer_sha256": state_sha256(self.scorer),
        }

    # ------------------------------------------------------------------ metadata
    def annotation_info(self) -> dict[str, Any]:
        """Fields every annotation's ``json`` shares (budgets, grid, sizes, provenance).

        The allocation procedure is part of it: the mode, ``equality``, the solver and
        :data:`adaptok.budget_planner.PLANNING_VERSION`, so a resumed run refuses (or, with
        ``on_mismatch: overwrite``, replaces) shards whose lengths were planned otherwise.
        """
        return {
            "budgets": list(self.budgets),
            "candidate_lengths": list(self.candidate_lengths),
            "num_blocks": self.num_blocks,
            "tokens_per_block": self.tokens_per_block,
            "codebook_size": self.codebook_size,
            "tokenizer": dict(self.provenance),
            "allocation": self.allocation,
            "allocation_version": PLANNING_VERSION,
            "equality": self.equality,
            "solver": self.solver,
            "condition_frames": self.condition_frames,
            # only for causal_table: earlier annotation sets keep their fingerprint
            **({"block_targets": dict(self.block_targets)} if self.block_targets else {}),
        }

    def setup(self, stage: str) -> None:
        """Check the weights are fp32; give a window datamodule the tokenizer's clip size.

        Raises:
            ValueError: The trainer's precision turned the weights into another dtype.
        """
        dtype = next(self.tokenizer.parameters()).dtype
        if dtype != torch.float32:
            raise ValueError(
                f"the tokenizer holds {dtype} weights: annotate in fp32 (trainer.precision: "
                "32-true), the precision the generator's evaluation prefixes use too"
            )
        configure_data_clip(self)

    # ------------------------------------------------------------------ annotation
    @torch.no_grad()
    def encode_codes(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Argmax codes ``(B, K, M)`` and predicted costs ``(B, K, J)`` (metric units) in fp32.

        Args:
            video: ``(B, C, T, H, W)`` float in [0, 1] at the tokenizer's clip size.
        """
        codes, costs, _ = self._encode(video)
        return codes, costs

    @torch.no_grad()
    def _encode(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, TokenizerEncoding]:
        """Codes ``(B, K, M)``, predicted costs ``(B, K, J)`` (metric units) and the encoding (fp32)."""
        self.tokenizer.eval()
        self.scorer.eval()
        with torch.autocast(video.device.type, enabled=False):
            encoding = self.tokenizer.encode(video.float())
            predictions = self.scorer(encoding.latents, encoding.quantized, None)
            costs = self.scorer.to_label_units(predictions)
        codes = encoding.codes.view(video.shape[0], self.num_blocks, self.tokens_per_block)
        return codes, costs, encoding

    @torch.no_grad()
    def allocate_lengths(
        self, video: torch.Tensor, encoding: TokenizerEncoding, costs: torch.Tensor
    ) -> np.ndarray:
        """Per-block lengths ``(B, P, K)`` at each budget, by the planner in ``allocation`` mode.

        Args:
            video: ``(B, C, T, H, W)`` the windows (fp32).
            encoding: ``tokenizer.encode(video)`` (fp32).
            costs: ``(B, K, J)`` the scorer's predicted costs (metric units) for the
                full-length context (reused by ``per_clip``; the causal modes re-score block
                by block).
        """
        lengths = np.zeros((video.shape[0], len(self.budgets), self.num_blocks), dtype=np.int64)
        with torch.autocast(video.device.type, enabled=False):
            for level, budget in enumerate(self.token_budgets):
                chosen = self.planner.plan(video, encoding, budget, "scorer", costs=costs)
                lengths[:, level] = chosen.cpu().numpy()
        return lengths

    def condition_clip(self, video: torch.Tensor) -> torch.Tensor:
        """The frame-prediction condition: first ``condition_frames`` frames, last repeated.

        Args:
            video: ``(B, C, T, H, W)``.

        Returns:
            ``(B, C, T, H, W)``.

        Raises:
            ValueError: Class-conditional annotation (``condition_frames`` None): no condition.
        """
        if self.condition_frames is None:
            raise ValueError(
                "condition_frames is None: class-conditional annotation has no condition clip"
            )
        return condition_clip(video, self.condition_frames)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Annotate one batch of windows.

        Returns:
            ``codes`` uint16 (B, K, M), ``costs`` float32 (B, K, J), ``lengths`` int16
            (B, P, K), ``cond`` uint16 (B, K, M) in frame-prediction mode, and the windows'
            ``key``, ``source_key``, ``label``, ``class_name``, ``window_start`` lists, plus
            the batch's ``skipped`` counts.
        """
        video = batch["video"]
        out: dict[str, Any] = {"skipped": dict(batch.get("skipped") or {})}
        if video.numel() == 0:
            out["key"] = []
            return out
        codes, costs, encoding = self._encode(video)
        out["codes"] = codes.cpu().numpy().astype(np.uint16)
        out["costs"] = costs.cpu().numpy().astype(np.float32)
        lengths = self.allocate_lengths(video.float(), encoding, costs)
        out["lengths"] = lengths.astype(np.int16)
        if self.condition_frames is not None:
            cond_codes, _ = self.encode_codes(self.condition_clip(video))
            out["cond"] = cond_codes.cpu().numpy().astype(np.uint16)
        out["key"] = list(batch["key"])
        out["source_key"] = list(batch.get("source_key", batch["key"]))
        out["label"] = [int(x) for x in batch["label"]]
        out["class_name"] = list(batch["class_name"])
        out["window_start"] = [int(x) for x in batch["window_start"]]
        return out

    def configure_optimizers(self) -> None:
        """No training: this module only predicts."""
        return None
