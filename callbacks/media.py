"""Videos and figures to TensorBoard.

Videos are written as animated GIF image summaries (what TensorBoard's own ``add_video``
writes) encoded with Pillow, so no ``moviepy`` is needed. With any other logger the helpers
do nothing and say so once at debug level.
"""

from __future__ import annotations

import io
import logging

import matplotlib.pyplot as plt
import numpy as np
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from matplotlib.figure import Figure
from PIL import Image
from tensorboard.compat.proto.summary_pb2 import Summary
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

__all__ = ["encode_gif", "log_figure", "log_video", "side_by_side", "tensorboard_writer"]

log = logging.getLogger(__name__)
_warned_no_tensorboard = False

Target = Trainer | Logger | SummaryWriter | None


def tensorboard_writer(target: Target) -> SummaryWriter | None:
    """The TensorBoard ``SummaryWriter`` behind a trainer, a logger or a writer, else None."""
    global _warned_no_tensorboard
    if rank_zero_only.rank != 0:  # under DDP only rank 0 writes media
        return None
    if isinstance(target, SummaryWriter):
        return target
    loggers = target.loggers if isinstance(target, Trainer) else [target]
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    if not _warned_no_tensorboard:
        log.debug("No TensorBoard logger (got %r): videos and figures are not logged.", target)
        _warned_no_tensorboard = True
    return None


def side_by_side(real: Tensor, fake: Tensor, gap: int = 2) -> Tensor:
    """Place each real clip left of its fake clip, with a white ``gap`` between them.

    Args:
        real: (B, C, T, H, W) in [0, 1].
        fake: (B, C, T, H, W) in [0, 1].
        gap: Separator width in pixels.

    Returns:
        (B, C, T, H, 2 * W + gap).
    """
    if real.shape != fake.shape or real.ndim != 5:
        raise ValueError(
            f"side_by_side expects two (B, C, T, H, W) videos of equal shape, got "
            f"{tuple(real.shape)} and {tuple(fake.shape)}"
        )
    separator = real.new_ones(*real.shape[:-1], gap)
    return torch.cat([real, separator, fake.to(real)], dim=-1)


def encode_gif(video: Tensor, fps: int = 4) -> tuple[bytes, int, int]:
    """Encode a batch of clips, stacked vertically, as one looping animated GIF.

    Args:
        video: (B, C, T, H, W) in [0, 1] with C in {1, 3}.
        fps: Frames per second.

    Returns:
        GIF bytes, height (B * H) and width (W).
    """
    b, c, t, h, w = video.shape
    frames = video.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    frames = frames.permute(2, 0, 3, 4, 1).reshape(t, b * h, w, c).numpy()
    if c == 1:
        frames = np.repeat(frames, 3, axis=-1)
    images = [Image.fromarray(frame) for frame in frames]
    buffer = io.BytesIO()
    duration = max(1000 // fps, 20)
    images[0].save(
        buffer, "GIF", save_all=True, append_images=images[1:], duration=duration, loop=0
    )
    return buffer.getvalue(), b * h, w


def log_video(target: Target, tag: str, video: Tensor, step: int, fps: int = 4) -> None:
    """Log clips as one animated image (clips stacked vertically) to TensorBoard.

    Args:
        target: Trainer, logger or SummaryWriter; a no-op without TensorBoard.
        tag: Summary tag, e.g. ``"val/videos"``.
        video: (B, C, T, H, W) in [0, 1].
        step: Global step.
        fps: Playback frames per second.
    """
    writer = tensorboard_writer(target)
    if writer is None:
        return
    gif, height, width = encode_gif(video, fps)
    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=gif)
    # The same call TensorBoard's add_video ends with, minus its moviepy encoder.
    writer._get_file_writer().add_summary(
        Summary(value=[Summary.Value(tag=tag, image=image)]), step
    )


def log_figure(target: Target, tag: str, figure: Figure, step: int) -> None:
    """Log a matplotlib figure to TensorBoard; the figure is closed either way.

    Args:
        target: Trainer, logger or SummaryWriter; a no-op without TensorBoard.
        tag: Summary tag.
        figure: The figure.
        step: Global step.
    """
    writer = tensorboard_writer(target)
    if writer is not None:
        writer.add_figure(tag, figure, global_step=step, close=True)
    else:
        plt.close(figure)
