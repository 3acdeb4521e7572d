"""Probe of the demo tokenizer collapse (docs/tokenizer_collapse.md); run from the repo root.

Clips are cached by load.py in $PROBE_DIR (default runs/probe).
"""

import os

PROBE = os.environ.get("PROBE_DIR", "runs/probe")
import sys

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from adaptok.metrics.frame_quality import psnr_per_video
from adaptok.metrics.token_diagnostics import block_mean_baseline

d = torch.load(sys.argv[1] if len(sys.argv) > 1 else PROBE + "/clips.pt")
for split in ("train", "test"):
    v = d[split]
    syn = v[:-7] if split == "test" else v
    for g in (1, 2, 4, 8):
        p = psnr_per_video(syn, block_mean_baseline(syn, 4, g))
        print(split, g, f"median {p.median():.2f}  share<20dB {(p < 20).float().mean():.2f}")
