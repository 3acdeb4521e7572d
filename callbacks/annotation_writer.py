"""AnnotationWriter: token annotations to WebDataset shards, resumable, with a summary.

Writes what ``modules.AnnotatorModule.predict_step`` returns, one sample per window, to
``output_dir/{split}-NNNNNN.tar`` (one process) or ``{split}-r{rank}-NNNNNN.tar`` (each DDP
rank its own). Sample members (the format ``datamodules.TokenShardsDataModule`` reads):

- ``codes.npy`` uint16 (K, M): every code (kept lengths are prefixes);
- ``costs.npy`` float32 (K, J): the scorer's predicted cost table (full-length context);
- ``lengths.npy`` int16 (P, K): per-block lengths at each of the P budgets;
- ``cond.npy`` uint16 (K, M): frame prediction only, codes of the condition clip;
- ``json``: source key, label, class name, window start, budgets, candidate lengths, K, M,
  codebook size, the tokenizer's provenance (checkpoint + SHA-256 of its weights) and the
  allocation procedure (mode, ``equality``, solver, ``allocation_version``).

Resumable: a shard is written as a hidden ``.NAME.tmp`` and renamed when complete, next to a
``NAME.keys.json`` sidecar (its keys, length statistics and the run's settings). Finished
shards made with other settings (tokenizer, scorer, budgets, allocation procedure, strides,
class names) stop the run, or with ``on_mismatch: overwrite`` are deleted, so stale annotations
are never mixed with new ones. Otherwise a re-run deletes this rank's leftover temporary
files, reads which windows the finished shards hold, asks the datamodule not to produce them
again (``exclude_keys``) and drops any that still arrive, and numbers its new shards after the
existing ones: nothing is lost (an unfinished shard's windows are annotated again) and nothing
is duplicated.

At the end, rank 0 writes ``annotation_summary.md`` beside the shards (windows, mean tokens
per block at each budget, per block position, histogram of lengths) and prints it.
"""

from __future__ import annotations

import io
import json
import logging
import re
import tarfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter
from tqdm.auto import tqdm

from adaptok.data.sink import ShardSink

__all__ = [
    "AnnotationWriter",
    "annotation_fingerprint",
    "read_shard_index",
    "summarise_annotations",
]

log = logging.getLogger(__name__)

_SUMMARY = "annotation_summary.md"
_SIDECAR = ".keys.json"
_PER_WINDOW = ("source_key", "label", "class_name", "window_start")


def annotation_fingerprint(info: dict[str, Any]) -> dict[str, Any]:
    """What must be equal for two annotation runs to write the same windows.

    The budgets, candidate lengths, sizes, allocation procedure (mode, ``equality``, solver
    and ``allocation_version``, :data:`adaptok.budget_planner.PLANNING_VERSION`: a change of
    the planning code that may change lengths), condition frames, window strides, class names
    and the SHA-256 of the tokenizer's and the scorer's weights; the checkpoint path is left
    out (the same weights may be read from another file). Shards written before a field
    existed lack it, so they differ from a run that has it.

    Args:
        info: The fields every window of a run shares (``AnnotatorModule.annotation_info``
            and the datamodule's ``window_info``), or a shard's recorded ones.

    Returns:
        The comparable fields, JSON-normalised.
    """
    fingerprint = {k: v for k, v in info.items() if k not in (*_PER_WINDOW, "tokenizer")}
    provenance = info.get("tokenizer") or {}
    fingerprint["tokenizer_sha256"] = provenance.get("sha256")
    fingerprint["scorer_sha256"] = provenance.get("scorer_sha256")
    return json.loads(json.dumps(fingerprint, sort_keys=True))


