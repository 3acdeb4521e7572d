"""TokenHealth: do the tokens carry the video? Per-block code diagnostics next to trivial baselines.

At the end of a test run it writes `token_health.md` and `token_health.csv` into the run's
log folder: the tokenizer's per-clip PSNR with every block at full length (M tokens), the
PSNR of the per-block mean colour and of per-block means on 2x2 / 4x4 grids on the same
clips (`adaptok.metrics.token_diagnostics.block_mean_baseline`), how many clips the
tokenizer beats the mean colour on, and what the codes look like per block (distinct codes
per block, per-position perplexity; `docs/tokenizer_collapse.md`). Medians are quoted:
flat clips reach very high PSNR under the baselines and would dominate a mean.

Works with any module that has a `tokenizer` attribute (TokenizerModule, ScorerModule);
the rows of every rank are gathered, so the report covers every clip once under DDP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from typing_extensions import override

from adaptok.distributed import gather_rows
from adaptok.metrics.frame_quality import psnr_per_video
from adaptok.metrics.token_diagnostics import block_mean_baseline, code_diagnostics
from callbacks.report import markdown_table

__all__ = ["TokenHealth", "summarize_token_health"]


def summarize_token_health(
    codes: torch.Tensor,
    psnr: torch.Tensor,
    baselines: dict[str, torch.Tensor],
    tokens_per_block: int,
    codebook_size: int,
) -> dict[str, float]:
    """The figures of `token_health.md`.

    Args:
        codes: Long `(B, K * M)` codes of B clips.
        psnr: `(B,)` tokenizer PSNR (dB) at M tokens per block.
        baselines: Name -> `(B,)` baseline PSNR (dB); must contain "mean_colour".
        tokens_per_block: M.
        codebook_size: V.

    Returns:
        Flat name -> value: `clips`, `tokens_per_block`, `psnr_median`, `<baseline>_psnr_median`,
        `beats_mean_colour` (share of clips, in [0, 1]), `gain_over_mean_colour_median` (dB),
        `distinct_codes_per_block`, `distinct_codes_per_block_busy` (the half of the clips
        with the lowest mean-colour PSNR), `position_perplexity_mean`,
        `codebook_perplexity`, `codes_used`.
    """
    mean_colour = baselines["mean_colour"]
    gain = psnr - mean_colour
    busy = mean_colour <= mean_colour.median()
    stats = code_diagnostics(codes, tokens_per_block, codebook_size)
    busy_stats = code_diagnostics(codes[busy], tokens_per_block, codebook_size)
    out = {
        "clips": float(codes.shape[0]),
        "tokens_per_block": float(tokens_per_block),
        "psnr_median": float(psnr.median()),
    }
    out |= {f"{name}_psnr_median": float(values.median()) for name, values in baselines.items()}
    out |= {
        "beats_mean_colour": float((gain > 0).float().mean()),
        "gain_over_mean_colour_median": float(gain.median()),
        "distinct_codes_per_block": stats.distinct_per_block,
        "distinct_codes_per_block_busy": busy_stats.distinct_per_block,
        "position_perplexity_mean": float(stats.position_perplexity.mean()),
        "codebook_perplexity": stats.codebook_perplexity,
        "codes_used": float(stats.codes_used),
    }
    return out


class TokenHealth(pl.Callback):
    """Writes `token_health.md` / `.csv` at the end of `adaptok test`.

    Args:
        grids: Grid sizes of the block-mean baselines (1 = mean colour, always included);
            each must divide the tokenizer's image size.
        num_samples: Clips per rank (the first ones of the test loader), None = all; set it
            as `AllocationEvaluator.num_samples` so both reports describe the same clips.

    Raises:
        ValueError: On a grid < 1 (here) or one that does not divide the frame (at setup),
            and on a test clip shorter than the tokenizer's `num_frames`.
    """

    def __init__(self, grids: tuple[int, ...] = (1, 2, 4), num_samples: int | None = None) -> None:
        super().__init__()
        if any(g < 1 for g in grids):
            raise ValueError(f"grids must be >= 1, got {grids}")
        if num_samples is not None and num_samples < 1:
            raise ValueError(f"num_samples must be >= 1 or None, got {num_samples}")
        self.grids = tuple(sorted({1, *grids}))
        self.num_samples = num_samples
        self._rows: list[torch.Tensor] = []
        self._codes: list[torch.Tensor] = []

    @staticmethod
    def _name(grid: int) -> str:
        return "mean_colour" if grid == 1 else f"grid{grid}x{grid}"

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        size = pl_module.tokenizer.image_size
        bad = [g for g in self.grids if size % g]
        if bad:
            raise ValueError(f"TokenHealth grids {bad} do not divide the image size {size}")

    @override
    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._rows, self._codes = [], []

    @override
    @torch.no_grad()
    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        tokenizer = pl_module.tokenizer
        seen = sum(rows.shape[0] for rows in self._rows)
        if self.num_samples is not None and seen >= self.num_samples:
            return
        video = batch["video"].float()
        if self.num_samples is not None:
            video = video[: self.num_samples - seen]
        if video.shape[2] != tokenizer.num_frames:
            # every rank must gather codes of one width: full clips only
            raise ValueError(
                f"TokenHealth needs clips of {tokenizer.num_frames} frames, got "
                f"{tuple(video.shape)} (set the datamodule's num_frames to the tokenizer's)"
            )
        codes = tokenizer.encode(video).codes
        full = torch.full(
            (video.shape[0], codes.shape[1] // tokenizer.tokens_per_block),
            tokenizer.tokens_per_block,
            dtype=torch.long,
            device=video.device,
        )
        recon = tokenizer.decode(codes, full).clamp(0, 1)
        columns = [psnr_per_video(video, recon)]
        columns += [
            psnr_per_video(video, block_mean_baseline(video, tokenizer.frames_per_block, grid))
            for grid in self.grids
        ]
        self._rows.append(torch.stack(columns, dim=1).float())
        self._codes.append(codes)

    @override
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        device = pl_module.device
        width = 1 + len(self.grids)
        rows = torch.cat(self._rows) if self._rows else torch.zeros(0, width, device=device)
        tokenizer = pl_module.tokenizer
        codes = (
            torch.cat(self._codes)
            if self._codes
            else torch.zeros(0, tokenizer.num_tokens, dtype=torch.long, device=device)
        )
        rows, codes = gather_rows(rows.to(device)), gather_rows(codes.to(device))
        log_dir = trainer.log_dir  # asked on every rank (a broadcast)
        if not trainer.is_global_zero or rows.shape[0] == 0 or log_dir is None:
            return
        rows, codes = rows.cpu(), codes.cpu()
        baselines = {self._name(g): rows[:, 1 + i] for i, g in enumerate(self.grids)}
        summary = summarize_token_health(
            codes,
            rows[:, 0],
            baselines,
            tokenizer.tokens_per_block,
            tokenizer.quantizer.codebook_size,
        )
        write_token_health(Path(log_dir), summary, tokenizer.tokens_per_block)
        pl_module.print(f"token health: {Path(log_dir) / 'token_health.md'}")


def _label(name: str) -> str:
    """``mean_colour_psnr_median`` -> ``mean colour``; ``grid2x2_psnr_median`` -> ``means on a 2x2 grid``."""
    stem = name.removesuffix("_psnr_median")
    return (
        "mean colour" if stem == "mean_colour" else f"means on a {stem.removeprefix('grid')} grid"
    )


def write_token_health(folder: Path, summary: dict[str, float], tokens_per_block: int) -> None:
    """Writes `token_health.csv` (name, value) and `token_health.md` into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["name,value", *(f"{name},{value:.6g}" for name, value in summary.items())]
    (folder / "token_health.csv").write_text("\n".join(lines) + "\n")
    m = tokens_per_block
    baseline_rows = [
        {"reconstruction": "tokenizer, all M tokens", "median PSNR (dB)": summary["psnr_median"]}
    ] + [
        {"reconstruction": f"baseline: per-block {_label(name)}", "median PSNR (dB)": v}
        for name, v in summary.items()
        if name.endswith("_psnr_median") and name != "psnr_median"
    ]
    text = [
        "# Token health",
        "",
        f"{int(summary['clips'])} clips, every block at M = {m} tokens; PSNR per clip from the "
        "MSE over all its frames (capped at 100 dB), medians over clips.",
        "",
        markdown_table(
            [
                {k: f"{v:.2f}" if isinstance(v, float) else v for k, v in r.items()}
                for r in baseline_rows
            ]
        ),
        "",
        f"- tokenizer beats the per-block mean colour on {summary['beats_mean_colour']:.0%} of "
        f"the clips, by a median of {summary['gain_over_mean_colour_median']:+.2f} dB",
        f"- distinct codes per block: {summary['distinct_codes_per_block']:.2f} of {m} "
        f"(busy half of the clips: {summary['distinct_codes_per_block_busy']:.2f})",
        f"- per-position code perplexity (mean over positions): "
        f"{summary['position_perplexity_mean']:.2f}; codebook perplexity "
        f"{summary['codebook_perplexity']:.2f}; codes used {int(summary['codes_used'])}",
    ]
    (folder / "token_health.md").write_text("\n".join(text) + "\n")
