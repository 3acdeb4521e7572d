"""Helper of the tools (not a script): the first window of every clip a set of shards holds.

The diagnostic tools (scorer_curves, scorer_offline, decoder_outliers, oracle_data) read clips
the way the allocation evaluation does: at the tokenizer's clip size, centre crop, the first
``num_frames`` frames of each clip, no augmentation, in shard order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from torch import Tensor

from adaptok.nn.tokenizer import AdapTokTokenizer
from datamodules.video_shards import VideoShardsDataModule


def first_windows(
    urls: str | Sequence[str], tokenizer: AdapTokTokenizer, batch_size: int = 8
) -> Iterator[Tensor]:
    """Batches ``(B, C, T, H, W)`` in [0, 1] of the first window of every clip of ``urls``.

    Args:
        urls: Shards (glob, brace pattern, folder, path or URL; VideoShardsDataModule's test
            split).
        tokenizer: Gives the clip size (``num_frames`` ``T``, ``image_size`` ``H = W``).
        batch_size: Clips per batch (the last one may be smaller).
    """
    data = VideoShardsDataModule(
        test_urls=list(urls) if not isinstance(urls, str) else urls,
        num_frames=tokenizer.num_frames,
        resolution=tokenizer.image_size,
        batch_size=batch_size,
        num_workers=0,
        crop="center",
        clip_sampling="first",
    )
    data.setup("test")
    for batch in data.test_dataloader():
        yield batch["video"]
