"""Pictures of clips to look at: 8-bit frames, and input | reconstruction side by side.

One conversion from the networks' float video to 8-bit frames (:func:`video_to_uint8`) serves
every picture the suite shows: the ``adaptok tokenize`` side-by-side MP4 (encoded by
:class:`~adaptok.data.video_io.VideoEncoder`) and the animated images of the media callbacks.
:class:`SideBySideFrames` lays out consecutive (possibly overlapping) windows as one video in
time order, input left of reconstruction.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["SideBySideFrames", "side_by_side_picture", "video_to_uint8"]


def video_to_uint8(video: torch.Tensor) -> np.ndarray:
    """Clips as 8-bit frames: values clamped to [0, 1], scaled by 255, rounded to nearest.

    Args:
        video: ``(B, C, T, H, W)`` float in [0, 1] (any device, gradients ignored).

    Returns:
        ``(B, T, H, W, C)`` uint8 on the CPU.
    """
    scaled = video.detach().float().clamp(0, 1).mul(255.0).round().to(torch.uint8)
    return scaled.permute(0, 2, 3, 4, 1).cpu().numpy()


def side_by_side_picture(left: np.ndarray, right: np.ndarray, scale: int = 1) -> np.ndarray:
    """One ``left | right`` picture, enlarged ``scale`` times by pixel repetition.

    Args:
        left: ``(H, W, 3)`` uint8.
        right: ``(H, W2, 3)`` uint8 (same height).
        scale: Integer nearest-neighbour enlargement (>= 1).

    Returns:
        ``(H * scale, (W + W2) * scale, 3)`` uint8.
    """
    pair = np.concatenate([left, right], axis=1)
    if scale > 1:
        pair = pair.repeat(scale, axis=0).repeat(scale, axis=1)
    return pair


class SideBySideFrames:
    """Input | reconstruction pictures of consecutive windows, in the video's time order.

    Each window contributes its frames up to the next window's start (all of them for the
    last window), so overlapping windows are not shown twice. Windows are given in order;
    only one is held (its frames are shown once the next start is known).

    Args:
        scale: Integer nearest-neighbour enlargement (small tokenizer frames are tiny).

    Raises:
        ValueError: ``scale`` below 1.
    """

    def __init__(self, scale: int = 1) -> None:
        if scale < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        self.scale = int(scale)
        self._held: tuple[int, np.ndarray, np.ndarray] | None = None

    def add(
        self, start: int, inputs: np.ndarray, reconstruction: np.ndarray
    ) -> Iterator[np.ndarray]:
        """Take the next window (at once); the pictures of the window before it.

        Args:
            start: The window's first frame (index in the video).
            inputs: ``(T, H, W, 3)`` uint8 input frames.
            reconstruction: ``(T, H, W, 3)`` uint8 reconstruction.

        Returns:
            The held window's ``(H * scale, 2 * W * scale, 3)`` uint8 pictures up to
            ``start``, composed as they are pulled (none for the first window).
        """
        held, self._held = self._held, (int(start), inputs, reconstruction)
        if held is None:
            return iter(())
        return self._pictures(held, int(start) - held[0])

    def finish(self) -> Iterator[np.ndarray]:
        """Every picture of the last window (none when no window was added)."""
        held, self._held = self._held, None
        if held is None:
            return iter(())
        return self._pictures(held, len(held[1]))

    def _pictures(
        self, window: tuple[int, np.ndarray, np.ndarray], shown: int
    ) -> Iterator[np.ndarray]:
        _, inputs, reconstruction = window
        count = max(0, min(len(inputs), shown))
        for picture, recon in zip(inputs[:count], reconstruction[:count], strict=True):
            yield side_by_side_picture(picture, recon, self.scale)
