"""Skip accounting of the clip stream: counted in the workers, reported in the main process.

Bad data never stops a pass by itself: every sample that cannot become a clip is counted by
reason (and by shard); clips that needed a doubtful fix (a large upscale) are counted as
notes. The counts travel in-band with the batches (:data:`REPORT_KEY`) and, when a worker has
nothing left to yield, in a report-only batch (:data:`REPORT_ONLY_KEY`), so counts reach the
main process even when every sample of a pass was bad. Two conditions end a run instead of
letting it spin: ``max_consecutive`` failed samples in a row in one worker
(:class:`NoUsableSamplesError`, raised in the worker, re-raised by the DataLoader), and a pass
that produces no batch at all (raised by :meth:`SkipLedger.finish_pass`).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Mapping
from typing import Any

__all__ = [
    "REPORT_KEY",
    "REPORT_ONLY_KEY",
    "NoUsableSamplesError",
    "SkipLedger",
    "SkipSample",
    "SkipTracker",
    "SkippedSamplesWarning",
    "empty_report",
    "merge_reports",
]

REPORT_KEY = "skipped"
"""Batch entry holding the skip report of the clips since the previous batch."""

REPORT_ONLY_KEY = "__report_only__"
"""Set in a batch that carries only a skip report (no clips)."""

Report = dict[str, dict[str, int]]
"""``{"skipped": {reason: n}, "notes": {reason: n}, "shards": {url: n}}``."""


class SkippedSamplesWarning(UserWarning):
    """Samples were skipped during a pass over the data (corrupt, truncated, too short)."""


class SkipSample(Exception):
    """A sample that is skipped, with the reason it is counted under (its message)."""


class NoUsableSamplesError(RuntimeError):
    """A data stream cannot produce clips: too many failures in a row, or a pass with no batch."""


def empty_report() -> Report:
    """A report with nothing counted."""
    return {"skipped": {}, "notes": {}, "shards": {}}


def merge_reports(reports: list[Mapping[str, Mapping[str, int]]]) -> Report:
    """Sum skip reports (missing parts count as empty)."""
    total: dict[str, Counter] = {part: Counter() for part in empty_report()}
    for report in reports:
        for part, counter in total.items():
            counter.update(report.get(part, {}))
    return {part: dict(counter) for part, counter in total.items()}


def _describe(report: Report, limit: int = 5) -> str:
    reasons = ", ".join(f"{r}: {n}" for r, n in sorted(report["skipped"].items())) or "none"
    shards = sorted(report["shards"].items(), key=lambda item: (-item[1], item[0]))
    listed = ", ".join(f"{url} ({n})" for url, n in shards[:limit])
    more = f" and {len(shards) - limit} more" if len(shards) > limit else ""
    return f"reasons: {reasons}; shards: {listed or 'none'}{more}"


class SkipTracker:
    """Counts skipped samples (worker side); raises after too many failures in a row.

    Also the WebDataset exception handler for unreadable shards (each error counts as one
    failure of that shard).

    Args:
        max_consecutive: Failures in a row (no clip in between) after which the stream stops
            with :class:`NoUsableSamplesError`; ``None``: never.
        split: Name used in the error message.
    """

    def __init__(self, max_consecutive: int | None = 100, split: str = "data") -> None:
        self.max_consecutive, self.split = max_consecutive, split
        self.pending: dict[str, Counter] = {part: Counter() for part in empty_report()}
        self.run: dict[str, Counter] = {"skipped": Counter(), "shards": Counter()}
        self.consecutive = 0

    def count(self, reason: str, url: str | None = None) -> None:
        """Record one skipped sample of shard ``url``.

        Raises:
            NoUsableSamplesError: This is the ``max_consecutive``-th failure in a row; the
                message names the shards and the reasons of the run of failures.
        """
        self.pending["skipped"][reason] += 1
        self.run["skipped"][reason] += 1
        if url is not None:
            self.pending["shards"][url] += 1
            self.run["shards"][url] += 1
        self.consecutive += 1
        if self.max_consecutive is not None and self.consecutive >= self.max_consecutive:
            run = {
                "skipped": dict(self.run["skipped"]),
                "notes": {},
                "shards": dict(self.run["shards"]),
            }
            raise NoUsableSamplesError(
                f"{self.split}: {self.consecutive} samples in a row could not be used "
                f"(max_consecutive_skips={self.max_consecutive}); {_describe(run)}"
            )

    def note(self, reason: str) -> None:
        """Record a warning about a clip that was used (e.g. a large upscale)."""
        self.pending["notes"][reason] += 1

    def success(self) -> None:
        """A clip was produced: the run of failures is over."""
        self.consecutive = 0
        self.run = {"skipped": Counter(), "shards": Counter()}

    def __call__(self, error: Exception) -> bool:
        """WebDataset handler: count the error as a failure and carry on with the next shard."""
        url = None
        for arg in getattr(error, "args", ())[1:]:
            if isinstance(arg, str):
                url = arg
        self.count(f"unreadable shard ({type(error).__name__})", url)
        return True

    def has_pending(self) -> bool:
        """Whether anything was counted since the last drain."""
        return any(self.pending[part] for part in ("skipped", "notes"))

    def drain(self) -> Report:
        """Counts since the last drain (then reset)."""
        report = {part: dict(counter) for part, counter in self.pending.items()}
        self.pending = {part: Counter() for part in empty_report()}
        return report


class SkipLedger:
    """Main-process side: totals, one warning per pass, and the no-batch check.

    Args:
        totals: Counter that receives every skip reason (the datamodule's ``skip_counts``).
        noun: What a sample is called in the warnings (``skipped 3 token sample(s) ...``).
        empty_pass_error: A pass that ends without a batch raises
            :class:`NoUsableSamplesError`; off: it warns (when samples were skipped) instead.
    """

    def __init__(
        self, totals: Counter | None = None, noun: str = "sample", empty_pass_error: bool = True
    ) -> None:
        self.totals: Counter = totals if totals is not None else Counter()
        self.note_totals: Counter = Counter()
        self.noun, self.empty_pass_error = noun, empty_pass_error
        self._passes: dict[tuple[str, int], Report] = {}
        self._quiet: set[tuple[str, int]] = set()

    def add(
        self, split: str, epoch: int, report: Mapping[str, Any] | None, warn: bool = True
    ) -> None:
        """Add the report taken out of one batch of pass ``(split, epoch)``.

        Args:
            split: The pass's split.
            epoch: The pass's epoch.
            report: The batch's skip report (None or empty: nothing to add).
            warn: Off: the pass is quiet, so :meth:`flush` will not warn about it either
                (a consumer that reports the skips itself and may stop the pass early).
        """
        if not warn:
            self._quiet.add((split, epoch))
        if not report:
            return
        current = self._passes.setdefault((split, epoch), empty_report())
        self._passes[(split, epoch)] = merge_reports([current, report])
        self.totals.update(report.get("skipped", {}))
        self.note_totals.update(report.get("notes", {}))

    def finish_pass(self, split: str, epoch: int, batches: int | None, warn: bool = True) -> None:
        """Report a finished pass; ``batches`` is None when the pass was cut short.

        Args:
            split: The pass's split.
            epoch: The pass's epoch.
            batches: Batches the pass produced (``None``: cut short).
            warn: Warn about the pass's skips (off: they stay in :attr:`totals` only, for a
                caller that reports them itself).

        Raises:
            NoUsableSamplesError: The pass ran to its end without producing a batch (unless
                ``empty_pass_error`` is off).
        """
        report = self._passes.pop((split, epoch), empty_report())
        self._quiet.discard((split, epoch))
        if batches == 0 and self.empty_pass_error:
            raise NoUsableSamplesError(
                f"{split} epoch {epoch} produced no batch: every sample was skipped or the "
                f"shards hold no samples; {_describe(report)}"
            )
        if not warn:
            return
        if batches == 0 and report["skipped"]:
            reasons = ", ".join(f"{r}: {n}" for r, n in sorted(report["skipped"].items()))
            warnings.warn(
                f"{split} epoch {epoch} produced no sample; every {self.noun} was skipped "
                f"({reasons})",
                SkippedSamplesWarning,
                stacklevel=3,
            )
            return
        self._warn(split, epoch, report)

    def flush(self) -> None:
        """Report every pass not reported yet, except quiet ones (``add(..., warn=False)``)."""
        for split, epoch in list(self._passes):
            report = self._passes.pop((split, epoch))
            if (split, epoch) not in self._quiet:
                self._warn(split, epoch, report)
        self._quiet.clear()

    def _warn(self, split: str, epoch: int, report: Report) -> None:
        skipped, notes = report["skipped"], report["notes"]
        parts = []
        if skipped:
            reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(skipped.items()))
            parts.append(
                f"skipped {sum(skipped.values())} {self.noun}(s) in {split} epoch {epoch} "
                f"({reasons})"
            )
        if notes:
            reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(notes.items()))
            parts.append(f"warnings in {split} epoch {epoch}: {reasons}")
        if parts:
            warnings.warn("; ".join(parts), SkippedSamplesWarning, stacklevel=3)
