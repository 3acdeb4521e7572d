"""Figures of the token-allocation evaluation, drawn without pyplot (no global backend).

Each function returns a ``matplotlib.figure.Figure``; the caller saves it as PNG beside the
report and logs it to TensorBoard.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

__all__ = [
    "frames_at_budgets_figure",
    "lengths_figure",
    "rate_distortion_figure",
    "scorer_scatter_figure",
]

_METRICS = (("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("lpips", "LPIPS"))


def rate_distortion_figure(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """PSNR, SSIM and LPIPS against mean tokens per block, one line per policy and mode.

    Args:
        rows: Report rows with ``policy``, ``mode``, ``mean_tokens_per_block`` and metrics.
    """
    metrics = [(k, label) for k, label in _METRICS if any(k in r for r in rows)]
    figure = Figure(figsize=(4.0 * len(metrics), 3.4))
    axes = np.atleast_1d(figure.subplots(1, len(metrics)))
    lines = sorted({(r["policy"], r["mode"]) for r in rows})
    for policy, mode in lines:
        points = sorted(
            (r["mean_tokens_per_block"], r)
            for r in rows
            if r["policy"] == policy and r["mode"] == mode
        )
        label = policy if mode == "-" else f"{policy} ({mode})"
        style = {"uniform": "k--", "oracle": ":"}.get(policy, "-")
        for axis, (key, name) in zip(axes, metrics, strict=True):
            shown = [(p, r[key]) for p, r in points if np.isfinite(r.get(key, np.nan))]
            axis.plot(
                [p for p, _ in shown],
                [v for _, v in shown],
                style,
                marker="o",
                markersize=3,
                label=label,
            )
            axis.set_xlabel("mean tokens per block")
            axis.set_ylabel(name)
            axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    return figure


def scorer_scatter_figure(predicted: Tensor, measured: Tensor, candidates: Sequence[int]) -> Figure:
    """Predicted vs measured block cost, one colour per candidate length.

    Args:
        predicted: ``(N, K, J)`` predicted costs in the metric's units.
        measured: ``(N, K, J)`` measured costs.
        candidates: The ``J`` candidate lengths.
    """
    figure = Figure(figsize=(4.2, 4.0))
    axis = figure.subplots()
    colours = np.linspace(0.1, 0.9, len(candidates))
    for column, length in enumerate(candidates):
        axis.scatter(
            measured[..., column].flatten().numpy(),
            predicted[..., column].flatten().numpy(),
            s=6,
            alpha=0.6,
            color=(colours[column], 0.3, 1 - colours[column]),
            label=f"{length}",
        )
    low = float(min(predicted.min(), measured.min()))
    high = float(max(predicted.max(), measured.max()))
    axis.plot([low, high], [low, high], "k:", linewidth=1)
    axis.set_xlabel("measured cost")
    axis.set_ylabel("predicted cost")
    axis.legend(title="tokens", fontsize=6, ncols=2)
    figure.tight_layout()
    return figure


def lengths_figure(
    lengths: Mapping[str, Tensor],
    tokens_per_block: int,
    complexity: Tensor | None,
    clips: int,
) -> Figure:
    """Histogram of chosen lengths and tokens-per-block heatmap per budget (+ complexity).

    Args:
        lengths: ``{title: (N, K) long lengths}``, one column of panels each.
        tokens_per_block: Maximum length M (histogram range and colour scale).
        complexity: ``(N, K)`` per-block content complexity (NaN when unknown), drawn as an
            extra heatmap column when given.
        clips: Clips shown in the heatmaps.
    """
    columns = len(lengths) + (complexity is not None)
    figure = Figure(figsize=(3.2 * columns, 6.0))
    axes = figure.subplots(2, columns, squeeze=False)
    image = None
    for column, (title, chosen) in enumerate(lengths.items()):
        axes[0, column].hist(chosen.flatten().numpy(), bins=np.arange(tokens_per_block + 2) - 0.5)
        axes[0, column].set_title(title, fontsize=8)
        axes[0, column].set_xlabel("tokens in a block")
        image = axes[1, column].imshow(
            chosen[:clips].numpy(), aspect="auto", vmin=0, vmax=tokens_per_block, cmap="viridis"
        )
        axes[1, column].set_xlabel("block")
        axes[1, column].set_ylabel("clip")
    if image is not None:
        figure.colorbar(image, ax=axes[1, : len(lengths)].tolist(), label="tokens")
    if complexity is not None:
        axes[0, -1].axis("off")
        heat = axes[1, -1].imshow(complexity[:clips].numpy(), aspect="auto", cmap="magma")
        axes[1, -1].set_title("block complexity", fontsize=8)
        axes[1, -1].set_xlabel("block")
        figure.colorbar(heat, ax=axes[1, -1])
    return figure


def frames_at_budgets_figure(panels: Mapping[str, Tensor], frames: Sequence[int]) -> Figure:
    """The same clip reconstructed at several budgets: one row per panel, one column a frame.

    Args:
        panels: ``{title: (C, T, H, W) video in [0, 1]}``; the first is usually the input.
            A title may hold a line break (each line must fit the row's 1.4 inch height).
        frames: Frame indices to show.
    """
    figure = Figure(figsize=(1.3 * len(frames), 1.4 * len(panels)))
    axes = figure.subplots(len(panels), len(frames), squeeze=False)
    for row, (title, video) in enumerate(panels.items()):
        for column, frame in enumerate(frames):
            axis = axes[row, column]
            axis.imshow(video[:, frame].permute(1, 2, 0).clamp(0, 1).numpy())
            axis.set_xticks([])
            axis.set_yticks([])
            if column == 0:
                axis.set_ylabel(title, fontsize=7)
            if row == 0:
                axis.set_title(f"frame {frame}", fontsize=7)
    figure.tight_layout()
    return figure
