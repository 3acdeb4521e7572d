"""Build the official AdapTok models at a tiny size and save their outputs for parity tests.

Run once by a developer who has the official repository (VisionXLab/AdapTok) checked out;
nothing here is imported by the suite, and no official code is copied into it::

    python tools/make_official_reference.py --official /path/to/AdapTok \
        --out tests/pretrained/official_reference.safetensors

The script imports the official ``models`` package from ``--official``, builds the tokenizer
(with its scorer and a one-layer LARP prior), the class-conditional AR generator and the
frame-prediction generator at a TINY configuration with a fixed seed, perturbs every
parameter (the official init zeroes the output layers, which would make the outputs
trivially equal), and runs them on a fixed input:

- encoder: continuous latents, post-quantization tokens and the argmax codes;
- decoder: the reconstruction at several kept lengths per block, from the quantized tokens
  (the official ``decode_with_mask``) and from the codes (``decode_from_bottleneck``'s path,
  ``decode_with_drop``);
- scorer: the per-block scores of the official inference pass (``decode_scorer`` with the
  earlier blocks at given lengths, the scored block whole and the later ones dropped);
- generator: teacher-forced logits of ``<EOB>``-closed streams;
- frame-prediction generator (AdapTok-FP, built with the arguments the official FP trainer
  derives, ``start_ar_block_idx`` 1 as the K600 training script runs it): the condition
  (the clip's first ``FP_CONDITION_FRAMES`` frames, the last repeated, encoded by the
  tokenizer; its first two blocks' codes and ``<SEP>``) and the teacher-forced logits of
  streams over blocks 1..K-1.

Everything goes into one small safetensors file: ``official.tokenizer.*``,
``official.generator.*`` and ``official.fp_generator.*`` (the official state dicts),
``input.*`` and ``output.*``; the metadata holds the official configurations as JSON
(``tokenizer_config``, ``generator_config``, ``fp_generator_config``: the model arguments a
trained FP checkpoint stores) and the provenance. ``tests/pretrained/test_official_parity.py``
converts the weights with ``adaptok convert-official`` and matches the outputs.

The official code imports packages its model classes do not need (wandb, decord, lpips,
pulp, transformers, ...); those missing from the running environment are replaced by empty
modules. It does need ``einops`` and ``easydict``: install them anywhere on ``sys.path``
(``pip install --target /tmp/offdeps einops easydict`` and ``--extra-path /tmp/offdeps``),
not into the project's environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.machinery
import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

#: Packages the official modules import at module level but the model classes never use.
_UNUSED_IMPORTS = (
    "pulp",
    "lpips",
    "transformers",
    "wandb",
    "decord",
    "moviepy",
    "pytorch_msssim",
    "mergedeep",
    "imageio",
    "requests",
    "seaborn",
    "pandas",
)

SEED = 20250517
BATCH = 2
#: Kept tokens per block for the decoder outputs (M = 8, K = 4 at the tiny size).
DECODE_LENGTHS = {
    "full": [[8, 8, 8, 8], [8, 8, 8, 8]],
    "mixed": [[8, 4, 2, 1], [3, 8, 5, 2]],
    "short": [[1, 1, 1, 1], [2, 1, 3, 1]],
}
#: Lengths the earlier blocks are kept at when each block is scored.
SCORER_CONTEXT = [[5, 3, 8, 2], [1, 8, 4, 6]]
#: Kept codes per block of the generator's teacher-forced streams.
GENERATOR_LENGTHS = [[3, 8, 1, 5], [8, 2, 6, 8]]
GENERATOR_LABELS = [2, 5]  # 5 = the null class (num_classes = 5)
#: Frame prediction: frames of the condition clip (the official scripts use 5 of 16).
FP_CONDITION_FRAMES = 5
#: Kept codes per block of the FP streams; block 0 is the condition's (not generated).
FP_LENGTHS = [[8, 3, 6, 1], [8, 7, 2, 8]]

TOKENIZER_CONFIG = {
    "bottleneck": {
        "name": "bottleneck",
        "args": {
            "bottleneck_dim": 8,
            "norm": "none",
            "regularizer": {
                "name": "vq",
                "args": {
                    "codebook_size": 64,
                    "commitment_loss_weight": 0.25,
                    "codebook_loss_weight": 1.0,
                    "l2_normalized": True,
                    "stochastic": True,
                    "stochastic_temperature": 0.03,
                    "eval_deterministic": True,
                },
            },
        },
    },
    "prior_model": {
        "name": "gptc-tiny",
        "use_mix_ss": True,
        "mix_ss_max_ratio": 0.5,
        "mix_ss_peak_steps_ratio": 0.3,
        "n_rounds": 2,
        "avg_loss_over_rounds": True,
        "no_grad_before_last_round": False,
        "latent_ce_temperature": 1.0,
        "args": {"l2_normalized": True},
    },
    "mode": "infer_with_online_scorer",
    "decode_mode": "with_mask",
    "transformer_name": "transformer_encoder_parallel",
    "bottleneck_token_num": 32,
    "input_size": 16,
    "frame_num": 8,
    "temporal_patch_size": 2,
    "patch_size": 4,
    "decoder_temporal_patch_size": 2,
    "decoder_patch_size": 4,
    "in_channels": 3,
    "encoder_hidden_size": 24,
    "decoder_hidden_size": 24,
    "encoder_num_heads": 2,
    "decoder_num_heads": 2,
    "encoder_depth": 2,
    "decoder_depth": 2,
    "learned_encoder_patch_pe": False,
    "learned_encoder_latent_query_embed": True,
    "learned_decoder_latent_pe": False,
    "learned_decoder_patch_query_embed": False,
    "use_encoder_patch_token_type_embed": False,
    "use_encoder_latent_query_token_type_embed": False,
    "use_decoder_latent_token_type_embed": False,
    "use_decoder_patch_query_token_type_embed": True,
    "encoder_query_gaussian_init": True,
    "latent_pe_scale_factor": 10000,
    "query_init_std": 0.02,
    "encoder_attn_type": "full_causal_type1",
    "decoder_attn_type": "full_causal_type2",
    "scorer_attn_type": "none",
    "scorer_name": "transformer_scorer",
    "scorer_step": 2,
    "scorer_hidden_size": 24,
    "scorer_depth": 2,
    "scorer_num_heads": 2,
    "mask_generator": {
        "mask_type": "left_masking_by_group",
        "eval_mask_type": "full_ones",
        "min_toks": 1,
        "max_toks": 8,
        "total_toks": 8,
        "tot_groups": 4,
    },
    "device": "cpu",
}

GENERATOR_CONFIG = {
    "name": "llama-abs-tiny",
    "args": {
        "dim": 24,
        "n_layer": 2,
        "n_head": 2,
        "multiple_of": 16,
        "vocab_size": 64,
        "num_classes": 5,
        "class_dropout_prob": 0.1,
        "cls_token_num": 1,
        "max_seq_len": 32,
        "with_block_sep": True,
        "tot_blocks": 4,
        "use_fixed_pe": False,
        "mode": "train_adap_ar",
    },
}


#: The FP generator as ``cfgs/adaptok_ar_fp.yaml`` + ``scripts/train_adaptok_ar_fp.sh`` set
#: it (2 condition blocks of M = 8 codes, generation from block 1), at the tiny size; the
#: official FP trainer derives the rest (``fp_trainer_args``).
FP_GENERATOR_CONFIG = {
    "name": "llama-abs-tiny",
    "args": {
        "dim": 24,
        "n_layer": 2,
        "n_head": 2,
        "multiple_of": 16,
        "mode": "train_adap_ar_fp",
        "num_classes": 5,
        "cls_token_num": 16,
        "custom_cls_token_num": True,
        "start_ar_block_idx": 1,
        "token_dropout_p": 0.1,
        "use_fixed_pe": False,
        "with_block_sep": True,
        "tot_blocks": 4,
    },
}


def fp_trainer_args(args: dict, num_tokens: int, codebook_size: int) -> dict:
    """The model arguments the official FP trainer builds (and a checkpoint stores).

    Generation starts at block ``start_ar_block_idx``: the earlier blocks and their codes
    leave the generated stream; ``max_seq_len`` counts generated codes only; the condition
    holds ``cls_token_num`` codes plus ``<SEP>`` (or every code plus ``<SEP>`` without
    ``custom_cls_token_num``).
    """
    args = dict(args)
    sequence = num_tokens
    start = int(args.get("start_ar_block_idx", 0))
    if start > 0:
        per_block = num_tokens // args["tot_blocks"]
        args["tot_blocks"] -= start
        sequence -= per_block * start
    args["max_seq_len"] = sequence
    args["vocab_size"] = codebook_size
    args["frame_prediction"] = True
    if args.get("custom_cls_token_num", False):
        args["cls_token_num"] += 1
    else:
        args["cls_token_num"] = sequence + 1
    return args


def _stub_missing(names: tuple[str, ...]) -> list[str]:
    """Registers an empty module for every name that cannot be imported; returns those."""
    stubbed = []
    for name in names:
        if importlib.util.find_spec(name) is not None:
            continue
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        sys.modules[name] = module
        stubbed.append(name)
    if "transformers" in stubbed:
        sys.modules["transformers"].PretrainedConfig = object  # a base class name only
    return stubbed


def import_official(root: Path) -> types.ModuleType:
    """Imports the official ``models`` package from a checkout at ``root``."""
    _stub_missing(_UNUSED_IMPORTS)
    # models/adaptok.py imports datasets.adap_priors; the package __init__ needs decord.
    datasets = types.ModuleType("datasets")
    datasets.__path__ = [str(root / "datasets")]
    datasets.__spec__ = importlib.machinery.ModuleSpec("datasets", None, is_package=True)
    sys.modules["datasets"] = datasets
    sys.path.insert(0, str(root))
    import models  # the official package, importable only now
    from models import adaptok_ar, gptc

    def tiny_prior(**kwargs: object) -> torch.nn.Module:
        return gptc.GPTC(gptc.GPTCConfig(n_layer=1, n_head=2, n_embd=16, **kwargs))

    def tiny_generator(**kwargs: object) -> torch.nn.Module:
        return adaptok_ar.AdapTok_AR(adaptok_ar.ModelArgs(**kwargs))

    models.models["gptc-tiny"] = tiny_prior
    models.models["llama-abs-tiny"] = tiny_generator
    return models


#: Larger noise where the official init makes every token alike (std 0.02 latent queries
#: give near-identical latents and one code for most tokens).
_NOISE = {"encoder_latent_query_embed": 1.0}


def _perturb(module: torch.nn.Module, generator: torch.Generator, scale: float = 0.05) -> None:
    """Adds seeded noise to every parameter (the official init zeroes the output layers)."""
    with torch.no_grad():
        for name, parameter in sorted(module.named_parameters()):
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.add_(noise * _NOISE.get(name, scale))


def _left_mask(lengths: list[list[int]], tokens_per_block: int) -> torch.Tensor:
    """Bool ``(B, K * M)``: the first ``lengths[b][k]`` tokens of each block kept."""
    table = torch.tensor(lengths)
    slots = torch.arange(tokens_per_block)
    return (slots[None, None, :] < table[:, :, None]).flatten(1)


def _stream(lengths: list[int], codes: torch.Tensor, eob: int) -> list[int]:
    out: list[int] = []
    for block, length in enumerate(lengths):
        out += codes[block, :length].tolist() + [eob]
    return out


@torch.no_grad()
def _frame_prediction(
    models: types.ModuleType,
    tokenizer: torch.nn.Module,
    video: torch.Tensor,
    encoded: dict,
    noise: torch.Generator,
    tensors: dict[str, torch.Tensor],
) -> dict:
    """Builds and runs the official FP generator; adds its tensors; returns its config."""
    config = TOKENIZER_CONFIG
    num_tokens = config["bottleneck_token_num"]
    codebook = config["bottleneck"]["args"]["regularizer"]["args"]["codebook_size"]
    m = num_tokens // config["mask_generator"]["tot_groups"]
    torch.manual_seed(SEED + 2)
    spec = json.loads(json.dumps(FP_GENERATOR_CONFIG))
    spec["args"] = fp_trainer_args(spec["args"], num_tokens, codebook)
    generator = models.make(spec)
    _perturb(generator, noise)
    generator.eval()
    # The condition as the official sampler makes it: the first frames, the last repeated.
    frames = video[:, :, :FP_CONDITION_FRAMES]
    missing = video.shape[2] - FP_CONDITION_FRAMES
    condition_video = torch.cat([frames, frames[:, :, -1:].repeat(1, 1, missing, 1, 1)], 2)
    condition_codes = tokenizer.encode(condition_video, with_latent_mask=False)["bottleneck_rep"]
    condition = condition_codes.long()[:, : generator.cls_token_num - 1]
    sep = torch.full((BATCH, 1), generator.cond_sep_id, dtype=torch.long)
    condition = torch.cat([condition, sep], dim=1)
    start = generator.start_ar_block_idx
    codes = encoded["bottleneck_rep"].long().view(BATCH, -1, m)
    eob = generator.block_sep_id
    streams = [
        _stream(lengths[start:], codes[i, start:], eob) for i, lengths in enumerate(FP_LENGTHS)
    ]
    width = max(len(s) for s in streams)
    padded = torch.tensor([s + [eob] * (width - len(s)) for s in streams])
    logits, _ = generator(idx=padded[:, :-1], cond_idx=condition)
    tensors["input.fp_condition_frames"] = torch.tensor(FP_CONDITION_FRAMES)
    tensors["input.fp_condition"] = condition
    tensors["input.fp_stream"] = padded
    tensors["input.fp_lengths"] = torch.tensor(FP_LENGTHS)
    tensors["output.fp_condition_codes"] = condition_codes.long()
    tensors["output.fp_logits"] = logits
    tensors.update({f"official.fp_generator.{k}": v for k, v in generator.state_dict().items()})
    # What a trained checkpoint stores as its model arguments (every ModelArgs field).
    return {"name": spec["name"], "args": dataclasses.asdict(generator.config)}


@torch.no_grad()
def build_reference(root: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Runs the official models; returns the tensors and metadata to save."""
    models = import_official(root)
    torch.manual_seed(SEED)
    noise = torch.Generator().manual_seed(SEED)
    tokenizer = models.make({"name": "adaptok", "args": json.loads(json.dumps(TOKENIZER_CONFIG))})
    _perturb(tokenizer, noise)
    tokenizer.eval()
    m = TOKENIZER_CONFIG["bottleneck_token_num"] // TOKENIZER_CONFIG["mask_generator"]["tot_groups"]
    config = TOKENIZER_CONFIG
    video = torch.rand(
        BATCH,
        3,
        config["frame_num"],
        config["input_size"],
        config["input_size"],
        generator=noise,
    )
    tensors: dict[str, torch.Tensor] = {"input.video": video}
    encoded = tokenizer.encode(video, with_latent_mask=False)
    tensors["output.latents"] = encoded["input"]
    tensors["output.quantized"] = encoded["encoded"]
    tensors["output.codes"] = encoded["bottleneck_rep"].long()
    for name, lengths in DECODE_LENGTHS.items():
        mask = _left_mask(lengths, m)
        tensors[f"input.lengths.{name}"] = torch.tensor(lengths)
        tensors[f"output.decoded.{name}"] = tokenizer.decode_with_mask(encoded["encoded"], mask)
        if name == "mixed":  # the AR path: codes -> codebook -> decode_with_drop
            from_codes = tokenizer.bottleneck.decode(encoded["bottleneck_rep"])
            tensors["output.decoded_codes.mixed"] = tokenizer.decode_with_drop(from_codes, mask)
    # The official inference pass for block b: earlier blocks at their chosen lengths,
    # block b whole, later blocks dropped (trainers' encode_eval / online scorer step).
    context = torch.tensor(SCORER_CONTEXT)
    step = config["scorer_step"]
    scores = []
    for block in range(context.shape[1]):
        kept = context.clone()
        kept[:, block] = m
        kept[:, block + 1 :] = 0
        mask = _left_mask(kept.tolist(), m)
        out = tokenizer.decode_scorer(encoded["input"], encoded["encoded"], mask)["scores"]
        per_block = m // step
        scores.append(out[:, block * per_block : (block + 1) * per_block])
    tensors["input.scorer_context"] = context
    tensors["output.scores"] = torch.stack(scores, dim=1)
    tensors.update({f"official.tokenizer.{k}": v for k, v in tokenizer.state_dict().items()})

    torch.manual_seed(SEED + 1)
    generator = models.make(json.loads(json.dumps(GENERATOR_CONFIG)))
    _perturb(generator, noise)
    generator.eval()
    codes = encoded["bottleneck_rep"].long().view(BATCH, -1, m)
    eob = generator.block_sep_id
    streams = [_stream(lengths, codes[i], eob) for i, lengths in enumerate(GENERATOR_LENGTHS)]
    width = max(len(s) for s in streams)
    padded = torch.tensor([s + [eob] * (width - len(s)) for s in streams])
    labels = torch.tensor(GENERATOR_LABELS)
    logits, _ = generator(idx=padded[:, :-1], cond_idx=labels)
    tensors["input.generator_stream"] = padded
    tensors["input.generator_labels"] = labels
    tensors["input.generator_lengths"] = torch.tensor(GENERATOR_LENGTHS)
    tensors["output.generator_logits"] = logits
    tensors.update({f"official.generator.{k}": v for k, v in generator.state_dict().items()})

    fp_config = _frame_prediction(models, tokenizer, video, encoded, noise, tensors)
    tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    metadata = {
        "tokenizer_config": json.dumps(TOKENIZER_CONFIG),
        "generator_config": json.dumps(GENERATOR_CONFIG),
        "fp_generator_config": json.dumps(fp_config),
        "seed": str(SEED),
        "official_commit": commit or "unknown",
        "torch": torch.__version__,
        "made_by": "tools/make_official_reference.py",
    }
    return tensors, metadata


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, required=True, help="official repo checkout")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("tests/pretrained/official_reference.safetensors"),
        help="reference file to write",
    )
    parser.add_argument(
        "--extra-path",
        action="append",
        default=[],
        help="folder with einops/easydict (pip install --target DIR ...), repeatable",
    )
    parser.add_argument("--commit", default=None, help="official commit (default: git HEAD)")
    args = parser.parse_args(argv)
    for extra in args.extra_path:
        sys.path.insert(0, extra)
    torch.set_num_threads(1)
    tensors, metadata = build_reference(args.official.resolve())
    if args.commit:
        metadata["official_commit"] = args.commit
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out), metadata=metadata)
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({len(tensors)} tensors, {size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
