"""Videos and figures to TensorBoard.

Videos are written as animated GIF image summaries (what TensorBoard's own ``add_video``
writes; TensorBoard shows no MP4) encoded with Pillow, so no ``moviepy`` is needed. Their
8-bit frames come from the suite's one conversion (:func:`adaptok.data.pictures.video_to_uint8`,
as the ``adaptok tokenize`` MP4). With any other logger the helpers
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

from adaptok.data.pictures import video_to_uint8

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


def side_by_side(real: Tensor, *fakes: Tensor, gap: int = 2) -> Tensor:
    """Place each real clip left of its fake clip(s), with a white ``gap`` between panels.

    Args:
        real: (B, C, T, H, W) in [0, 1].
        *fakes: One or more (B, C, T, H, W) videos in [0, 1] (converted to ``real``'s dtype
            and device).
        gap: Separator width in pixels (0: panels touch).

    Returns:
        (B, C, T, H, P * W + (P - 1) * gap) for ``P`` panels.

    Raises:
        ValueError: No fake, or a video that is not (B, C, T, H, W) of ``real``'s shape.
    """
    if not fakes or real.ndim != 5 or any(fake.shape != real.shape for fake in fakes):
        shapes = " and ".join(str(tuple(v.shape)) for v in (real, *fakes))
        raise ValueError(
            f"side_by_side expects (B, C, T, H, W) videos of equal shape, at least two, "
            f"got {shapes}"
        )
    separator = real.new_ones(*real.shape[:-1], gap)  # 0 wide when gap is 0
    panels = [real]
    for fake in fakes:
        panels += [separator, fake.to(real)]
    return torch.cat(panels, dim=-1)


def encode_gif(video: Tensor, fps: int = 4) -> tuple[bytes, int, int]:
    """Encode a batch of clips, stacked vertically, as one looping animated GIF.

    Args:
        video: (B, C, T, H, W) in [0, 1] with C in {1, 3}.
        fps: Frames per second.

    Returns:
        GIF bytes, height (B * H) and width (W).
    """
    b, c, t, h, w = video.shape
    frames = video_to_uint8(video).transpose(1, 0, 2, 3, 4).reshape(t, b * h, w, c)
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
