"""AllocationEvaluator: rate-distortion of scorer-driven vs uniform vs oracle allocation.

It allocates no tokens for later stages: it evaluates allocation policies on the evaluation
data and reports them. At validation and test epoch ends (the work is done batch by batch; only running sums, the
chosen lengths and the cost tables are kept), for every budget and allocation mode it
encodes the clips with

- ``scorer``: IPAL on the scorer's predicted costs (the method, docs/METHOD.md section 4),
- ``uniform``: every block at the same number of tokens (also at every candidate length,
  which draws the uniform rate-distortion curve that token savings are read from),
- ``oracle``: IPAL on measured costs (an upper bound for any scorer),

and evaluates each with ``VideoQualityMeter`` (PSNR, SSIM, LPIPS with the SAME backbone the
scorer's labels use, FVD). Everything a report shows is gathered across ranks, and only rank 0
writes ``allocation_report.md/.csv`` and the PNG plots beside them, so an N-rank report equals
the single-process one. Every policy allocates through
:class:`adaptok.budget_planner.TokenBudgetPlanner`, the planning path annotation uses too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from matplotlib.figure import Figure
from scipy.stats import spearmanr
from torch import Tensor
from typing_extensions import override

from adaptok.alloc import TokenBudget, allocate
from adaptok.budget_planner import PLANNER_MODES, AllocationPolicy, PlannerMode, TokenBudgetPlanner
from adaptok.distributed import gather_rows
from adaptok.metrics.allocation_gain import (
    MIN_GAIN,
    captured_gain,
    captured_gain_interval,
    optimised_metric,
    uniform_tokens_to_match,
    within_clip_spearman,
)
from adaptok.metrics.frame_quality import describe_psnr
from adaptok.metrics.meter import VideoQualityMeter
from callbacks.allocation_plots import (
    frames_at_budgets_figure,
    lengths_figure,
    rate_distortion_figure,
    scorer_scatter_figure,
)
from callbacks.media import log_figure, tensorboard_writer
from callbacks.report import git_commit, markdown_table, write_report
from callbacks.split_hooks import Split, SplitCallback

__all__ = ["AllocationEvaluator", "worse_than_uniform"]

log = logging.getLogger(__name__)

POLICIES: tuple[AllocationPolicy, ...] = ("scorer", "uniform", "oracle")
RowKey = tuple[str, str, TokenBudget]  # (policy, mode, budget); uniform mode is "-"
_QUALITY = ("psnr", "psnr_pooled", "ssim", "lpips", "fvd", "fvd_unstable", "num_samples")


class AllocationEvaluator(SplitCallback):
    """Evaluate token allocation policies at several budgets and allocation modes.

    The module under test must expose ``tokenizer`` (frozen ``AdapTokTokenizer``), ``scorer``
    (``BlockCausalScorer``; the planner puts its predictions in the cost's units),
    ``quality`` (``BlockQuality``, the oracle's cost) and may expose
    ``hparams.lpips_net``, as ``modules.ScorerModule`` does.

    Args:
        budgets: Mean tokens per block as fractions of the tokens per block (0.25 = a quarter);
            converted once to :class:`adaptok.alloc.TokenBudget` when an evaluation starts.
        policies: Which of ``scorer``, ``uniform``, ``oracle`` to run.
        modes: Allocation modes for ``scorer`` and ``oracle``, each named in every report row:
            ``causal_table`` (the official code's IPAL: block by block, each block scored
            given the earlier blocks' chosen lengths, one ILP over the mini-batch per block
            with the block's target from ``block_table``), ``batch`` (the paper's ILP over
            the mini-batch, all blocks scored at once), ``per_clip`` (each clip its own
            budget) and/or ``streaming`` (causal, a price per token carried over time).
        solver: ``mip`` (python-mip CBC, the paper's ILP) or ``fast`` (exact, vectorised). The
            report checks on the first batch that the other solver reaches the same objective.
        equality: Spend each budget exactly (the paper) rather than at most.
        num_samples: Clips evaluated per epoch on each rank; the rest of the epoch is skipped.
        fvd: Compute FVD (needs >= 400 clips to be stable; smaller sets are flagged).
        lpips: Compute LPIPS (backbone: the module's ``lpips_net``, else VGG).
        uniform_curve: Also run uniform allocation at every candidate length.
        every_n_epochs: Run on validation every n epochs (test always runs).
        heatmap_clips: Clips shown in the tokens-per-block heatmap.
        block_table: ``causal_table``'s per-block targets: budget fraction -> one fraction of
            the tokens per block for each block; None = the official table
            (``adaptok.alloc.REFERENCE_BLOCK_TABLE``: 0.25, 0.5 and 0.75 among its rows).

    Raises:
        ValueError: Budgets outside (0, 1], unknown policies or modes.
    """

    def __init__(
        self,
        budgets: Sequence[float] = (0.25, 0.5, 0.75),
        policies: Sequence[AllocationPolicy] = POLICIES,
        modes: Sequence[PlannerMode] = ("streaming",),
        solver: Literal["fast", "mip"] = "mip",
        equality: bool = True,
        num_samples: int = 256,
        fvd: bool = True,
        lpips: bool = True,
        uniform_curve: bool = True,
        every_n_epochs: int = 1,
        heatmap_clips: int = 32,
        block_table: dict[float, list[float]] | None = None,
    ) -> None:
        super().__init__()
        if not budgets or any(not 0 < b <= 1 for b in budgets):
            raise ValueError(f"budgets must be fractions in (0, 1], got {list(budgets)}")
        unknown = set(policies) - set(POLICIES)
        if unknown:
            raise ValueError(f"unknown policies {sorted(unknown)}; choose from {POLICIES}")
        bad_modes = set(modes) - set(PLANNER_MODES)
        if not modes or bad_modes:
            raise ValueError(f"modes must be among {', '.join(PLANNER_MODES)}; got {list(modes)}")
        self.budgets = sorted(budgets)
        self.policies = list(policies)
        self.modes = list(dict.fromkeys(modes))
        self.solver = solver
        self.equality = equality
        self.num_samples = num_samples
        self.fvd = fvd
        self.lpips = lpips
        self.uniform_curve = uniform_curve
        self.every_n_epochs = every_n_epochs
        self.heatmap_clips = heatmap_clips
        self.block_table = block_table
        self._active = False

    # ------------------------------------------------------------------ bookkeeping
    @override
    def on_split_start(
        self, split: Split, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        self._active = split == "test" or trainer.current_epoch % self.every_n_epochs == 0
        if trainer.sanity_checking:
            self._active = False
        if not self._active:
            return
        for attribute in ("tokenizer", "scorer", "quality"):
            if not hasattr(pl_module, attribute):
                raise TypeError(
                    f"AllocationEvaluator needs a module with `{attribute}` (e.g. modules.ScorerModule); "
                    f"got {type(pl_module).__name__}"
                )
        tokens = pl_module.tokenizer.tokens_per_block
        self._cost = pl_module.quality.metric
        optimised_metric(self._cost, self.modes[0])  # an unknown cost fails before any work
        self._planner = TokenBudgetPlanner(
            pl_module.tokenizer,
            pl_module.scorer,
            pl_module.quality,
            solver=self.solver,
            equality=self.equality,
            block_table=self.block_table,
        )
        self._token_budgets = {
            fraction: TokenBudget.from_fraction(fraction, tokens) for fraction in self.budgets
        }
        # Every budget checked before any work: a uniform count that rounds to no token, a
        # causal_table budget without a row (its per-block targets kept for the notes).
        self._block_targets: dict[float, list[float]] = {}
        self._keys: list[RowKey] = []
        for fraction, budget in self._token_budgets.items():
            for policy in self.policies:
                if policy == "uniform":
                    self._planner.check_budget(budget, policy="uniform")
                    uniform = TokenBudget(round(budget.mean_tokens), tokens)
                    self._keys.append(("uniform", "-", uniform))
                    continue
                for mode in self.modes:
                    if mode == "causal_table":
                        targets = self._planner.check_budget(budget, mode=mode)
                        if targets is not None:  # always, in causal_table mode
                            self._block_targets[fraction] = targets
                    self._keys.append((policy, mode, budget))
        self._budget_keys = budget_keys = set(self._keys)  # rows at the asked budgets
        if self.uniform_curve and "uniform" in self.policies:
            self._keys += [
                ("uniform", "-", TokenBudget(c, tokens)) for c in self._planner.candidates
            ]
        self._keys = list(dict.fromkeys(self._keys))
        lpips_net = getattr(getattr(pl_module, "hparams", {}), "lpips_net", None) or "vgg"
        self._lpips_net = lpips_net
        # The extra points of the uniform curve only feed token savings (PSNR): no LPIPS/FVD,
        # which dominate the evaluation's cost on a CPU.
        self._meters = {
            key: VideoQualityMeter(
                fvd=self.fvd and key in budget_keys,
                lpips=self.lpips and key in budget_keys,
                lpips_net=lpips_net,
            ).to(pl_module.device)
            for key in self._keys
        }
        self._lengths: dict[RowKey, list[Tensor]] = {key: [] for key in self._keys}
        self._complexity: list[Tensor] = []
        self._predicted: list[Tensor] = []
        self._measured: list[Tensor] = []
        self._solver_check: list[str] = []
        self._frames: dict[str, Tensor] = {}
        self._seen = 0

    @override
    def on_split_batch_end(
        self,
        split: Split,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: dict[str, Any],
        batch_idx: int,
    ) -> None:
        if not self._active or self._seen >= self.num_samples:
            return
        video = batch["video"][: self.num_samples - self._seen]
        first_batch = self._seen == 0
        self._seen += video.shape[0]
        planner = self._planner
        tokenizer = pl_module.tokenizer
        with torch.no_grad():
            encoding = tokenizer.encode(video)
            costs: dict[str, Tensor] = {}
            if "scorer" in self.policies:
                costs["scorer"] = planner.costs("scorer", video, encoding)
            if "oracle" in self.policies:
                costs["oracle"] = planner.costs("oracle", video, encoding)
            if len(costs) == 2:  # both in the cost's units (TokenBudgetPlanner.costs)
                self._predicted.append(costs["scorer"].float().cpu())
                self._measured.append(costs["oracle"].float().cpu())
            if first_batch and "scorer" in costs:
                self._check_solvers(costs["scorer"])
            for key in self._keys:
                policy, mode, budget = key
                if policy == "uniform":
                    lengths = planner.plan(video, encoding, budget, "uniform")
                else:
                    reuse = costs.get(policy) if mode in ("batch", "per_clip") else None
                    lengths = planner.plan(video, encoding, budget, policy, mode=mode, costs=reuse)
                recon = tokenizer.decode(encoding.codes, lengths).clamp(0, 1)
                self._meters[key].update(video, recon)
                self._lengths[key].append(lengths.cpu())
                shown = policy == "uniform" or (policy == "scorer" and mode == self.modes[0])
                if first_batch and shown and key in self._budget_keys:
                    label = f"{policy} {budget.mean_tokens:g}\n{lengths[0].tolist()}"
                    self._frames[label] = recon[0].cpu()
            if first_batch:
                self._frames = {"input": video[0].cpu(), **self._frames}
        complexity = batch.get("complexity")
        if complexity is None:
            complexity = torch.full((video.shape[0], video.shape[2]), float("nan"))
        self._complexity.append(complexity[: video.shape[0]].float().cpu())

    def _check_solvers(self, costs: Tensor) -> None:
        """The other exact solver must reach the same objective on the same costs."""
        other = "fast" if self.solver == "mip" else "mip"
        candidates = self._planner.candidates
        for budget, token_budget in self._token_budgets.items():
            mean = token_budget.mean_tokens
            kwargs = {"mode": "batch", "equality": self.equality}
            try:
                ours = allocate(costs, candidates, mean, solver=self.solver, **kwargs)
                theirs = allocate(costs, candidates, mean, solver=other, **kwargs)
            except ValueError as error:  # e.g. an infeasible equality budget
                self._solver_check.append(f"budget {budget:g}: not checked ({error})")
                continue
            gap = abs(ours.objective - theirs.objective)
            # the report prints objectives to 6 decimals: a gap under 1e-5 is float rounding
            verdict = "same optimum" if gap <= 1e-5 * max(1.0, abs(ours.objective)) else "DIFFER"
            self._solver_check.append(
                f"budget {budget:g}: {ours.solver} objective {ours.objective:.6f} vs "
                f"{theirs.solver} {theirs.objective:.6f} ({verdict}; "
                f"{ours.solve_seconds * 1e3:.0f} ms vs {theirs.solve_seconds * 1e3:.0f} ms)"
            )

    def _gather(self, parts: list[Tensor], trailing: tuple[int, ...], device: Any) -> Tensor:
        local = torch.cat(parts) if parts else torch.zeros((0, *trailing))
        return gather_rows(local.to(device)).cpu()

    # ------------------------------------------------------------------ epoch end
    @override
    def on_split_end(
        self, split: Split, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        if not self._active:
            return
        self._active = False
        tokenizer = pl_module.tokenizer
        tokens, blocks = tokenizer.tokens_per_block, tokenizer.num_blocks
        device = pl_module.device
        num_candidates = len(self._planner.candidates)
        lengths = {key: self._gather(self._lengths[key], (blocks,), device) for key in self._keys}
        complexity = self._gather(self._complexity, (tokenizer.num_frames,), device)
        predicted = self._gather(self._predicted, (blocks, num_candidates), device)
        measured = self._gather(self._measured, (blocks, num_candidates), device)
        rows = []
        per_video: dict[tuple[str, str, float], dict[str, Tensor]] = {}
        for key in self._keys:
            results = self._meters[key].compute()  # synced across ranks by torchmetrics
            policy, mode, _ = key
            per_video[(policy, mode, key[2].fraction)] = self._meters[key].per_video()
            chosen = lengths[key].float()
            row = {
                "mode": mode,
                "policy": policy,
                "budget": key[2].fraction,  # asked, as a fraction of the tokens per block
                "mean_tokens_per_block": float(chosen.mean()) if chosen.numel() else math.nan,
                "tokens_per_clip": float(chosen.sum(1).mean()) if chosen.numel() else math.nan,
                **{k: v for k, v in results.items() if k in _QUALITY},
            }
            rows.append(row)
            tag = f"{split}/alloc/{policy}" + ("" if mode == "-" else f"_{mode}")
            for name in ("psnr", "psnr_pooled", "ssim", "lpips", "fvd"):
                if name in results and not math.isnan(results[name]):
                    mean = key[2].mean_tokens
                    pl_module.log(f"{tag}@{mean:g}/{name}", results[name], sync_dist=False)
        summary = self._summary(rows, tokens, per_video)
        per_block = _per_block(complexity, tokenizer.frames_per_block)
        rho = self._complexity_spearman(lengths, per_block)
        for row in summary:
            for policy, name in (("scorer", ""), ("oracle", "oracle_")):
                pooled, within = rho.get(
                    (policy, row["mode"], row["mean_tokens_per_block"]), (math.nan, math.nan)
                )
                row[f"{name}complexity_spearman"] = pooled
                row[f"{name}complexity_spearman_within_clip"] = within
            names = ("complexity_spearman", "complexity_spearman_within_clip")
            for name in ("captured_gain", "token_savings", *names):
                if math.isfinite(row[name]):
                    pl_module.log(
                        f"{split}/alloc/{name}_{row['mode']}@{row['budget']:g}",
                        row[name],
                        sync_dist=False,
                    )
        accuracy = _scorer_accuracy(predicted, measured, self._planner.candidates)
        notes = self._notes(rows, summary, per_block)
        self._meters = {}
        # trainer.log_dir broadcasts from rank 0: every rank must ask for it
        directory = Path(trainer.log_dir or trainer.default_root_dir)
        if trainer.is_global_zero:
            self._write(
                trainer,
                directory,
                split,
                rows,
                summary,
                accuracy,
                notes,
                lengths,
                per_block,
                tokens,
                predicted,
                measured,
            )

    def _summary(
        self,
        rows: list[dict[str, Any]],
        tokens: int,
        per_video: dict[tuple[str, str, float], dict[str, Tensor]],
    ) -> list[dict[str, Any]]:
        """Gains, captured gain, regret and token savings per mode and budget.

        Each mode is judged in the metric it optimises (``optimised_metric``: with MSE costs
        the pooled PSNR in the modes that share a budget over the batch, the per-clip PSNR in
        ``per_clip``); gains are signed so that positive is better. The per-clip PSNR of each
        policy stays beside it (``psnr_*``). ``captured_gain_low``/``_high`` bound the
        captured gain with a 95 % paired bootstrap over the clips
        (``adaptok.metrics.allocation_gain.captured_gain_interval``), from ``per_video``:
        each (policy, row mode, budget)'s per-clip values (``VideoQualityMeter.per_video``).
        """
        out = []
        for mode in self.modes:
            metric, higher = optimised_metric(self._cost, mode)
            sign = 1.0 if higher else -1.0
            curve = sorted(
                (r["mean_tokens_per_block"], sign * r[metric])
                for r in rows
                if r["policy"] == "uniform" and math.isfinite(r.get(metric, math.nan))
            )
            for budget in self.budgets:
                mean = budget * tokens

                def row_of(policy: str, mode: str = mode, mean: float = mean) -> dict[str, Any]:
                    # Matched on the ASKED budget: causal_table spends a little less (its
                    # block totals are rounded down onto the candidate grid).
                    for r in rows:
                        same = math.isclose(r["budget"] * tokens, mean, abs_tol=0.5)
                        if r["policy"] == policy and r["mode"] in (mode, "-") and same:
                            return r
                    return {"mean_tokens_per_block": math.nan}

                policies = {p: row_of(p) for p in ("scorer", "uniform", "oracle")}
                value = {p: r.get(metric, math.nan) for p, r in policies.items()}
                scorer, flat, oracle = (sign * value[p] for p in ("scorer", "uniform", "oracle"))
                captured, regret = captured_gain(scorer, flat, oracle, MIN_GAIN[metric])
                low, high = self._captured_interval(policies, per_video, metric, sign)
                spent = policies["scorer"]["mean_tokens_per_block"]

                needed = _tokens_to_match(scorer, curve)
                # what exact costs save: the ceiling of token_savings on these clips
                oracle_needed = _tokens_to_match(oracle, curve)
                oracle_spent = policies["oracle"]["mean_tokens_per_block"]
                out.append(
                    {
                        "mode": mode,
                        "budget": budget,
                        "mean_tokens_per_block": mean,
                        "scorer_tokens_per_block": spent,
                        "metric": metric,
                        "scorer": value["scorer"],
                        "uniform": value["uniform"],
                        "oracle": value["oracle"],
                        "oracle_gain": oracle - flat,
                        "scorer_gain": scorer - flat,
                        "captured_gain": captured,
                        "captured_gain_low": low,
                        "captured_gain_high": high,
                        "regret": regret,
                        "uniform_tokens_to_match": needed,
                        "token_savings": needed / spent if math.isfinite(needed) else needed,
                        "oracle_token_savings": oracle_needed / oracle_spent
                        if math.isfinite(oracle_needed)
                        else oracle_needed,
                        **{f"psnr_{p}": r.get("psnr", math.nan) for p, r in policies.items()},
                    }
                )
        return out

    @staticmethod
    def _captured_interval(
        policies: dict[str, dict[str, Any]],
        per_video: dict[tuple[str, str, float], dict[str, Tensor]],
        metric: str,
        sign: float,
    ) -> tuple[float, float]:
        """95 % bootstrap interval of the captured gain (NaN when a policy's clips are absent)."""
        name = "psnr" if metric == "psnr_pooled" else metric
        values = []
        for policy in ("scorer", "uniform", "oracle"):
            row = policies[policy]
            clips = per_video.get((policy, row.get("mode", ""), row.get("budget", math.nan)), {})
            if name not in clips:
                return math.nan, math.nan
            values.append(sign * clips[name].numpy())
        # per-clip PSNRs from each clip's MSE (the meters' default "video_mse" definition)
        return captured_gain_interval(
            *values, pooled_psnr=metric == "psnr_pooled", min_gain=MIN_GAIN[metric]
        )

    def _complexity_spearman(
        self, lengths: dict[RowKey, Tensor], per_block: Tensor
    ) -> dict[tuple[str, str, float], tuple[float, float]]:
        """Spearman(block complexity, tokens) per (policy, mode, mean tokens); NaN if unknown.

        For the scorer's and the oracle's allocations (the oracle's is what exact costs give:
        the reference for the scorer's), over the blocks of the split whose shards record a
        complexity: pooled over all blocks, and within clips
        (:func:`~adaptok.metrics.allocation_gain.within_clip_spearman`: what per-clip
        allocation, which cannot move tokens between clips, controls).

        Returns:
            ``(pooled, within_clip)`` per key.
        """
        valid = ~torch.isnan(per_block)
        out = {}
        for (policy, mode, budget), chosen in lengths.items():
            if policy not in ("scorer", "oracle"):
                continue
            key = (policy, mode, budget.mean_tokens)
            pooled = math.nan
            if valid.any():
                x, y = per_block[valid].numpy(), chosen.float()[valid].numpy()
                if x.size >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
                    pooled = float(spearmanr(x, y).statistic)
            within = math.nan  # no clip evaluated (an empty split): nothing to rank
            if per_block.numel() and chosen.numel():
                within = within_clip_spearman(per_block.numpy(), chosen.float().numpy())
            out[key] = (pooled, within)
        return out

    def _notes(
        self, rows: list[dict[str, Any]], summary: list[dict[str, Any]], per_block: Tensor
    ) -> list[str]:
        notes = [
            f"solver: {self.solver} (python-mip CBC)" if self.solver == "mip" else "solver: fast",
            f"equality budget: {self.equality}; LPIPS backbone: {self._lpips_net}",
            *(
                f"causal_table at {budget:g}: block targets "
                f"{[round(t, 3) for t in targets]} tokens per block, "
                f"{'the official table' if self.block_table is None else 'block_table'}; each "
                "block's total over a batch rounded down onto the candidate grid"
                for budget, targets in self._block_targets.items()
            ),
            *(f"solver check, first batch: {line}" for line in self._solver_check),
        ]
        curve = sorted(
            (r["mean_tokens_per_block"], r["psnr"]) for r in rows if r["policy"] == "uniform"
        )
        if len(curve) >= 2:
            notes.append(
                f"uniform rate-distortion span: {curve[-1][1] - curve[0][1]:.2f} dB PSNR from "
                f"{curve[0][0]:g} to {curve[-1][0]:g} tokens per block"
            )
        notes.extend(worse_than_uniform(summary))
        notes.append(describe_psnr())
        known = int((~torch.isnan(per_block)).sum())
        notes.append(
            f"complexity_spearman: over the {known} blocks whose shards record a per-frame "
            "content complexity (synthetic clips)"
        )
        return notes

    # ------------------------------------------------------------------ output (rank 0)
    @rank_zero_only
    def _write(
        self,
        trainer: pl.Trainer,
        directory: Path,
        split: Split,
        rows: list[dict[str, Any]],
        summary: list[dict[str, Any]],
        accuracy: list[dict[str, Any]],
        notes: list[str],
        lengths: dict[RowKey, Tensor],
        per_block: Tensor,
        tokens: int,
        predicted: Tensor,
        measured: Tensor,
    ) -> None:
        step = trainer.global_step
        figures: dict[str, Figure] = {"rate_distortion": rate_distortion_figure(rows)}
        chosen = {  # the first mode in the figure; every mode's histogram goes to TensorBoard
            f"{mode} @ {budget.fraction:g}": lengths[(policy, mode, budget)]
            for policy, mode, budget in self._keys
            if policy == "scorer"
        }
        shown_lengths = {k: v for k, v in chosen.items() if k.startswith(f"{self.modes[0]} @")}
        if chosen:
            shown = per_block if not torch.isnan(per_block).all() else None
            figures["lengths"] = lengths_figure(shown_lengths, tokens, shown, self.heatmap_clips)
        if predicted.numel():
            figures["scorer_scatter"] = scorer_scatter_figure(
                predicted, measured, self._planner.candidates
            )
        if self._frames:  # each block's first and last frame: a cut inside a block shows
            step = trainer.lightning_module.tokenizer.frames_per_block
            frames = next(iter(self._frames.values())).shape[1]
            shown = sorted({t for b in range(0, frames, step) for t in (b, b + step - 1)})
            figures["frames"] = frames_at_budgets_figure(self._frames, shown)
        writer = tensorboard_writer(trainer)
        if writer is not None and chosen:
            for title, value in chosen.items():
                writer.add_histogram(f"{split}/alloc/lengths {title}", value.flatten(), step)
        if split == "test":
            for name, figure in figures.items():
                figure.savefig(directory / f"allocation_{name}.png", dpi=110)
        for name, figure in figures.items():
            log_figure(trainer, f"{split}/alloc/{name}", figure, step)
        if split != "test":
            return
        extra = [
            "## What allocation buys (each mode in the metric it optimises)",
            "",
            markdown_table(summary),
            "",
            f"metric: what the mode's allocation maximises with {self._cost} block costs "
            "(psnr_pooled: PSNR of the squared error pooled over every clip, for modes that "
            "share a budget over the batch; psnr: mean over clips of each clip's PSNR); "
            "gains are signed so that positive is better; psnr_* = each policy's mean per-clip "
            "PSNR. captured_gain = (scorer - uniform) / (oracle - uniform), "
            "captured_gain_low / _high: its 95 % paired bootstrap interval over the clips (the "
            "allocations kept, the clips resampled); regret = oracle - "
            "scorer; token_savings = uniform tokens needed for the scorer's quality (read off "
            "the uniform curve in the same metric) / the scorer's tokens; "
            "oracle_token_savings: the same for the oracle (what exact costs save); "
            "complexity_spearman / oracle_complexity_spearman: Spearman over blocks of the "
            "content complexity and the tokens the scorer's / the oracle's allocation gives, "
            "pooled over all blocks; *_within_clip: the same with ranks taken and centred within "
            "each clip (what per-clip allocation, which cannot move tokens between clips, "
            "controls).",
            "",
            "## Scorer accuracy (predicted vs measured cost, earlier blocks at full length)",
            "",
            markdown_table(accuracy) if accuracy else "(needs both scorer and oracle policies)",
            "",
            "## Notes",
            "",
            *(f"- {note}" for note in notes),
            *(f"- {line}" for line in _data_lines(trainer, split)),
            f"- commit: {git_commit()}",
            "",
            *(f"![{name}](allocation_{name}.png)" for name in figures),
        ]
        md, _ = write_report(
            directory, "allocation_report", "Token allocation", rows, sections=extra
        )
        write_report(directory, "allocation_summary", "Allocation summary", summary)
        if accuracy:
            write_report(directory, "allocation_scorer_accuracy", "Scorer accuracy", accuracy)
        log.info("AllocationEvaluator report written to %s", md)


def worse_than_uniform(summary: list[dict[str, Any]]) -> list[str]:
    """A report note naming the modes and budgets where the scorer loses to uniform, if any.

    A loss within the metric's noise floor (:data:`~adaptok.metrics.allocation_gain.MIN_GAIN`,
    e.g. 0.05 dB) is named as such, not as a loss.

    Args:
        summary: Rows of the allocation summary (``mode``, ``budget``, ``metric``,
            ``scorer_gain``: the scorer's gain over uniform in ``metric``, NaN if unknown).

    Returns:
        Up to two notes (losses beyond the noise floor; losses within it), or none when the
        scorer is never below uniform.
    """
    beyond, within = [], []
    for row in summary:
        gain = row["scorer_gain"]
        if math.isfinite(gain) and gain < 0:
            cell = f"{row['mode']} at {row['budget']:.0%} ({row['metric']} {gain:+.3g})"
            (within if -gain < MIN_GAIN.get(row["metric"], 0.0) else beyond).append(cell)
    notes = []
    if beyond:
        notes.append(
            "the scorer's allocation is WORSE than uniform at: " + "; ".join(beyond) + " (its "
            "predicted costs mislead IPAL there)"
        )
    if within:
        notes.append(
            "the scorer's allocation is below uniform, within the noise floor (MIN_GAIN), at: "
            + "; ".join(within)
        )
    return notes


def _tokens_to_match(quality: float, curve: list[tuple[float, float]]) -> float:
    """Uniform tokens per block reaching ``quality`` on ``curve`` ((tokens, quality) rows); NaN if unknown."""
    if not curve or not math.isfinite(quality):
        return math.nan
    return uniform_tokens_to_match(quality, [u[0] for u in curve], [u[1] for u in curve])


def _per_block(complexity: Tensor, frames_per_block: int) -> Tensor:
    """``(N, T)`` per-frame complexity -> ``(N, K)`` block means (NaN where unknown)."""
    if complexity.numel() == 0:
        return complexity.new_zeros((0, 0))
    return complexity.view(complexity.shape[0], -1, frames_per_block).mean(-1)


def _scorer_accuracy(
    predicted: Tensor, measured: Tensor, candidates: Sequence[int]
) -> list[dict[str, Any]]:
    """MAE and Spearman of predicted vs measured cost, per candidate and overall."""
    if predicted.numel() == 0:
        return []
    rows = []
    for column, length in [*enumerate(candidates), (None, "all")]:
        pred = (predicted if column is None else predicted[..., column]).flatten().numpy()
        real = (measured if column is None else measured[..., column]).flatten().numpy()
        rho = (
            float(spearmanr(pred, real).statistic)
            if pred.size > 2 and np.ptp(pred) > 0 and np.ptp(real) > 0
            else math.nan
        )
        rows.append(
            {
                "tokens": length,
                "spearman": rho,
                "mae": float(np.abs(pred - real).mean()),
                "n": pred.size,
            }
        )
    return rows


def _data_lines(trainer: pl.Trainer, split: Split) -> list[str]:
    """The report's notes on the data of ``split``: each shard setting, then the shard count.

    The shard datamodules keep their settings in a ``urls`` mapping keyed by split and the
    shards they resolved in a ``shards`` mapping (``VideoShardsDataModule``,
    ``TokenShardsDataModule``); a datamodule with a ``{split}_urls`` attribute is read too.
    No datamodule, or no setting for the split: no lines.
    """
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is None:
        return []
    table = getattr(datamodule, "urls", None)
    if isinstance(table, Mapping) and split in table:
        urls = table[split]
    else:
        urls = getattr(datamodule, f"{split}_urls", None)
    if not urls:
        return []
    lines = [f"data: {url}" for url in ([urls] if isinstance(urls, str) else urls)]
    shards = getattr(datamodule, "shards", None)
    if isinstance(shards, Mapping) and split in shards:
        lines.append(f"data shards: {len(shards[split])} (all ranks together)")
    return lines
