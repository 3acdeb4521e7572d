"""Tokenizer speed and memory: encode / decode clips per second, train-step time, peak memory.

Configurations:
    demo: 16 x 64 x 64 clips, patch 4x8x8, width 192, depth 4, 64 tokens per block (4 blocks).
    paper: 16 x 128 x 128 clips, patch 4x8x8, width 768, depth 12, 512 tokens per block.

Phases (each run in a fresh process so that its peak memory is its own):
    encode: `AdapTokTokenizer.encode` in eval mode without grad (all 4 x M tokens).
    decode: `AdapTokTokenizer.decode` of all tokens, eval mode, without grad.
    train: one generator step = `forward` (train mode, stochastic VQ, truncated-normal tail
        drop) + `TokenizerLoss.generator_loss` with L1 and VQ only (no LPIPS, no
        discriminator, no prior) + backward. No optimiser step.

Peak memory: peak resident set size of the process on CPU (includes the torch runtime and
the weights), `torch.cuda.max_memory_allocated` on CUDA.

Usage:
    python benchmarks/tokenizer.py [--device cpu] [--configs demo paper] [--batch-sizes 1 8]
        [--repeats 3] [--threads N] [--paper-batch8]

On a loaded machine `--threads 1` avoids OpenMP threads fighting over busy cores (here it
made a demo encode 8x faster than 2 threads).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
from collections.abc import Callable

import torch

from adaptok.losses.tokenizer_loss import TokenizerLoss
from adaptok.nn import AdapTokTokenizer, TailDropSampler

CONFIGS: dict[str, dict[str, object]] = {
    "demo": dict(
        num_frames=16,
        image_size=64,
        patch_size=(4, 8, 8),
        tokens_per_block=64,
        width=192,
        depth=4,
        heads=6,
    ),
    "paper": {},
}
PHASES = ("encode", "decode", "train")


def _build(config: str, device: torch.device) -> AdapTokTokenizer:
    torch.manual_seed(0)
    return AdapTokTokenizer(**CONFIGS[config]).to(device)  # type: ignore[arg-type]


def _timed(run: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median seconds of `run` after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def measure(
    config: str, phase: str, batch: int, repeats: int, device_name: str, threads: int | None
) -> dict:
    """Runs one (config, phase, batch) case; returns seconds per call and peak memory."""
    if threads is not None:
        torch.set_num_threads(threads)
    device = torch.device(device_name)
    model = _build(config, device)
    video = torch.rand(batch, 3, model.num_frames, model.image_size, model.image_size)
    video = video.to(device)
    m = model.tokens_per_block
    full = torch.full((batch, model.num_blocks), m, dtype=torch.long, device=device)
    if phase == "train":
        model.train()
        sampler = TailDropSampler(mean=m / 2, std=m / 4, min_tokens=max(m // 16, 1), max_tokens=m)
        loss = TokenizerLoss(perceptual=None, discriminator=None)

        def run() -> object:
            lengths = sampler.sample(batch, model.num_blocks, device=device)
            total, _ = loss.generator_loss(video, model(video, lengths), step=0)
            total.backward()
            model.zero_grad(set_to_none=True)
            return total

    else:
        model.eval()
        with torch.no_grad():
            codes = model.encode(video).codes

        @torch.no_grad()
        def run() -> object:
            return model.encode(video) if phase == "encode" else model.decode(codes, full)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = _timed(run, repeats, device)
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_mib": peak_mib}


def _parameter_counts() -> dict[str, tuple[float, float]]:
    """(without prior, with a 12-layer width-384 prior) in millions, built on the meta device."""
    counts = {}
    for name, config in CONFIGS.items():
        with torch.device("meta"):
            model = AdapTokTokenizer(**config, prior_depth=12)  # type: ignore[arg-type]
        counts[name] = (model.parameter_count(False) / 1e6, model.parameter_count() / 1e6)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after a warm-up")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument(
        "--paper-batch8",
        action="store_true",
        help="also run the paper config at batch > 1 on CPU (minutes per phase)",
    )
    args = parser.parse_args()

    print("Parameters (M): config | without prior | with prior (12 x 384)")
    for name, (without, with_prior) in _parameter_counts().items():
        print(f"  {name:6s} | {without:8.2f} | {with_prior:8.2f}")
    threads = args.threads or torch.get_num_threads()
    print(f"\ndevice={args.device} threads={threads} repeats={args.repeats} (paper on CPU: 1)")
    print("| config | batch | phase | s/call | clips/s | peak MiB |")
    print("|---|---|---|---|---|---|")
    context = multiprocessing.get_context("spawn")
    skipped = []
    for config in args.configs:
        for batch in args.batch_sizes:
            if config == "paper" and batch > 1 and args.device == "cpu" and not args.paper_batch8:
                skipped.append(f"paper batch {batch}")
                continue
            for phase in args.phases:
                repeats = 1 if config == "paper" and args.device == "cpu" else args.repeats
                with context.Pool(1) as pool:
                    result = pool.apply(
                        measure, (config, phase, batch, repeats, args.device, args.threads)
                    )
                seconds = result["seconds"]
                print(
                    f"| {config} | {batch} | {phase} | {seconds:.3f} | {batch / seconds:.2f} "
                    f"| {result['peak_mib']:.0f} |",
                    flush=True,
                )
    if skipped:
        print(f"\nskipped on CPU (pass --paper-batch8): {', '.join(skipped)}")


if __name__ == "__main__":
    main()
