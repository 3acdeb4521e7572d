"""Probe of the demo tokenizer collapse (docs/tokenizer_collapse.md); run from the repo root.

Clips are cached by load.py in $PROBE_DIR (default runs/probe).
"""

import os

PROBE = os.environ.get("PROBE_DIR", "runs/probe")
import sys

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from datamodules.video_shards import VideoShardsDataModule

out = {}
for split, urls in [
    ("train", ["data/demo/synthetic/train-*.tar", "data/demo/samples/train-*.tar"]),
    ("val", ["data/demo/synthetic/val-*.tar", "data/demo/samples/val-*.tar"]),
    ("test", ["data/demo/synthetic/test-*.tar", "data/demo/samples/test-*.tar"]),
]:
    dm = VideoShardsDataModule(
        test_urls=urls,
        num_frames=16,
        resolution=64,
        batch_size=16,
        num_workers=0,
        crop="center",
        clip_sampling="first",
    )
    dm.setup("test")
    vids, comp = [], []
    for b in dm.test_dataloader():
        vids.append(b["video"])
        comp.append(b.get("complexity", torch.full((b["video"].shape[0], 16), float("nan"))))
    out[split] = torch.cat(vids)
    out[split + "_complexity"] = torch.cat(comp)
    print(split, out[split].shape)
os.makedirs(PROBE, exist_ok=True)
torch.save(out, PROBE + "/clips.pt")
