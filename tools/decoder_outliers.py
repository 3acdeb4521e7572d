"""Patch positions where the tokenizer's decoder draws the same thing whatever the video.

A decoder that keeps a global scratch value in one patch's hidden state (the "high-norm
tokens" of Darcet et al., "Vision Transformers Need Registers", ICLR 2024) shows it twice: that
position's final hidden state has a larger norm than the others, and its reconstructed patch
holds detail (energy after removing the patch's mean colour) the input does not have. This
prints both per patch position, over the clips the URLs name (default: the demo's held-out test
split), reconstructed with all M tokens:

    python tools/decoder_outliers.py pretrained/demo-tokenizer    # or any suite checkpoint

Columns per block: the patch (row, column) with the largest mean decoder hidden norm, that norm
and the median over positions; then the patch whose reconstruction has the most detail relative
to the input's detail there, and that ratio against the median ratio.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adaptok import load_pretrained  # noqa: E402
from tools.clips import first_windows  # noqa: E402


def patch_detail(video: Tensor, patch: tuple[int, int, int]) -> Tensor:
    """Energy inside each patch after removing its mean, per block and spatial position.

    Args:
        video: ``(B, C, T, H, W)`` clips.
        patch: ``(pt, ph, pw)`` patch size; T must be a multiple of ``pt`` (here, frames per
            block equal ``pt``).

    Returns:
        ``(T / pt, H / ph, W / pw)``: squared deviation from the patch mean, summed over
        channels and pixels, averaged over clips.
    """
    b, c, t, h, w = video.shape
    pt, ph, pw = patch
    p = video.reshape(b, c, t // pt, pt, h // ph, ph, w // pw, pw)
    p = p.permute(0, 1, 2, 4, 6, 3, 5, 7)  # B C K Hp Wp pt ph pw
    inner = p - p.mean(dim=(-1, -2, -3), keepdim=True)
    return inner.pow(2).sum(dim=(-1, -2, -3)).sum(dim=1).mean(dim=0)


def main() -> None:
    """Print the per-block outlier table for one tokenizer."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="export folder or suite checkpoint with a tokenizer")
    parser.add_argument(
        "--urls",
        nargs="+",
        default=["data/demo/synthetic/test-*.tar", "data/demo/samples/test-*.tar"],
    )
    parser.add_argument("--max-clips", type=int, default=64)
    args = parser.parse_args()
    model = load_pretrained(args.model)
    tokenizer = model.tokenizer
    patch = tuple(tokenizer.patch_size)
    if patch[0] != tokenizer.frames_per_block:
        raise SystemExit("needs one patch per block in time (patch_size[0] == frames_per_block)")
    hidden: list[Tensor] = []
    hook = tokenizer.decoder.register_forward_hook(lambda _m, _i, out: hidden.append(out))
    norms, detail_in, detail_out, clips = 0.0, 0.0, 0.0, 0
    with torch.no_grad():
        for video in first_windows(args.urls, tokenizer):
            tokens = model.tokenize(video, budget=1.0, mode="uniform")
            hidden.clear()
            recon = model.detokenize(tokens.codes, tokens.lengths)
            patches = hidden[-1][:, -tokenizer.num_blocks * tokenizer.patches_per_block :]
            norms = norms + patches.norm(dim=-1).sum(dim=0)
            detail_in = detail_in + patch_detail(video, patch) * len(video)
            detail_out = detail_out + patch_detail(recon, patch) * len(video)
            clips += len(video)
            if clips >= args.max_clips:
                break
    hook.remove()
    grid = detail_in.shape[1:]
    norm_map = (norms / clips).reshape(tokenizer.num_blocks, *grid)
    ratio = detail_out / detail_in.clamp_min(1e-6)
    print(f"{clips} clips, {tokenizer.num_blocks} blocks of {grid[0]} x {grid[1]} patches")
    print()
    print("| block | max hidden norm at | norm | median | most added detail at | ratio | median |")
    print("|---|---|---|---|---|---|---|")
    for k in range(tokenizer.num_blocks):
        n, r = norm_map[k], ratio[k]
        n_at, r_at = divmod(int(n.argmax()), grid[1]), divmod(int(r.argmax()), grid[1])
        print(
            f"| {k} | {n_at} | {n.max():.2f} | {n.median():.2f} | {r_at} | {r.max():.2f} "
            f"| {r.median():.2f} |"
        )


if __name__ == "__main__":
    main()
