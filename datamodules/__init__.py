"""LightningDataModules: :class:`VideoShardsDataModule` feeds every stage from WebDataset shards."""

from datamodules.token_shards import TokenShardsDataModule
from datamodules.video_shards import VideoShardsDataModule
from datamodules.video_windows import VideoWindowsDataModule

__all__ = ["TokenShardsDataModule", "VideoShardsDataModule", "VideoWindowsDataModule"]
