"""AR generator sampling speed: KV cache vs full recomputation, CFG, peak memory.

Each case runs in its own subprocess (so the peak memory is that case's alone) and samples
clips whose every block is forced to its full length (exact budget K x M), so a clip always
costs K x (M + 1) sampled tokens. Reports medians over ``--repeats`` runs:

- ``demo``: the demo generator's network as it was when the README's figures were measured
  (width 96, 3 layers, 4 blocks x 32 tokens of 256 codes; the demo now has 48 of 4096), batch 16;
- ``1k``: a small network (width 128, 4 layers, ~1M parameters) over 4 blocks x 250 tokens
  (1,004 sampled tokens), batch 1: the KV-cache target (>= 10x the uncached speed at 1,000
  tokens);
- ``paper``: the 633M paper network (30 x 1280, SwiGLU 3584), batch 1, 256 tokens; on CPU
  only the cached decoder is timed (recomputing 633M parameters per token takes hours).

Usage::

    python benchmarks/generator.py                   # all cases, 3 repeats
    python benchmarks/generator.py --cases demo 1k --repeats 5 --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import torch

from adaptok.nn.generator import ARGenerator
from adaptok.nn.sampling import sample

NETWORKS: dict[str, dict[str, int]] = {
    "demo": {"width": 96, "depth": 3, "heads": 4, "mlp_hidden": 256, "codebook_size": 256},
    "small": {"width": 128, "depth": 4, "heads": 4, "mlp_hidden": 352, "codebook_size": 256},
    "paper": {"width": 1280, "depth": 30, "heads": 20, "mlp_hidden": 3584, "codebook_size": 8192},
}
CASES: dict[str, dict[str, Any]] = {
    "demo": {"network": "demo", "blocks": 4, "tokens": 32, "batch": 16, "total": None},
    "1k": {"network": "small", "blocks": 4, "tokens": 250, "batch": 1, "total": None},
    "paper": {"network": "paper", "blocks": 4, "tokens": 512, "batch": 1, "total": 256},
}
MODES = ("cached", "uncached", "cached+cfg")


def build(case: dict[str, Any], device: torch.device, dtype: torch.dtype) -> ARGenerator:
    """The case's generator, random weights (output head non-zero so logits vary)."""
    torch.manual_seed(0)
    model = ARGenerator(
        num_blocks=case["blocks"],
        tokens_per_block=case["tokens"],
        num_classes=101,
        num_budgets=4,
        dropout=0.0,
        **NETWORKS[case["network"]],
    )
    torch.nn.init.normal_(model.head.weight, std=0.02)
    return model.to(device, dtype).eval()


def run_case(name: str, mode: str, repeats: int, device_name: str) -> dict[str, Any]:
    """Times one (case, mode) in this process; returns the row."""
    case = CASES[name]
    device = torch.device(device_name)
    dtype = (
        torch.bfloat16 if device.type == "cuda" and case["network"] == "paper" else torch.float32
    )
    model = build(case, device, dtype)
    batch = case["batch"]
    total = case["total"] or case["blocks"] * case["tokens"]
    label = torch.arange(batch, device=device) % 101
    level = torch.zeros(batch, dtype=torch.long, device=device)
    totals = torch.full((batch,), total, dtype=torch.long, device=device)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base_cuda = torch.cuda.memory_allocated(device)
    seconds = []
    for repeat in range(repeats + 1):  # the first run warms up
        start = time.perf_counter()
        out = sample(
            model,
            label,
            level,
            total_tokens=totals,
            use_cache=mode != "uncached",
            cfg_scale=1.5 if mode == "cached+cfg" else None,
            generator=torch.Generator().manual_seed(repeat),
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if repeat > 0 or repeats == 0:
            seconds.append(time.perf_counter() - start)
        assert int(out.total_tokens.min()) == total
        if repeats == 0:
            break
    sampled = batch * (total + case["blocks"])  # codes + one <EOB> per block
    median = statistics.median(seconds)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(device) - base_cuda) / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    return {
        "case": name,
        "params_M": round(model.parameter_count() / 1e6, 1),
        "batch": batch,
        "mode": mode,
        "tokens_per_clip": total + case["blocks"],
        "median_s": round(median, 3),
        "tokens_per_s": round(sampled / median, 1),
        "peak_MiB": round(peak, 1),
        "runs": len(seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        name, mode, repeats = json.loads(args.worker)
        print(json.dumps(run_case(name, mode, repeats, args.device)))
        return

    rows = []
    for name in args.cases:
        for mode in MODES:
            repeats = args.repeats
            if mode == "uncached" and name == "paper" and args.device == "cpu":
                continue
            if mode == "uncached" and name == "1k":
                repeats = min(repeats, 1)  # tens of seconds per run on CPU
            worker = json.dumps([name, mode, repeats])
            result = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    worker,
                    "--threads",
                    str(args.threads),
                    "--device",
                    args.device,
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(f"  {rows[-1]}", file=sys.stderr, flush=True)

    uncached = {r["case"]: r["tokens_per_s"] for r in rows if r["mode"] == "uncached"}
    header = "| case | params (M) | batch | mode | tokens/clip | median s | tokens/s | vs uncached | peak MiB |"
    print(f"device {args.device}, {args.threads} threads, medians of {args.repeats} runs\n")
    print(header)
    print("|" + "---|" * 9)
    for r in rows:
        ratio = f"{r['tokens_per_s'] / uncached[r['case']]:.1f}x" if r["case"] in uncached else "-"
        print(
            f"| {r['case']} | {r['params_M']} | {r['batch']} | {r['mode']} | "
            f"{r['tokens_per_clip']} | {r['median_s']} | {r['tokens_per_s']} | "
            f"{ratio} | {r['peak_MiB']} |"
        )


if __name__ == "__main__":
    main()
