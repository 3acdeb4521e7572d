"""AdapTok core: pure PyTorch + numpy (never imports lightning).

Sub-packages:
    nn: tokenizer, quantizer, discriminator, scorer networks and transformer blocks.
    losses: reconstruction, perceptual, adversarial and the combined tokenizer loss.
    alloc: token allocation (python-mip ILP and exact fast solvers) behind one API.
    metrics: I3D + FVD, per-frame PSNR/SSIM, LPIPS, offline weight conversion.
    data: shard writing, dataset layouts, synthetic video, PyAV helpers.
"""

__version__ = "0.1.0"
