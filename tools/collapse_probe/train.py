"""Probe of the demo tokenizer collapse (docs/tokenizer_collapse.md); run from the repo root.

Clips are cached by load.py in $PROBE_DIR (default runs/probe).
"""

import os

PROBE = os.environ.get("PROBE_DIR", "runs/probe")
import json
import math
import sys
import time

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
import torch.nn.functional as F

from adaptok.nn.tail_drop import TailDropSampler
from adaptok.nn.tokenizer import AdapTokTokenizer

torch.set_num_threads(2)
cfg = dict(
    vq="svq",
    steps=300,
    lr=1e-3,
    vq_weight=0.01,
    bs=8,
    eval_every=100,
    seed=0,
    tail="truncnorm",
    warmup=20,
)
tok_cfg = dict(
    num_frames=16,
    image_size=64,
    patch_size=(4, 8, 8),
    frames_per_block=4,
    tokens_per_block=16,
    width=128,
    depth=2,
    heads=4,
    codebook_size=64,
    code_dim=4,
    temperature=0.03,
    query_init_std=1.0,
)
over = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
for k, v in over.items():
    (tok_cfg if k in tok_cfg or k.startswith("tok_") else cfg)[k.removeprefix("tok_")] = v
print(cfg, tok_cfg, flush=True)
torch.manual_seed(cfg["seed"])
data = torch.load(PROBE + "/clips.pt")
train, test = data["train"], data["test"]
tok = AdapTokTokenizer(**tok_cfg)
from adaptok.nn.quantizer import QuantizerOutput

_orig = tok.quantizer.forward


def _cont(features, keep=None):
    z = tok.quantizer.pre_proj(features)
    if cfg["vq"] == "cont_norm":
        z = F.normalize(z, dim=-1)
    codes = torch.zeros(z.shape[:2], dtype=torch.long)
    zero = z.sum() * 0
    return QuantizerOutput(
        codes=codes,
        quantized=tok.quantizer.post_proj(z),
        code_vectors=z,
        commit_loss=zero,
        codebook_loss=zero,
    )


if cfg.get("vq", "svq") != "svq":
    tok.quantizer.forward = _cont
    tok.decode = lambda codes, lengths: tok.decode_quantized(tok._cached_q, lengths)
    _enc = tok.encode

    def _encode(v):
        e = _enc(v)
        tok._cached_q = e.quantized
        return e

    tok.encode = _encode
if cfg["tail"] == "truncnorm":
    tail = TailDropSampler(distribution="truncnorm", mean=12, std=6, min_tokens=1, max_tokens=16)
else:
    tail = TailDropSampler(distribution="uniform", min_tokens=1, max_tokens=16)
opt = torch.optim.Adam(tok.parameters(), lr=cfg["lr"], betas=(0.5, 0.9))
sched = torch.optim.lr_scheduler.LambdaLR(
    opt,
    lambda s: (
        min(1, (s + 1) / cfg["warmup"])
        * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, cfg["steps"]) / cfg["steps"])))
    ),
)
M, K = tok.tokens_per_block, tok.num_blocks


def psnr(a, b):  # per clip, from MSE over all frames (capped at 60)
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-6)
    return -10 * torch.log10(mse)


def mean_colour(v):
    B, C, T, H, W = v.shape
    return (
        v.view(B, C, K, T // K, H, W)
        .mean(dim=(3, 4, 5), keepdim=True)
        .expand(B, C, K, T // K, H, W)
        .reshape(v.shape)
    )


@torch.no_grad()
def evaluate(step):
    tok.eval()
    codes, recs = [], {}
    for i in range(0, len(test), 16):
        v = test[i : i + 16]
        enc = tok.encode(v)
        codes.append(enc.codes)
        for L in (2, 8, 16):
            recs.setdefault(L, []).append(
                tok.decode(enc.codes, torch.full((v.shape[0], K), L)).clamp(0, 1)
            )
    codes = torch.cat(codes).view(len(test), K, M)
    distinct = torch.tensor(
        [[len(set(codes[c, k].tolist())) for k in range(K)] for c in range(len(test))]
    ).float()
    base = psnr(test, mean_colour(test))
    res = {L: psnr(test, torch.cat(r)) for L, r in recs.items()}
    win = (res[16] > base).float().mean()
    print(
        f"step {step}: distinct/block {distinct.mean():.2f}  used {codes.unique().numel()}  "
        f"PSNR med @2 {res[2].median():.2f} @8 {res[8].median():.2f} @16 {res[16].median():.2f}  meancol {base.median():.2f}  "
        f"beats meancol {win:.2f}  median gain {(res[16] - base).median():.2f}",
        flush=True,
    )
    with torch.no_grad():
        lat = tok.encode_latents(test[:32])
        z = tok.quantizer.pre_proj(lat)
        zn = F.normalize(z, dim=-1)
        print(
            f"   z across clips {z.std(0).mean():.3f} across positions {z.std(1).mean():.3f} | normed: clips {zn.std(0).mean():.3f} pos {zn.std(1).mean():.3f}",
            flush=True,
        )
    tok.train()
    return codes


t0 = time.time()
for step in range(cfg["steps"]):
    idx = torch.randint(0, len(train), (cfg["bs"],))
    v = train[idx]
    if torch.rand(()) < 0.5:
        v = v.flip(-1)
    lengths = tail.sample(v.shape[0], K, device=v.device)
    out = tok(v, lengths)
    loss = (
        (out.recon - v).pow(2).mean() if cfg.get("mse") else (out.recon - v).abs().mean()
    ) + cfg["vq_weight"] * out.vq_loss
    opt.zero_grad()
    loss.backward()
    gn = torch.nn.utils.clip_grad_norm_(tok.parameters(), 1.0)
    opt.step()
    sched.step()
    if step % 50 == 0:
        print(
            f"{step} loss {loss.item():.4f} vq {out.vq_loss.item():.4f} gn {gn:.3f} {time.time() - t0:.0f}s",
            flush=True,
        )
    if (step + 1) % cfg["eval_every"] == 0:
        codes = evaluate(step + 1)
torch.save({"tok": tok.state_dict(), "cfg": tok_cfg}, PROBE + f"/tok_{cfg.get('name', 'last')}.pt")
print("codes clip0", codes[0].tolist())
print("codes clip5", codes[5].tolist())
