"""Tokenizer speed of the fast paths against the dense masked reference, and the bf16 PSNR cost.

Fast paths (blockwise attention, packed decoder, bf16) and the reference run in the same
process, interleaved; peak memory is reported too.

Configurations:
    demo: the demo tokenizer's network as it was when the README's figures were measured
        (16 x 64 x 64, patch 4x8x8, 4 x 32 tokens, width 128, 2 + 2 layers, 4 heads, codebook
        256 x 8; experiments/demo/tokenizer.yaml has 48 tokens of 4096 codes since).
    tiny: 16 x 64 x 64, patch 4x8x8, 4 x 64 tokens, width 256, 4 + 4 layers, 4 heads.
    S: 16 x 128 x 128, patch 4x8x8, 4 x 512 tokens, width 512, 6 + 6 layers, 8 heads
        (the paper's S variant, docs/METHOD.md section 1).

Variants (same weights; `attention` and `precision` switched on one model):
    dense-fp32: the reference (dense masked attention, dropped latents zeroed and masked).
    blockwise-fp32: block-sparse attention, kept latents only, last layers trimmed.
    blockwise-bf16: the same under bfloat16 autocast.
    dense-bf16 (with `--dense-bf16`): the reference under autocast, to separate the gains.

Cases (eval mode without grad, except `train`):
    encdec_all: `encode` + `decode` of every token.
    encdec_quarter: `encode` + `decode` of M/4 tokens per block.
    decode_all, decode_quarter: `decode` alone.
    train: `forward` in train mode with tail drop (demo: uniform [1, M] as in its config;
        others: truncated normal mean M/2, std M/4, on [M/16, M]), L1 + VQ loss, backward.
        The lengths of a round are shared by the variants.

Every round runs each variant once, in turn (after one warm-up call each); the table gives the
median wall and process-CPU seconds per call, their ratios to the dense-fp32 medians of the same
case ("x ref") and, for the quarter cases, to the dense-fp32 medians at all tokens ("x ref@all",
wall / cpu). On a machine shared with other jobs the CPU time is the steadier measure of work
(with 2 threads it sums both threads). Peak memory: tensor memory allocated during one more
call (CPU: replayed from the torch profiler's memory events; CUDA: `max_memory_allocated`),
with the first thread count only.

`--psnr DIR` measures the quality cost of bf16: mean PSNR of the 16-frame clips of the WebDataset
shards in DIR (two per 32-frame video), reconstructed at all tokens and at M/4, for each variant,
with the network and weights of `--checkpoint` (any stage checkpoint; its recorded tokenizer
spec) or, without one, the demo configuration after `--train-steps` steps of L1 training on
those clips.

Not kept (measured on this 2-core AVX-512-BF16 CPU, torch 2.14.1, 1 thread, CPU time):
    torch.compile of encoder and decoder (tiny config): eval encode+decode 1.17x (dense) /
        1.13x (blockwise) after 55 s / 168 s of compilation, recompiling for every new set of
        lengths; the train step got slower (0.78x).
    flex_attention with a block mask (one tiny-encoder attention: 4 heads, 512 tokens): eager
        23 ms, compiled 5.3 ms, against 5.0 ms for dense masked SDPA and 3.4 ms for the
        per-block SDPA calls used here.

Usage:
    python benchmarks/tokenizer.py --configs demo tiny S --threads 1 2 [--batch 1] [--repeats 3]
    python benchmarks/tokenizer.py --psnr /tmp/h2data [--checkpoint runs/demo/...ckpt]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from adaptok.nn import AdapTokTokenizer, TailDropSampler
from modules.loading import load_frozen_tokenizer

CONFIGS: dict[str, dict[str, object]] = {
    "demo": dict(
        num_frames=16,
        image_size=64,
        patch_size=(4, 8, 8),
        tokens_per_block=32,
        width=128,
        depth=2,
        heads=4,
        codebook_size=256,
        code_dim=8,
        query_init_std=1.0,
    ),
    "tiny": dict(
        num_frames=16, image_size=64, patch_size=(4, 8, 8), tokens_per_block=64, width=256, depth=4
    ),
    "S": dict(
        num_frames=16,
        image_size=128,
        patch_size=(4, 8, 8),
        tokens_per_block=512,
        width=512,
        depth=6,
        heads=8,
    ),
}
CONFIGS["tiny"]["heads"] = 4
VARIANTS = {
    "dense-fp32": ("dense", "fp32"),
    "blockwise-fp32": ("blockwise", "fp32"),
    "blockwise-bf16": ("blockwise", "bf16"),
    "dense-bf16": ("dense", "bf16"),
}
REFERENCE = "dense-fp32"
CASES = ("encdec_all", "encdec_quarter", "decode_all", "decode_quarter", "train")


def build(config: str, device: torch.device) -> AdapTokTokenizer:
    """The configuration's tokenizer with seed-0 weights and a random (non-zero) output layer."""
    torch.manual_seed(0)
    model = AdapTokTokenizer(**CONFIGS[config]).to(device)  # type: ignore[arg-type]
    torch.nn.init.normal_(model.output.weight, std=0.02)
    return model