def _shard_pattern(split: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(split)}-(?:r(?P<rank>\d+)-)?(?P<index>\d{{6}})\.tar$")


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def read_shard_index(path: Path) -> dict[str, Any]:
    """Keys and length statistics of a finished annotation shard.

    Reads the ``NAME.keys.json`` sidecar written with the shard; without one (a shard made
    elsewhere), scans the tar itself.

    Args:
        path: A finished ``.tar`` shard.

    Returns:
        ``{"info": {...} (the fields all its windows share: budgets, sizes, provenance),
        "keys": [...], "windows": n, "budgets": [...], "length_sum": (P, K) nested list,
        "length_hist": list of P {length: count} dicts, "clip_total_hist": list of P
        {tokens per clip: count} dicts}`` (sidecars written before the last key existed
        lack it).
    """
    sidecar = path.with_name(path.name + _SIDECAR)
    if sidecar.is_file():
        try:
            return json.loads(sidecar.read_text())
        except ValueError:
            log.warning("unreadable sidecar %s: reading the shard itself", sidecar)
    stats = _ShardStats()
    with tarfile.open(path, "r:") as archive:
        members: dict[str, dict[str, bytes]] = {}
        for member in archive:
            key, _, extension = member.name.partition(".")
            if extension in ("lengths.npy", "json"):
                handle = archive.extractfile(member)
                members.setdefault(key, {})[extension] = handle.read() if handle else b""
            else:
                members.setdefault(key, {})
        for key, files in members.items():
            if "lengths.npy" not in files:
                continue
            if not stats.keys:
                meta = json.loads(files["json"]) if "json" in files else {}
                stats.info = {k: v for k, v in meta.items() if k not in _PER_WINDOW}
            stats.add_window(key, files)
    return stats.as_dict()


class _ShardStats:
    """Keys and running length statistics of the samples of one shard."""

    def __init__(self, info: dict[str, Any] | None = None) -> None:
        self.info = dict(info or {})
        self.keys: list[str] = []
        self.budgets: list[float] = []
        self.length_sum: np.ndarray | None = None
        self.hist: list[Counter] = []
        self.clip_totals: list[Counter] = []

    def add_window(self, key: str, files: dict[str, bytes]) -> None:
        """Count a window from its members (``lengths.npy``, and ``json``'s budgets)."""
        lengths = np.load(io.BytesIO(files["lengths.npy"]), allow_pickle=False)
        meta = json.loads(files["json"]) if "json" in files else {}
        self.add(key, lengths, meta.get("budgets", []))

    def add(self, key: str, lengths: np.ndarray, budgets: list[float]) -> None:
        """Count a window: its key and its (P, K) lengths at the P ``budgets``."""
        self.keys.append(key)
        lengths = np.asarray(lengths, dtype=np.int64)
        if self.length_sum is None:
            self.length_sum = np.zeros_like(lengths)
            self.hist = [Counter() for _ in range(lengths.shape[0])]
            self.clip_totals = [Counter() for _ in range(lengths.shape[0])]
            self.budgets = [float(b) for b in budgets]
        self.length_sum += lengths
        for level, row in enumerate(lengths):
            self.hist[level].update(int(x) for x in row)
            self.clip_totals[level][int(row.sum())] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "info": self.info,
            "keys": self.keys,
            "windows": len(self.keys),
            "budgets": self.budgets,
            "length_sum": [] if self.length_sum is None else self.length_sum.tolist(),
            "length_hist": [{str(k): v for k, v in sorted(h.items())} for h in self.hist],
            "clip_total_hist": [
                {str(k): v for k, v in sorted(h.items())} for h in self.clip_totals
            ],
        }


class _AnnotationSink(ShardSink):
    """One rank's current temporary shard; renamed (with its sidecar) when complete.

    The sidecar ``NAME.keys.json`` (the shard's keys and length statistics, see
    :func:`read_shard_index`) is written before the tar gets its final name, so a finished
    shard always has it. A window is counted once it is in the shard (read from the members
    written), so the statistics hold exactly the shard's windows.
    """

    def __init__(
        self, out_dir: Path, prefix: str, index: int, samples_per_shard: int, info: dict
    ) -> None:
        super().__init__(out_dir, prefix, index, samples_per_shard)
        self.info = info
        self.stats = _ShardStats(info)

    def _added(self, key: str, files: dict[str, bytes]) -> None:
        """Count a window once it is in the shard (a failed write counts nothing)."""
        self.stats.add_window(key, files)

    def _before_rename(self, final: Path) -> None:
        final.with_name(final.name + _SIDECAR).write_text(json.dumps(self.stats.as_dict()))

    def _reset(self) -> None:
        self.stats = _ShardStats(self.info)


