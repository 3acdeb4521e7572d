"""Time to load a scorer stage and tokenize one clip: export folder vs Lightning checkpoint.

A scorer-stage checkpoint (tokenizer + scorer, random weights, AdamW state of the scorer as
a training run saves it) is written in the format ``adaptok fit`` produces, then exported
with ``adaptok export``. Each way of loading runs in a fresh Python process (imports
included, as a user pays them) and tokenizes one clip at half the tokens (``per_clip``):

- ``export``: ``adaptok.load_pretrained(DIR)`` (json + safetensors, no Lightning);
- ``ckpt``: ``adaptok.load_pretrained(CKPT)`` (``torch.load(weights_only=True)``, no Lightning);
- ``lightning``: ``modules.loading.load_stage(CKPT)`` (``ScorerModule.load_from_checkpoint``,
  which also builds the LPIPS network of the scorer's labels), then the same tokenization.

"import" covers every import, including the allocation modules ``tokenize`` uses (PyAV,
python-mip); "load" is building the networks and reading the weights; "tokenize" is one clip.

Cases: ``demo`` (the demo networks: 16x64x64 clips, width 128, 2 layers, 4 x 16 tokens) and
``s`` (the paper's S size: 16x128x128, width 512, 6 layers, 4 x 512 tokens; a scorer of
width 512 x 6). Medians over ``--repeats`` runs.

Usage::

    python benchmarks/pretrained_load.py                  # demo, 3 repeats
    python benchmarks/pretrained_load.py --cases demo s --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]

CASES: dict[str, dict[str, Any]] = {
    "demo": {
        "tokenizer": {
            "num_frames": 16,
            "image_size": 64,
            "patch_size": [4, 8, 8],
            "frames_per_block": 4,
            "tokens_per_block": 16,
            "width": 128,
            "depth": 2,
            "heads": 4,
            "codebook_size": 64,
            "code_dim": 4,
        },
        "scorer": {"width": 128, "depth": 2, "heads": 4, "num_candidates": 8},
    },
    "s": {
        "tokenizer": {
            "num_frames": 16,
            "image_size": 128,
            "patch_size": [4, 8, 8],
            "frames_per_block": 4,
            "tokens_per_block": 512,
            "width": 512,
            "depth": 6,
            "heads": 8,
            "codebook_size": 8192,
            "code_dim": 16,
        },
        "scorer": {"width": 512, "depth": 6, "heads": 8, "num_candidates": 8},
    },
}

_RUN = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
torch.set_num_threads({threads})
way, path = {way!r}, {path!r}
if way == "lightning":
    from modules.loading import load_stage
    from adaptok.pretrained import PretrainedAdapTok
else:
    from adaptok import load_pretrained
import adaptok.budget_planner, adaptok.tokenize  # what tokenize() imports on first use
t1 = time.perf_counter()
if way == "lightning":
    module = load_stage(path)
    model = PretrainedAdapTok(module.tokenizer, module.scorer)
else:
    model = load_pretrained(path)
t2 = time.perf_counter()
clip = torch.rand(1, 3, model.num_frames, model.image_size, model.image_size,
                  generator=torch.Generator().manual_seed(0))
tokens = model.tokenize(clip, budget=0.5, mode="per_clip")
t3 = time.perf_counter()
print(json.dumps({{"import": t1 - t0, "load": t2 - t1, "tokenize": t3 - t2,
                  "tokens": int(tokens.num_tokens.item()),
                  "lightning_imported": "lightning" in sys.modules}}))
"""


def _lpips_available() -> bool:
    try:
        from adaptok.metrics.lpips import load_lpips

        load_lpips("alex")
    except Exception:  # noqa: BLE001 (any missing weight cache)
        return False
    return True


def write_checkpoint(case: str, folder: Path) -> Path:
    """A scorer-stage checkpoint as ``adaptok fit`` writes it, with random weights."""
    from adaptok.nn.scorer import BlockCausalScorer
    from adaptok.nn.tokenizer import AdapTokTokenizer

    torch.manual_seed(0)
    settings = CASES[case]
    tokenizer = AdapTokTokenizer(**settings["tokenizer"])
    tok = settings["tokenizer"]
    scorer_args = {
        "token_width": tok["width"],
        "num_blocks": tok["num_frames"] // tok["frames_per_block"],
        "tokens_per_block": tok["tokens_per_block"],
        **settings["scorer"],
    }
    scorer = BlockCausalScorer(**scorer_args)
    optimizer = torch.optim.AdamW(scorer.parameters(), lr=1e-3)
    for parameter in scorer.parameters():
        parameter.grad = torch.randn_like(parameter) * 1e-3
    optimizer.step()
    metric = "lpips" if _lpips_available() else "psnr"
    hparams = {
        "_class_path": "modules.scorer.ScorerModule",
        "_instantiator": "lightning.pytorch.cli.instantiate_module",
        "scorer": {"class_path": "adaptok.nn.BlockCausalScorer", "init_args": settings["scorer"]},
        "scorer_spec": {"class_path": "adaptok.nn.BlockCausalScorer", "init_args": scorer_args},
        "tokenizer_ckpt": "runs/demo/tokenizer/checkpoints/last.ckpt",
        "metric": metric,
        "target_mean": 0.37,
        "target_std": 0.1,
        "context_drop": None,
        "optimizer": None,
        "scheduler": None,
        "lpips_net": "alex",
        "tokenizer_spec": {"class_path": "adaptok.nn.AdapTokTokenizer", "init_args": tok},
    }
    state = {f"tokenizer.{k}": v for k, v in tokenizer.state_dict().items()}
    state.update({f"scorer.{k}": v for k, v in scorer.state_dict().items()})
    checkpoint = {
        "epoch": 1,
        "global_step": 150,
        "pytorch-lightning_version": "2.6.0",
        "state_dict": state,
        "hyper_parameters": hparams,
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [],
    }
    path = folder / f"{case}_scorer.ckpt"
    torch.save(checkpoint, path)
    return path


def run(way: str, path: Path, threads: int) -> dict[str, Any]:
    code = _RUN.format(threads=threads, way=way, path=str(path))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{way} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=["demo"], choices=sorted(CASES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    from adaptok.export import export

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for case in args.cases:
            ckpt = write_checkpoint(case, folder)
            export_dir = export(ckpt, folder / f"{case}_export")
            sizes = {
                "ckpt": ckpt.stat().st_size,
                "export": (export_dir / "model.safetensors").stat().st_size,
            }
            for way, path in (("export", export_dir), ("ckpt", ckpt), ("lightning", ckpt)):
                runs = [run(way, path, args.threads) for _ in range(args.repeats)]
                median = {
                    key: statistics.median(r[key] for r in runs)
                    for key in ("import", "load", "tokenize")
                }
                size = sizes["export" if way == "export" else "ckpt"]
                rows.append(
                    (
                        case,
                        way,
                        size / 2**20,
                        median["import"],
                        median["load"],
                        median["tokenize"],
                        sum(median.values()),
                        runs[0]["lightning_imported"],
                    )
                )
    print(
        f"\nload + tokenize one clip (median of {args.repeats}, {args.threads} thread(s), "
        "fresh process each)\n"
    )
    print("| case | source | file MiB | import s | load s | tokenize s | total s | Lightning |")
    print("|---|---|---|---|---|---|---|---|")
    for case, way, mib, imp, load, tok, total, lightning in rows:
        print(
            f"| {case} | {way} | {mib:.1f} | {imp:.2f} | {load:.3f} | {tok:.3f} | "
            f"{total:.2f} | {'yes' if lightning else 'no'} |"
        )


if __name__ == "__main__":
    main()
