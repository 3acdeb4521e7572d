"""The clip stream of one split: a :class:`~adaptok.data.shard_stream.ShardStream` of clips.

:class:`ClipStream` turns each tar sample into one clip with a
:class:`~adaptok.data.clips.ClipDecoder`; every random choice (shard order, shuffle buffer,
clip start, crop, flip) is seeded by ``(seed, epoch, rank, worker)``, so a pass is a pure
function of its epoch number. :class:`ClipLoader` is the
:class:`~adaptok.data.shard_stream.ShardLoader` that feeds it epochs and takes out the skip
reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from adaptok.data.clips import ClipDecoder
from adaptok.data.shard_stream import Decode, ShardLoader, ShardStream, shuffled
from adaptok.data.shards import ShardOrder
from adaptok.data.skips import SkipTracker

__all__ = ["ClipLoader", "ClipStream", "shuffled"]

ClipLoader = ShardLoader
"""The loader of clip streams (the shared :class:`~adaptok.data.shard_stream.ShardLoader`)."""


class ClipStream(ShardStream):
    """Clips of one split for the current epoch (a :class:`ShardStream` of clips).

    Each output is a :class:`~adaptok.data.clips.ClipDecoder` clip plus ``skipped``, a skip
    report (see :class:`~adaptok.data.shard_stream.ShardStream`); a worker without clips
    sends its counts in a report-only item, so they still reach the main process.

    Args:
        urls: Resolved shard URLs.
        order: Shard order (``ordered`` for evaluation, ``shuffled`` or ``resampled``).
        decoder: Turns samples into clips.
        max_upscale: Clips whose short side is enlarged more than this factor are counted
            as a warning (``upscaled more than ...``).
        **stream: The other arguments of :class:`ShardStream` (seed, rank, world size,
            shuffle buffer, samples per worker, max consecutive skips, split).
    """

    def __init__(
        self,
        urls: Sequence[str],
        order: ShardOrder,
        decoder: ClipDecoder,
        max_upscale: float = 2.0,
        **stream: Any,
    ) -> None:
        super().__init__(urls, order, **stream)
        self.decoder, self.max_upscale = decoder, max_upscale

    def pass_decoder(self, worker: int) -> Decode:
        """Decode one clip per sample with the pass's generator (clip start, crop, flip)."""
        clip_rng = np.random.default_rng([self.seed, self.rank, worker, self.epoch])

        def decode(sample: dict[str, Any], tracker: SkipTracker) -> list[dict[str, Any]]:
            clip = self.decoder(sample, clip_rng)
            if clip.pop("upscale") > self.max_upscale:
                tracker.note(f"upscaled more than {self.max_upscale:g}x")
            for note in clip.pop("notes", ()):
                tracker.note(note)
            return [clip]

        return decode