def summarise_annotations(
    indexes: list[dict[str, Any]], tokens_per_block: int | None = None, skipped: dict | None = None
) -> str:
    """Markdown summary of annotation shards from their indexes (:func:`read_shard_index`).

    Args:
        indexes: One index per finished shard.
        tokens_per_block: M, to show each budget's asked mean (fraction x M).
        skipped: Skip counts by reason of the run that wrote them.

    Returns:
        Markdown: total windows; per budget the asked and obtained mean tokens per block and
        per block position; the spread of tokens per clip (constant under ``per_clip``,
        varying with content under ``causal_table``); the histogram of per-block lengths.
    """
    windows = sum(int(i["windows"]) for i in indexes)
    used = [i for i in indexes if i["windows"] and i["length_sum"]]
    lines = ["# Token annotations", "", f"- windows: {windows}", f"- shards: {len(indexes)}"]
    if skipped:
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(skipped.items()))
        lines.append(f"- skipped in the last run: {sum(skipped.values())} ({reasons})")
    if not used:
        lines.append("\nNo annotated window.")
        return "\n".join(lines) + "\n"
    budgets = used[0]["budgets"]
    length_sum = sum(np.asarray(i["length_sum"], dtype=np.float64) for i in used)
    mean = length_sum / sum(int(i["windows"]) for i in used)
    hist = [Counter() for _ in budgets]
    for index in used:
        for level, counts in enumerate(index["length_hist"]):
            hist[level].update({int(k): int(v) for k, v in counts.items()})
    blocks = mean.shape[1]
    lines += ["", "## Mean tokens per block", ""]
    header = "| budget | asked | obtained | " + " | ".join(f"block {b}" for b in range(blocks))
    lines += [header + " |", "|" + "---|" * (3 + blocks)]
    for level, fraction in enumerate(budgets):
        asked = f"{fraction * tokens_per_block:.2f}" if tokens_per_block else "-"
        cells = " | ".join(f"{x:.2f}" for x in mean[level])
        lines.append(f"| {fraction:.3g} | {asked} | {mean[level].mean():.2f} | {cells} |")
    lines += _clip_total_lines(used, budgets, blocks, tokens_per_block)
    values = sorted(set().union(*hist))
    lines += ["", "## Histogram of per-block lengths (blocks)", ""]
    lines += ["| budget | " + " | ".join(str(v) for v in values) + " |"]
    lines += ["|" + "---|" * (1 + len(values))]
    for level, fraction in enumerate(budgets):
        lines.append(
            f"| {fraction:.3g} | " + " | ".join(str(hist[level][v]) for v in values) + " |"
        )
    return "\n".join(lines) + "\n"


def _clip_total_lines(
    used: list[dict[str, Any]], budgets: list[float], blocks: int, tokens_per_block: int | None
) -> list[str]:
    """Markdown table of the spread of tokens per clip at each budget (empty if unknown)."""
    if any("clip_total_hist" not in index for index in used):
        return []  # shards indexed before the clip totals were recorded
    lines = ["", "## Tokens per clip (spread over windows)", ""]
    lines += ["| budget | asked | mean | std | min | 5 % | median | 95 % | max |"]
    lines += ["|" + "---|" * 9]
    for level, fraction in enumerate(budgets):
        counts: Counter = Counter()
        for index in used:
            counts.update({int(k): int(v) for k, v in index["clip_total_hist"][level].items()})
        totals = np.array(sorted(counts), dtype=np.float64)
        weights = np.array([counts[int(t)] for t in totals], dtype=np.float64)
        mean = float((totals * weights).sum() / weights.sum())
        std = float(np.sqrt((weights * (totals - mean) ** 2).sum() / weights.sum()))
        cumulative = np.cumsum(weights) / weights.sum()

        def quantile(q: float, totals: np.ndarray = totals, cdf: np.ndarray = cumulative) -> float:
            return float(totals[min(int(np.searchsorted(cdf, q - 1e-12)), totals.size - 1)])

        asked = f"{fraction * tokens_per_block * blocks:.0f}" if tokens_per_block else "-"
        cells = [quantile(0.05), quantile(0.5), quantile(0.95)]
        lines.append(
            f"| {fraction:.3g} | {asked} | {mean:.1f} | {std:.1f} | {totals[0]:.0f} | "
            + " | ".join(f"{c:.0f}" for c in cells)
            + f" | {totals[-1]:.0f} |"
        )
    return lines


