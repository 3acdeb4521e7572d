"""AdapTok core: pure PyTorch + numpy (never imports lightning).

Sub-packages:
    nn: tokenizer, quantizer, discriminator, scorer networks and transformer blocks.
    losses: reconstruction, perceptual, adversarial and the combined tokenizer loss.
    alloc: token allocation (python-mip ILP and exact fast solvers) behind one API.
    metrics: I3D + FVD, per-video PSNR (official definition)/SSIM, LPIPS, token diagnostics,
        offline weight conversion.
    data: shard writing, dataset layouts, synthetic video, PyAV helpers.

``from adaptok import load_pretrained`` (``adaptok.pretrained``) returns a ready model from a
suite checkpoint or an ``adaptok export`` folder; it is imported on first use.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["load_pretrained"]


def __getattr__(name: str) -> Any:
    if name == "load_pretrained":
        from adaptok.pretrained import load_pretrained

        return load_pretrained
    raise AttributeError(f"module 'adaptok' has no attribute {name!r}")
