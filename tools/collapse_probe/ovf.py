"""Probe of the demo tokenizer collapse (docs/tokenizer_collapse.md); run from the repo root.

Clips are cached by load.py in $PROBE_DIR (default runs/probe).
"""

import os

PROBE = os.environ.get("PROBE_DIR", "runs/probe")
import json
import sys
import time

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "tests" / "nn"))
from test_token_mixing import M, _clips, _tiny

from adaptok.metrics.frame_quality import psnr_per_video
from adaptok.metrics.token_diagnostics import block_mean_baseline, code_diagnostics
from adaptok.nn import TailDropSampler

torch.set_num_threads(1)
o = json.loads(sys.argv[1])
steps = o.pop("steps", 400)
lr = o.pop("lr", 2e-3)
full = o.pop("full", False)
vqw = o.pop("vqw", 0.01)
mse = o.pop("mse", False)
model = _tiny(**o)
video = _clips(8)
tail = TailDropSampler("uniform", min_tokens=1 if not full else M, max_tokens=M)
opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.9))
g = torch.Generator().manual_seed(0)
t0 = time.time()
for _s in range(steps):
    out = model(video, tail.sample(8, 2, generator=g))
    loss = (
        (out.recon - video).pow(2).mean() if mse else (out.recon - video).abs().mean()
    ) + vqw * out.vq_loss
    opt.zero_grad()
    loss.backward()
    opt.step()
model.eval()
with torch.no_grad():
    codes = model.encode(video).codes
    recon = model.decode(codes, torch.full((8, 2), M)).clamp(0, 1)
p = psnr_per_video(video, recon)
b = psnr_per_video(video, block_mean_baseline(video, 4))
print(
    sys.argv[1],
    f"distinct {code_diagnostics(codes, M, model.quantizer.codebook_size).distinct_per_block:.2f} wins {(p > b).sum().item()}/8 gain med {(p - b).median():.2f} {time.time() - t0:.0f}s",
)