class AnnotationWriter(BasePredictionWriter):
    """Writes ``AnnotatorModule`` predictions as token shards (see the module docstring).

    Args:
        output_dir: Folder of the shards (created).
        split: Shard name prefix (``train``, ``val``).
        samples_per_shard: Windows per shard (the last shard may hold fewer).
        progress: Show a progress bar of windows written (rank 0).
        summary: Write and print ``annotation_summary.md`` at the end.
        on_mismatch: What to do with finished shards made with other settings (tokenizer,
            scorer, budgets, allocation procedure, strides, class names: see
            :func:`annotation_fingerprint`): ``error`` (stop, naming what differs) or
            ``overwrite`` (delete them and annotate anew).
        write_interval: Kept at ``batch``: each batch is written as it comes.
    """

    def __init__(
        self,
        output_dir: str,
        split: str = "train",
        samples_per_shard: int = 1000,
        progress: bool = True,
        summary: bool = True,
        on_mismatch: Literal["error", "overwrite"] = "error",
        write_interval: Literal["batch"] = "batch",
    ) -> None:
        super().__init__(write_interval)
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
        if on_mismatch not in ("error", "overwrite"):
            raise ValueError(f"on_mismatch must be 'error' or 'overwrite', got {on_mismatch!r}")
        if not re.fullmatch(r"[A-Za-z0-9_]+", split):
            raise ValueError(f"split must be letters, digits or '_', got {split!r}")
        self.output_dir = Path(output_dir)
        self.split = split
        self.samples_per_shard = samples_per_shard
        self.progress = progress
        self.summary = summary
        self.on_mismatch = on_mismatch
        self.sink: _AnnotationSink | None = None
        self.done: set[str] = set()
        self.written = 0
        self.duplicates = 0
        self.skipped: Counter = Counter()
        self.bar: Any = None
        self.info: dict[str, Any] = {}

    # ------------------------------------------------------------------ set-up / resume
    def _finished_shards(self) -> list[Path]:
        pattern = _shard_pattern(self.split)
        return sorted(
            p for p in self.output_dir.glob(f"{self.split}-*.tar") if pattern.match(p.name)
        )

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Clean this rank's leftovers, learn what is done, and tell the datamodule."""
        if stage != "predict":
            return
        # Window datasets are iterable (no sampler): Lightning cannot and need not list the
        # batch indices; samples are identified by their keys.
        warnings.filterwarnings("ignore", "Couldn't infer the batch indices", UserWarning)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        rank, world_size = trainer.global_rank, trainer.world_size
        prefix = self.split if world_size == 1 else f"{self.split}-r{rank}"
        for leftover in self.output_dir.glob(f".{prefix}-[0-9]*.tar.tmp"):
            log.info("removing unfinished shard %s of an interrupted run", leftover)
            leftover.unlink(missing_ok=True)
        self.info = pl_module.annotation_info() if hasattr(pl_module, "annotation_info") else {}
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "window_info"):
            self.info.update(datamodule.window_info())
        wanted = annotation_fingerprint(self.info)
        pattern = _shard_pattern(self.split)
        next_index = 0
        self.done.clear()
        stale: list[tuple[Path, list[str]]] = []
        for path in self._finished_shards():
            index = read_shard_index(path)
            if not index["windows"] and not path.with_name(path.name + _SIDECAR).is_file():
                raise ValueError(
                    f"{path} is not a token annotation shard (no lengths.npy member): point "
                    "the AnnotationWriter's output_dir at a folder of its own"
                )
            found = annotation_fingerprint(index.get("info") or {})
            if found != wanted:
                changed = sorted(
                    k for k in set(found) | set(wanted) if found.get(k) != wanted.get(k)
                )
                if self.on_mismatch == "error":
                    raise ValueError(
                        f"{path} was annotated with other settings ({', '.join(changed)} "
                        f"differ): delete {self.output_dir} or set the writer's "
                        "on_mismatch: overwrite"
                    )
                stale.append((path, changed))
                continue
            self.done.update(index["keys"])
            match = pattern.match(path.name)
            mine = (match["rank"] is None) if world_size == 1 else match["rank"] == str(rank)
            if mine:
                next_index = max(next_index, int(match["index"]) + 1)
        trainer.strategy.barrier("annotation_resume")  # every rank has read before any change
        if stale and trainer.is_global_zero:
            for path, changed in stale:
                log.warning("deleting %s: annotated with other %s", path, ", ".join(changed))
                path.unlink(missing_ok=True)
                path.with_name(path.name + _SIDECAR).unlink(missing_ok=True)
        trainer.strategy.barrier("annotation_cleaned")
        self.sink = _AnnotationSink(
            self.output_dir, prefix, next_index, self.samples_per_shard, self.info
        )
        self.written, self.duplicates = 0, 0
        self.skipped.clear()
        if self.done and datamodule is not None and hasattr(datamodule, "exclude_keys"):
            datamodule.exclude_keys(self.done)
        if self.done and trainer.is_global_zero:
            log.info(
                "resuming: %d window(s) already annotated in %s", len(self.done), self.output_dir
            )

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Open the progress bar (rank 0), sized by the datamodule when it can tell."""
        if not (self.progress and trainer.is_global_zero):
            return
        datamodule = getattr(trainer, "datamodule", None)
        total = None
        if datamodule is not None and hasattr(datamodule, "expected_windows"):
            expected = datamodule.expected_windows()
            if expected is not None:
                total = max(expected - len(self.done), 0) if trainer.world_size == 1 else expected
        self.bar = tqdm(
            total=total, desc=f"annotate {self.split}", unit="window", dynamic_ncols=True
        )

    # ------------------------------------------------------------------ writing
    def _sample_files(self, prediction: dict[str, Any], i: int) -> dict[str, bytes]:
        meta = {
            "source_key": prediction["source_key"][i],
            "label": int(prediction["label"][i]),
            "class_name": prediction["class_name"][i],
            "window_start": int(prediction["window_start"][i]),
            **self.info,
        }
        files = {
            "codes.npy": _npy(prediction["codes"][i].astype(np.uint16)),
            "costs.npy": _npy(prediction["costs"][i].astype(np.float32)),
            "lengths.npy": _npy(prediction["lengths"][i].astype(np.int16)),
            "json": json.dumps(meta, sort_keys=True).encode(),
        }
        if "cond" in prediction:
            files["cond.npy"] = _npy(prediction["cond"][i].astype(np.uint16))
        return files

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Append the batch's windows to the current shard (skipping any already written)."""
        if self.sink is None:
            raise RuntimeError("AnnotationWriter.setup did not run (predict stage only)")
        self.skipped.update(prediction.get("skipped") or {})
        count = 0
        for i, key in enumerate(prediction["key"]):
            if key in self.done:
                self.duplicates += 1
                continue
            files = self._sample_files(prediction, i)
            self.sink.add(key, files)
            self.done.add(key)
            count += 1
        self.written += count
        if self.bar is not None:
            self.bar.update(count)
            self.bar.set_postfix(shards=len(self.sink.finished), refresh=False)

    # ------------------------------------------------------------------ end / failure
    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Finish the last shard, then (rank 0) write and print the summary."""
        if self.sink is not None:
            self.sink.close()
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.duplicates:
            log.warning("dropped %d window(s) that earlier shards already hold", self.duplicates)
        if not self.summary:
            return
        trainer.strategy.barrier("annotation_summary")
        if not trainer.is_global_zero:
            return
        indexes = [read_shard_index(p) for p in self._finished_shards()]
        text = summarise_annotations(indexes, self.info.get("tokens_per_block"), dict(self.skipped))
        text += f"\nThis run wrote {self.written} window(s)"
        text += f"; {len(self.done) - self.written} were already annotated.\n"
        (self.output_dir / _SUMMARY).write_text(text)
        print(text)
        print(f"annotation summary: {self.output_dir / _SUMMARY}")

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Drop the unfinished shard; finished ones stay and a re-run continues after them."""
        if self.sink is not None:
            self.sink.abandon()
        if self.bar is not None:
            self.bar.close()
            self.bar = None
