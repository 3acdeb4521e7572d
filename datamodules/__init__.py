"""LightningDataModules: :class:`VideoShardsDataModule` feeds every stage from WebDataset shards."""

from datamodules.video_shards import VideoShardsDataModule

__all__ = ["VideoShardsDataModule"]
