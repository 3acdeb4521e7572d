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
from adaptok.nn.tokenizer import AdapTokTokenizer

torch.manual_seed(0)
torch.set_num_threads(2)
over = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
data = torch.load(PROBE + "/clips.pt")
train, test = data["train"], data["test"]
kw = dict(
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
    query_init_std=1.0,
)
kw.update(over.get("tok", {}))
tok = AdapTokTokenizer(**kw)
if over.get("no_latent_pos"):
    tok.latent_pos.zero_()
if over.get("qk_std"):
    for blk in tok.decoder.modules():
        if hasattr(blk, "qkv"):
            w = blk.qkv.weight.data
            d = w.shape[1]
            torch.nn.init.normal_(w[: 2 * d], std=over["qk_std"])
if over.get("xavier"):
    for m in tok.decoder.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(m.weight)


def grid(v):  # (B,3,16,64,64) -> (B, 64 tokens, 4): 4x4 grid mean colour per block
    B = v.shape[0]
    g = v.view(B, 3, 4, 4, 4, 16, 4, 16).mean(dim=(3, 5, 7))  # B,3,K,4,4
    g = g.permute(0, 2, 3, 4, 1).reshape(B, 64, 3)
    return torch.cat([g * 2 - 1, torch.zeros(B, 64, 1)], -1)


def grid_recon(v):
    B = v.shape[0]
    g = v.view(B, 3, 4, 4, 4, 16, 4, 16).mean(dim=(3, 5, 7), keepdim=True)
    return g.expand(B, 3, 4, 4, 4, 16, 4, 16).reshape(v.shape)


def psnr(a, b):
    return -10 * torch.log10((a - b).pow(2).flatten(1).mean(1).clamp_min(1e-6))


extra = []
if over.get("learned_pos"):
    p = torch.nn.Parameter(tok.latent_pos.clone() * over.get("pos_scale", 1.0))
    del tok.latent_pos
    tok.latent_pos = p
    extra = [p]
if over.get("mix"):
    from adaptok.nn.masks import decoder_mask
    from adaptok.nn.tail_drop import keep_mask

    Kb, P, Mb = tok.num_blocks, tok.patches_per_block, tok.tokens_per_block
    A = torch.nn.Parameter(torch.zeros(Kb, P, Mb))
    extra.append(A)

    def dq(quantized, lengths):
        B, N, D = quantized.shape
        keep = keep_mask(lengths, Mb)
        lat = torch.where(keep.unsqueeze(-1), quantized + tok.latent_pos[:N], 0.0)
        content = torch.where(keep.unsqueeze(-1), quantized, 0.0).view(B, Kb, Mb, D)
        mix = torch.einsum("kpm,bkmd->bkpd", A * over.get("mix_scale", 1.0), content).reshape(
            B, Kb * P, D
        )
        queries = (tok.patch_query + tok.patch_pos[: Kb * P])[None].expand(B, -1, -1) + mix
        tokens = torch.cat([lat, queries], 1)
        mask = decoder_mask(Kb, P, Mb, tokens.device)
        out = tok.output(tok.decoder(tokens, mask)[:, N:])
        return tok._unpatchify(out, Kb) * 0.5 + 0.5

    tok.decode_quantized = dq
params = (
    extra
    + list(tok.decoder.parameters())
    + list(tok.output.parameters())
    + list(tok.quantizer.post_proj.parameters())
    + [tok.patch_query]
)
opt = torch.optim.Adam(params, lr=over.get("lr", 1e-3), betas=(0.5, 0.9))
L = torch.full((8, 4), 16)
t0 = time.time()
for step in range(over.get("steps", 300)):
    v = train[torch.randint(0, len(train), (8,))]
    rec = tok.decode_quantized(tok.quantizer.post_proj(grid(v)), L)
    loss = (rec - v).pow(2).mean() if over.get("mse") else (rec - v).abs().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if (step + 1) % 100 == 0:
        with torch.no_grad():
            r = tok.decode_quantized(
                tok.quantizer.post_proj(grid(test)), torch.full((len(test), 4), 16)
            ).clamp(0, 1)
            print(
                step + 1,
                f"loss {loss.item():.4f} dec PSNR med {psnr(test, r).median():.2f}  grid4x4 baseline {psnr(test, grid_recon(test)).median():.2f} {time.time() - t0:.0f}s",
                flush=True,
            )
# attention inspection: dense decoder, capture softmax of layer-wise attention for block 0
with torch.no_grad():
    tok.attention = "dense"
    v = test[:4]
    q = tok.quantizer.post_proj(grid(v))
    caught = []
    orig = torch.nn.functional.scaled_dot_product_attention

    def spy(qq, kk, vv, attn_mask=None, **kw):
        logits = qq @ kk.transpose(-1, -2) / qq.shape[-1] ** 0.5
        if attn_mask is not None:
            logits = (
                logits.masked_fill(~attn_mask, float("-inf"))
                if attn_mask.dtype == torch.bool
                else logits + attn_mask
            )
        caught.append(logits.softmax(-1))
        return orig(qq, kk, vv, attn_mask=attn_mask, **kw)

    torch.nn.functional.scaled_dot_product_attention = spy
    import adaptok.nn.transformer as T

    T.F.scaled_dot_product_attention = spy
    tok.decode_quantized(q, torch.full((4, 4), 16))
    for li, a in enumerate(caught):
        # rows: patch queries of block 0 at positions 64..127 (latents first: 64 latents total)
        pa = a[:, :, 64:128]  # (B, heads, 64 patches, 128 keys)
        on_lat0 = pa[..., :16].sum(-1).mean().item()
        on_patch = pa[..., 64:128].sum(-1).mean().item()
        ent = -(pa.clamp_min(1e-9).log() * pa).sum(-1).mean().item()
        maxw = pa[..., :16].max(-1).values.mean().item()
        print(
            f"layer {li}: mass on block0 latents {on_lat0:.3f}, on patch queries {on_patch:.3f}, entropy {ent:.2f} (uniform over 80 = {torch.tensor(80.0).log():.2f}), max weight on a latent {maxw:.3f}"
        )