def _sampler(config: str, m: int) -> TailDropSampler:
    if config == "demo":
        return TailDropSampler("uniform", min_tokens=1, max_tokens=m)
    return TailDropSampler(mean=m / 2, std=m / 4, min_tokens=max(m // 16, 1), max_tokens=m)


def make_case(
    model: AdapTokTokenizer, config: str, case: str, batch: int, device: torch.device
) -> Callable[[int], object]:
    """A callable `run(round)` of one case; `round` seeds the train case's lengths."""
    generator = torch.Generator().manual_seed(0)
    video = torch.rand(
        batch, 3, model.num_frames, model.image_size, model.image_size, generator=generator
    ).to(device)
    m, k = model.tokens_per_block, model.num_blocks
    per_block = m if case.endswith("_all") else max(m // 4, 1)
    lengths = torch.full((batch, k), per_block, dtype=torch.long, device=device)
    if case == "train":
        sampler = _sampler(config, m)

        def train(round_: int) -> object:
            model.train()
            draw = sampler.sample(batch, k, torch.Generator().manual_seed(round_), device)
            out = model(video, draw)
            loss = (out.recon - video).abs().mean() + out.vq_loss
            loss.backward()
            model.zero_grad(set_to_none=True)
            return loss

        return train
    model.eval()
    # Random codes: the decoder's cost does not depend on them, and no encode runs before a
    # memory measurement.
    codes = torch.randint(
        0, model.quantizer.codebook_size, (batch, model.num_tokens), generator=generator
    ).to(device)

    @torch.no_grad()
    def infer(round_: int) -> object:
        model.eval()
        if case.startswith("encdec"):
            return model.decode(model.encode(video).codes, lengths)
        return model.decode(codes, lengths)

    return infer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_case(
    model: AdapTokTokenizer,
    config: str,
    case: str,
    batch: int,
    variants: list[str],
    repeats: int,
    device: torch.device,
    memory: bool = True,
) -> dict[str, tuple[float, float, float]]:
    """Median (wall, process CPU) seconds per call of each variant, and peak memory.

    Rounds are interleaved; the peak tensor memory comes from one more call (MiB; NaN
    without `memory`).
    """
    run = make_case(model, config, case, batch, device)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for round_ in range(repeats + 1):
        for name in variants:
            model.attention, model.precision = VARIANTS[name]
            _sync(device)
            wall, cpu = time.perf_counter(), time.process_time()
            run(round_)
            _sync(device)
            if round_ > 0:  # round 0 warms up
                times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    results = {}
    for name, values in times.items():
        model.attention, model.precision = VARIANTS[name]
        mib = peak_memory(run, device) if memory else float("nan")
        wall, cpu = statistics.median(t[0] for t in values), statistics.median(t[1] for t in values)
        results[name] = (wall, cpu, mib)
    model.attention, model.precision = "blockwise", "fp32"
    return results


def peak_memory(run: Callable[[int], object], device: torch.device) -> float:
    """Peak MiB of tensor memory allocated during one call of `run`, above the start.

    CUDA: `max_memory_allocated`. CPU: replays the allocations and frees recorded by the torch
    profiler (`profile_memory`), so temporaries freed inside one operator are not seen.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        run(1)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as profiler:
        run(1)
    changes = []
    for event in profiler.events():
        if event.name == "[memory]":
            changes.append((event.time_range.start, event.cpu_memory_usage))
        elif event.self_cpu_memory_usage > 0:
            changes.append((event.time_range.start, event.self_cpu_memory_usage))
    current = peak = 0
    for _, change in sorted(changes):
        current += change
        peak = max(peak, current)
    return peak / 2**20


def benchmark(args: argparse.Namespace) -> None:
    """Prints the speed table for every thread count, then the memory table."""
    device = torch.device(args.device)
    variants = [name for name in VARIANTS if name != "dense-bf16" or args.dense_bf16]
    for threads in args.threads:
        torch.set_num_threads(threads)
        print(
            f"\n## threads={threads} device={device} batch={args.batch} "
            f"median of {args.repeats} interleaved rounds\n"
        )
        print(
            "| config | case | variant | wall s | cpu s | x ref wall | x ref cpu | x ref@all "
            "| peak MiB |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for config in args.configs:
            model = build(config, device)
            medians: dict[str, dict[str, tuple[float, float, float]]] = {}
            for case in args.cases:
                medians[case] = time_case(
                    model,
                    config,
                    case,
                    args.batch,
                    variants,
                    args.repeats,
                    device,
                    memory=not args.no_memory and threads == args.threads[0],
                )
                reference = medians[case][REFERENCE]
                all_case = case.replace("_quarter", "_all")
                for name, (wall, cpu, mib) in medians[case].items():
                    at_all = ""
                    if case.endswith("_quarter") and all_case in medians:
                        ref_wall, ref_cpu, _ = medians[all_case][REFERENCE]
                        at_all = f"{ref_wall / wall:.2f} / {ref_cpu / cpu:.2f}"
                    print(
                        f"| {config} | {case} | {name} | {wall:.4f} | {cpu:.4f} | "
                        f"{reference[0] / wall:.2f} | {reference[1] / cpu:.2f} | {at_all} "
                        f"| {mib:.0f} |",
                        flush=True,
                    )


# ------------------------------------------------------------------------------ bf16 quality
def load_clips(directory: Path, num_frames: int) -> torch.Tensor:
    """Every `num_frames`-frame window (no overlap) of the videos in DIR's *.tar shards.

    Returns:
        float `(N, 3, num_frames, H, W)` in [0, 1].
    """
    from adaptok.data.video_io import decode_video

    clips = []
    for shard in sorted(directory.glob("*.tar")):
        with tarfile.open(shard) as archive:
            for member in archive.getmembers():
                if not member.name.endswith(".mp4"):
                    continue
                data = archive.extractfile(member)
                if data is None:
                    continue
                frames = decode_video(io.BytesIO(data.read()).getvalue())
                video = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255
                for start in range(0, video.shape[1] - num_frames + 1, num_frames):
                    clips.append(video[:, start : start + num_frames])
    if not clips:
        raise ValueError(f"no .mp4 samples in the .tar shards of {directory}")
    return torch.stack(clips)


def _checkpoint_tokenizer(path: Path) -> AdapTokTokenizer:
    """The tokenizer of a stage checkpoint, built from the spec it records (any geometry)."""
    return load_frozen_tokenizer(path)


def _trained_tokenizer(clips: torch.Tensor, steps: int) -> AdapTokTokenizer:
    """Demo-config tokenizer after `steps` Adam steps of L1 + 0.01 VQ with uniform tail drop."""
    model = build("demo", torch.device("cpu")).train()
    torch.nn.init.zeros_(model.output.weight)
    sampler = _sampler("demo", model.tokens_per_block)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.9))
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        index = torch.randint(0, clips.shape[0], (8,), generator=generator)
        batch = clips[index]
        out = model(batch, sampler.sample(8, model.num_blocks, generator))
        loss = (out.recon - batch).abs().mean() + 0.01 * out.vq_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


def psnr(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-clip PSNR in dB of `(N, C, T, H, W)` videos in [0, 1] (recon clamped)."""
    mse = F.mse_loss(recon.clamp(0, 1), target, reduction="none").flatten(1).mean(1)
    return -10 * torch.log10(mse.clamp_min(1e-10))


def quality(args: argparse.Namespace) -> None:
    """Prints the PSNR of every variant at all tokens and at a quarter, and its change."""
    torch.set_num_threads(args.threads[0])
    clips = load_clips(Path(args.psnr), 16)
    if args.checkpoint:
        model, source = _checkpoint_tokenizer(Path(args.checkpoint)).eval(), args.checkpoint
    else:
        model = _trained_tokenizer(clips, args.train_steps)
        source = f"demo config trained {args.train_steps} steps on these clips"
    print(
        f"\n## bf16 quality: {clips.shape[0]} clips of {tuple(clips.shape[1:])} from "
        f"{args.psnr}; weights: {source}\n"
    )
    print("| tokens/block | variant | PSNR dB | change vs dense-fp32 dB | codes equal |")
    print("|---|---|---|---|---|")
    m = model.tokens_per_block
    for per_block in (m, m // 4):
        lengths = torch.full((clips.shape[0], model.num_blocks), per_block, dtype=torch.long)
        results = {}
        for name in ("dense-fp32", "blockwise-fp32", "blockwise-bf16", "dense-bf16"):
            model.attention, model.precision = VARIANTS[name]
            with torch.no_grad():
                codes = model.encode(clips).codes
                results[name] = (codes, psnr(model.decode(codes, lengths), clips))
        ref_codes, ref_psnr = results[REFERENCE]
        for name, (codes, values) in results.items():
            same = (codes == ref_codes).float().mean().item()
            change = (values - ref_psnr).mean().item()
            print(
                f"| {per_block} | {name} | {values.mean():.3f} | {change:+.4f} | "
                f"{100 * same:.1f}% |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--configs", nargs="+", default=["demo", "tiny"], choices=list(CONFIGS))
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after a warm-up")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--dense-bf16", action="store_true", help="also time dense-bf16")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory column")
    parser.add_argument("--psnr", default=None, help="shard folder: measure the bf16 PSNR cost")
    parser.add_argument("--checkpoint", default=None, help="TokenizerModule checkpoint (demo)")
    parser.add_argument("--train-steps", type=int, default=300)
    args = parser.parse_args()
    if args.psnr:
        quality(args)
    else:
        benchmark(args)


if __name__ == "__main__":
    main()
