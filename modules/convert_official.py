r"""``adaptok convert-official``: the authors' AdapTok checkpoints as suite checkpoints.

Example::

    adaptok convert-official --tokenizer AdapTok/ --scorer AdapTok-Scorer/ \
        --generator AdapTok-AR/ --generator AdapTok-FP/ --out runs/official

writes ``runs/official/tokenizer.ckpt``, ``scorer.ckpt``, ``generator.ckpt`` (the
class-conditional UCF-101 generator) and ``fp_generator.ckpt`` (the K600 frame-prediction
generator): suite checkpoints that describe themselves (``modules.loading``): the tokenizer
spec and weights, the scorer's and the generators' stage hyperparameters with their
tokenizer inside, so ``adaptok test --ckpt_path runs/official/scorer.ckpt --config <eval
yaml>``, ``adaptok tokenize --ckpt runs/official/scorer.ckpt`` and
``adaptok.load_pretrained`` run on them. ``--generator`` takes either generator (recognised
from its configuration or, without one, from its tensors) and may be given twice.

Official checkpoints are read in any of their published forms, never by unpickling code:

- a Hugging Face folder (``config.json`` + ``model.safetensors``; ``AdapTok.from_pretrained``),
  or a ``.safetensors`` file with a ``config.json`` next to it;
- a ``.pt``/``.pth`` training checkpoint ``{"model": {"name", "args", "sd"}}``
  (``from_checkpoint``), read with ``torch.load(weights_only=True)``.

Where our networks differ from the official ones, the converted spec sets the options that
reproduce them exactly (``docs/DEVIATIONS.md``): no qkv bias, no final encoder LayerNorm,
decoder LayerNorm eps 1e-6, pixels on [0, 1], the official position tables stored in the
checkpoint, full attention over kept tokens in the scorer, no budget slot or block
embeddings in the generators, and no class slot in the frame-prediction generator (its
condition codes and ``<SEP>`` start the sequence; ``prefix_blocks`` = the official
``cls_token_num - 1`` codes in blocks). The official output layer's channels-last patch
layout is permuted into ours. The LARP prior (training only) is not converted. A
frame-prediction generator must generate from block 1 on (``start_ar_block_idx`` 1, as
the official K600 training script): the suite's frame prediction copies block 0 from the
condition.

Every official tensor must be used or be known to be unused, and every one of ours must be
filled with the right shape; otherwise conversion stops with :class:`OfficialCheckpointError`,
one line naming the first mismatching tensor.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from adaptok.nn.generator import ARGenerator
from adaptok.nn.scorer import BlockCausalScorer
from adaptok.nn.tokenizer import AdapTokTokenizer
from modules.loading import upgrade_network_specs

__all__ = [
    "OFFICIAL_CONDITION_FRAMES",
    "OFFICIAL_LABEL_NORMALISATION",
    "OfficialCheckpoint",
    "OfficialCheckpointError",
    "PROVENANCE_KEY",
    "convert_generator",
    "convert_scorer",
    "convert_tokenizer",
    "is_frame_prediction",
    "main",
    "read_official",
    "write_suite_checkpoints",
]

TOKENIZER_CLASS = "adaptok.nn.tokenizer.AdapTokTokenizer"
SCORER_CLASS = "adaptok.nn.scorer.BlockCausalScorer"
GENERATOR_CLASS = "adaptok.nn.generator.ARGenerator"

#: Mean and std the official online scorer's LPIPS labels are z-normalised with
#: (``DEFAULT_MEAN_STD['perceptual']`` of the official data code).
OFFICIAL_LABEL_NORMALISATION = (0.19749267399311066, 0.07615979015827179)

#: Condition frames of the official frame-prediction protocol (``--num_cond_frames 5``).
OFFICIAL_CONDITION_FRAMES = 5

#: Official tensors that have no counterpart at inference (the LARP prior trains the latent
#: space only; a learnable VQ temperature does not change the argmax).
_UNUSED_TOKENIZER_PREFIXES = ("prior_model.", "bottleneck.regularizer.stochastic_temperature_inv")

#: ``llama-abs-*`` sizes (layers, heads, width) of the official generator names.
_GENERATOR_SIZES = {
    "llama-abs-S": (12, 6, 384),
    "llama-abs-B": (12, 12, 768),
    "llama-abs-L": (24, 16, 1024),
    "llama-abs-LP": (30, 20, 1280),
    "llama-abs-XL": (36, 20, 1280),
    "llama-abs-XXL": (48, 24, 1536),
    "llama-abs-XXXL": (48, 40, 2560),
}


class OfficialCheckpointError(ValueError):
    """An official checkpoint that cannot be converted (the message is one line)."""


class OfficialCheckpoint:
    """An official checkpoint's configuration and tensors.

    Attributes:
        config: The model's init arguments (``config.json`` or ``ckpt["model"]["args"]``).
        state: The state dict.
        name: The registered model name (``adaptok``, ``llama-abs-LP``, ...) when known.
        source: Where it was read from.
    """

    def __init__(
        self, config: dict[str, Any], state: dict[str, Tensor], name: str | None, source: str
    ) -> None:
        self.config = config
        self.state = state
        self.name = name
        self.source = source


def _config_next_to(path: Path) -> dict[str, Any]:
    config_path = path / "config.json" if path.is_dir() else path.with_name("config.json")
    if not config_path.is_file():
        raise OfficialCheckpointError(f"{path}: no config.json next to the weights")
    return json.loads(config_path.read_text())


def read_official(path: str | Path) -> OfficialCheckpoint:
    """Reads an official checkpoint without unpickling code.

    Args:
        path: A Hugging Face folder, a ``.safetensors`` file with ``config.json`` beside it,
            or a ``.pt``/``.pth`` training checkpoint.

    Returns:
        The checkpoint.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        OfficialCheckpointError: Unknown layout, or a pickle holding more than tensors and
            plain containers.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"official checkpoint not found: {path}")
    if path.is_dir() or path.suffix == ".safetensors":
        weights = path / "model.safetensors" if path.is_dir() else path
        if not weights.is_file():
            raise OfficialCheckpointError(f"{path}: no model.safetensors")
        config = _config_next_to(path)
        if set(config) == {"config"} and isinstance(config["config"], dict):
            config = config["config"]  # a dataclass config saved by PyTorchModelHubMixin
        return OfficialCheckpoint(config, load_file(str(weights)), config.get("name"), str(path))
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 (any unpickling refusal)
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise OfficialCheckpointError(
            f"{path}: not readable as tensors and plain containers ({message})"
        ) from error
    model = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    if not isinstance(model, dict) or "sd" not in model:
        raise OfficialCheckpointError(
            f"{path}: expected an official checkpoint {{'model': {{'name', 'args', 'sd'}}}}"
        )
    return OfficialCheckpoint(
        dict(model.get("args") or {}), dict(model["sd"]), model.get("name"), str(path)
    )


# --------------------------------------------------------------------------- matching
class _Mapper:
    """Fills our state dict from official tensors, tracking what was used."""

    def __init__(self, official: Mapping[str, Tensor], source: str, what: str) -> None:
        self.official = dict(official)
        self.used: set[str] = set()
        self.source = source
        self.what = what
        self.out: dict[str, Tensor] = {}
        self.origin: dict[str, str] = {}

    def take(self, key: str) -> Tensor:
        if key not in self.official:
            raise OfficialCheckpointError(
                f"{self.source}: the official {self.what} tensor {key!r} is missing"
            )
        self.used.add(key)
        return self.official[key]

    def has(self, key: str) -> bool:
        return key in self.official

    def put(self, ours: str, value: Tensor, official: str) -> None:
        self.out[ours] = value
        self.origin[ours] = official

    def copy(
        self, ours: str, official: str, transform: Callable[[Tensor], Tensor] | None = None
    ) -> None:
        value = self.take(official)
        self.put(ours, transform(value) if transform else value, official)

    def finish(self, model: torch.nn.Module, unused_prefixes: tuple[str, ...]) -> dict[str, Tensor]:
        """Checks coverage and shapes against ``model``; returns its state dict."""
        origin, state = self.origin, self.out
        for key in sorted(self.official):
            if key not in self.used and not key.startswith(unused_prefixes):
                raise OfficialCheckpointError(
                    f"{self.source}: official {self.what} tensor {key!r} "
                    f"{tuple(self.official[key].shape)} has no counterpart in the suite's "
                    f"{type(model).__name__}"
                )
        expected = model.state_dict()
        for key, value in expected.items():
            if key not in state:
                raise OfficialCheckpointError(
                    f"{self.source}: nothing in the official {self.what} fills {key!r} "
                    f"{tuple(value.shape)}"
                )
            if tuple(state[key].shape) != tuple(value.shape):
                raise OfficialCheckpointError(
                    f"{self.source}: official {self.what} tensor {origin.get(key, key)!r} has "
                    f"shape {tuple(state[key].shape)}, the converted spec expects "
                    f"{tuple(value.shape)} for {key!r}"
                )
        extra = sorted(set(state) - set(expected))
        if extra:
            raise OfficialCheckpointError(
                f"{self.source}: unexpected converted tensor {extra[0]!r}"
            )
        converted = {k: state[k].detach().to(expected[k].dtype).contiguous() for k in expected}
        model.load_state_dict(converted)
        return converted


def _blocks(mapper: _Mapper, ours: str, official: str, depth: int, qkv: str = "qkv") -> None:
    """Maps ``depth`` timm-style pre-LN blocks (norm1, attn.qkv/proj, norm2, mlp.fc1/fc2)."""
    for index in range(depth):
        src, dst = f"{official}.{index}", f"{ours}.{index}"
        for name in ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"):
            mapper.copy(f"{dst}.{name}", f"{src}.{name}")
        mapper.copy(f"{dst}.attn.qkv.weight", f"{src}.attn.{qkv}.weight")
        if mapper.has(f"{src}.attn.{qkv}.bias"):
            mapper.copy(f"{dst}.attn.qkv.bias", f"{src}.attn.{qkv}.bias")
        for name in ("attn.proj.weight", "attn.proj.bias"):
            mapper.copy(f"{dst}.{name}", f"{src}.{name}")
        for name in ("mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"):
            mapper.copy(f"{dst}.{name}", f"{src}.{name}")


def _count_blocks(state: Mapping[str, Tensor], prefix: str) -> int:
    indices = {int(k[len(prefix) :].split(".")[0]) for k in state if k.startswith(prefix)}
    return max(indices) + 1 if indices else 0


def _get(config: Mapping[str, Any], key: str, default: Any, source: str) -> Any:
    value = config.get(key, default)
    if value is None:
        raise OfficialCheckpointError(f"{source}: the official config has no {key!r}")
    return value


# --------------------------------------------------------------------------- tokenizer
def tokenizer_spec(checkpoint: OfficialCheckpoint) -> dict[str, Any]:
    """Our tokenizer spec for an official AdapTok configuration."""
    config, state, source = checkpoint.config, checkpoint.state, checkpoint.source
    if "x_embedder.proj.weight" not in state:
        raise OfficialCheckpointError(
            f"{source}: not an AdapTok tokenizer checkpoint (no 'x_embedder.proj.weight')"
        )
    width, channels, pt, ph, pw = state["x_embedder.proj.weight"].shape
    decoder_pt = int(config.get("decoder_temporal_patch_size", pt))
    decoder_p = int(config.get("decoder_patch_size", ph))
    if (decoder_pt, decoder_p) != (pt, ph) or ph != pw:
        raise OfficialCheckpointError(
            f"{source}: decoder patches ({decoder_pt}, {decoder_p}) differ from the encoder's "
            f"({pt}, {ph}, {pw}); the suite's tokenizer shares one patch size"
        )
    if int(config.get("decoder_hidden_size", width)) != width:
        raise OfficialCheckpointError(
            f"{source}: encoder and decoder widths differ; the suite's tokenizer shares one"
        )
    if config.get("decode_mode", "with_mask") not in ("with_mask", "with_drop"):
        raise OfficialCheckpointError(f"{source}: unknown decode_mode {config['decode_mode']!r}")
    for key, expected in (
        ("encoder_attn_type", "full_causal_type1"),
        ("decoder_attn_type", "full_causal_type2"),
    ):
        if config.get(key, expected) != expected:
            raise OfficialCheckpointError(
                f"{source}: {key} {config[key]!r} is not supported (the suite's masks are "
                f"{expected!r})"
            )
    heads = int(_get(config, "encoder_num_heads", None, source))
    if int(config.get("decoder_num_heads", heads)) != heads:
        raise OfficialCheckpointError(f"{source}: encoder and decoder head counts differ")
    num_tokens = int(_get(config, "bottleneck_token_num", None, source))
    frames = int(_get(config, "frame_num", None, source))
    num_blocks = frames // pt
    if num_tokens % num_blocks != 0:
        raise OfficialCheckpointError(
            f"{source}: {num_tokens} latent tokens do not split into {num_blocks} blocks"
        )
    regularizer = (config.get("bottleneck") or {}).get("args", {}).get("regularizer", {})
    vq_args = regularizer.get("args", {}) if isinstance(regularizer, Mapping) else {}
    if vq_args and not (vq_args.get("l2_normalized", True) and vq_args.get("stochastic", True)):
        raise OfficialCheckpointError(
            f"{source}: only the l2-normalised stochastic VQ of the paper is supported"
        )
    if (config.get("bottleneck") or {}).get("args", {}).get("norm", "none") not in (
        None,
        "none",
        "no",
    ):
        raise OfficialCheckpointError(f"{source}: bottleneck norms are not supported")
    temperature = float(vq_args.get("stochastic_temperature", 0.03))
    codebook = state["bottleneck.regularizer.embedding.weight"]
    mlp_hidden = state["encoder.blocks.0.mlp.fc1.weight"].shape[0]
    return {
        "class_path": TOKENIZER_CLASS,
        "init_args": {
            "num_frames": frames,
            "image_size": int(_get(config, "input_size", None, source)),
            "in_channels": int(channels),
            "patch_size": [int(pt), int(ph), int(pw)],
            "frames_per_block": int(pt),
            "tokens_per_block": num_tokens // num_blocks,
            "width": int(width),
            "depth": _count_blocks(state, "encoder.blocks."),
            "heads": heads,
            "mlp_ratio": mlp_hidden / width,
            "decoder_depth": _count_blocks(state, "decoder.blocks."),
            "codebook_size": int(codebook.shape[0]),
            "code_dim": int(codebook.shape[1]),
            "temperature": temperature if temperature > 0 else 0.1,
            "commit_weight": float(vq_args.get("commitment_loss_weight", 0.25)),
            "prior_depth": 0,
            "query_init_std": float(config.get("query_init_std", 0.02)),
            "qkv_bias": "encoder.blocks.0.attn.qkv.bias" in state,
            "encoder_norm": False,
            "decoder_norm_eps": 1e-6,
            "unit_pixels": True,
            "stored_positions": True,
        },
    }


def _output_permutation(channels: int, patch: tuple[int, int, int]) -> Tensor:
    """Rows of the official output layer, in our order.

    Official patch vectors are ``(pt, ph, pw, C)`` (channels last), ours ``(C, pt, ph, pw)``.
    """
    pt, ph, pw = patch
    official = torch.arange(channels * pt * ph * pw).view(pt, ph, pw, channels)
    return official.permute(3, 0, 1, 2).flatten()


def _patch_table(mapper: _Mapper, prefix: str, grid: tuple[int, int, int], width: int) -> Tensor:
    """The official encoder/decoder patch position table (stored or learned), ``(P, D)``."""
    if mapper.has(f"{prefix}_patch_pe") or mapper.has(f"{prefix}_patch_query_embed"):
        key = f"{prefix}_patch_pe" if prefix == "encoder" else f"{prefix}_patch_query_embed"
        table = mapper.take(key)
    else:  # learned per-axis tables (learned_*_patch_pe): summed as the official code does
        names = (
            ("encoder_h_embed", "encode_w_embed", "encoder_t_embed")
            if prefix == "encoder"
            else ("decoder_h_embed", "decoder_w_embed", "decoder_t_embed")
        )
        h, w, t = (mapper.take(name) for name in names)
        table = h + w + t
    table = table.reshape(-1, width)
    type_key = (
        "encoder_patch_token_type_embed"
        if prefix == "encoder"
        else "decoder_patch_query_token_type_embed"
    )
    if prefix == "encoder" and mapper.has(type_key):
        table = table + mapper.take(type_key).reshape(1, width)
    return table


def convert_tokenizer(checkpoint: OfficialCheckpoint) -> tuple[AdapTokTokenizer, dict[str, Any]]:
    """Builds our tokenizer from an official AdapTok checkpoint (a scorer's too).

    Returns:
        ``(tokenizer, spec)``, the tokenizer frozen in eval mode.

    Raises:
        OfficialCheckpointError: Unsupported configuration or a mismatching tensor.
    """
    spec = tokenizer_spec(checkpoint)
    args = spec["init_args"]
    tokenizer = AdapTokTokenizer(**args)
    width, k, m = args["width"], tokenizer.num_blocks, tokenizer.tokens_per_block
    mapper = _Mapper(checkpoint.state, checkpoint.source, "tokenizer")
    mapper.copy("patch_embed.weight", "x_embedder.proj.weight")
    mapper.copy("patch_embed.bias", "x_embedder.proj.bias")
    mapper.put(
        "patch_pos",
        _patch_table(mapper, "encoder", tokenizer.grid, width),
        "encoder_patch_pe",
    )
    queries = mapper.take("encoder_latent_query_embed").reshape(k, m, width)
    if mapper.has("encoder_latent_query_token_type_embed"):
        queries = queries + mapper.take("encoder_latent_query_token_type_embed").reshape(width)
    mapper.put("latent_queries", queries, "encoder_latent_query_embed")
    _blocks(mapper, "encoder.blocks", "encoder.blocks", args["depth"])
    mapper.copy("quantizer.pre_proj.weight", "bottleneck.in_linear.weight")
    mapper.copy("quantizer.pre_proj.bias", "bottleneck.in_linear.bias")
    mapper.copy("quantizer.post_proj.weight", "bottleneck.out_linear.weight")
    mapper.copy("quantizer.post_proj.bias", "bottleneck.out_linear.bias")
    mapper.copy("quantizer.codebook", "bottleneck.regularizer.embedding.weight")
    latent_pe = mapper.take("decoder_latent_pe").reshape(-1, width)
    if mapper.has("decoder_latent_token_type_embed"):
        latent_pe = latent_pe + mapper.take("decoder_latent_token_type_embed").reshape(1, width)
    mapper.put("latent_pos", latent_pe, "decoder_latent_pe")
    mapper.put(
        "decoder_patch_pos",
        _patch_table(mapper, "decoder", tokenizer.grid, width),
        "decoder_patch_query_embed",
    )
    if mapper.has("decoder_patch_query_token_type_embed"):
        mapper.copy(
            "patch_query",
            "decoder_patch_query_token_type_embed",
            lambda t: t.reshape(width),
        )
    else:
        mapper.put("patch_query", torch.zeros(width), "(none: no patch-query type embedding)")
    _blocks(mapper, "decoder.blocks", "decoder.blocks", args["decoder_depth"])
    mapper.copy("decoder.norm.weight", "final_layer.norm_final.weight")
    mapper.copy("decoder.norm.bias", "final_layer.norm_final.bias")
    order = _output_permutation(args["in_channels"], tuple(args["patch_size"]))
    mapper.copy("output.weight", "final_layer.linear.weight", lambda t: t[order])
    mapper.copy("output.bias", "final_layer.linear.bias", lambda t: t[order])
    unused = _UNUSED_TOKENIZER_PREFIXES + ("scorer.",)
    mapper.finish(tokenizer, unused)
    tokenizer.eval().requires_grad_(False)
    return tokenizer, spec


# --------------------------------------------------------------------------- scorer
def convert_scorer(checkpoint: OfficialCheckpoint) -> tuple[BlockCausalScorer, dict[str, Any]]:
    """Builds our scorer from an official AdapTok-Scorer checkpoint (``scorer.*`` tensors).

    Returns:
        ``(scorer, spec)``, the scorer in eval mode.

    Raises:
        OfficialCheckpointError: No scorer in the checkpoint or a mismatching tensor.
    """
    config, state, source = checkpoint.config, checkpoint.state, checkpoint.source
    if "scorer.latent_pe" not in state:
        raise OfficialCheckpointError(f"{source}: not an AdapTok-Scorer checkpoint (no 'scorer.*')")
    tokenizer_args = tokenizer_spec(checkpoint)["init_args"]
    num_tokens, width = state["scorer.latent_pe"].shape
    k = tokenizer_args["num_frames"] // tokenizer_args["frames_per_block"]
    m = tokenizer_args["tokens_per_block"]
    step = int(_get(config, "scorer_step", None, source))
    if m % step != 0:
        raise OfficialCheckpointError(f"{source}: scorer_step {step} does not divide {m} tokens")
    attn_type = config.get("scorer_attn_type", "none")
    if attn_type not in (None, "none", "no", "null", "", "full_bi_attn"):
        raise OfficialCheckpointError(
            f"{source}: scorer_attn_type {attn_type!r} is not supported (the released "
            "scorer uses 'none': full attention over the kept tokens)"
        )
    spec = {
        "class_path": SCORER_CLASS,
        "init_args": {
            "token_width": int(state["scorer.project.weight"].shape[1] // 2),
            "num_blocks": k,
            "tokens_per_block": m,
            "num_candidates": m // step,
            "width": int(width),
            "depth": _count_blocks(state, "scorer.blocks."),
            "heads": int(_get(config, "scorer_num_heads", None, source)),
            "mlp_ratio": state["scorer.blocks.0.mlp.fc1.weight"].shape[0] / width,
            "attention": "dense",
            "qkv_bias": "scorer.blocks.0.attn.qkv.bias" in state,
            "context_attention": "full",
        },
    }
    if num_tokens != k * m:
        raise OfficialCheckpointError(
            f"{source}: official scorer tensor 'scorer.latent_pe' covers {num_tokens} tokens, "
            f"the tokenizer {k * m}"
        )
    scorer = BlockCausalScorer(**spec["init_args"])
    mapper = _Mapper(
        {key[len("scorer.") :]: v for key, v in state.items() if key.startswith("scorer.")},
        source,
        "scorer",
    )
    mapper.copy("input_proj.weight", "project.weight")
    mapper.copy("input_proj.bias", "project.bias")
    mapper.copy("pos_embed", "latent_pe", lambda t: t[None])
    _blocks(mapper, "transformer.blocks", "blocks", spec["init_args"]["depth"])
    mapper.copy("transformer.norm.weight", "ln_post.weight")
    mapper.copy("transformer.norm.bias", "ln_post.bias")
    for ours, official in (("head.0", "ffn.0"), ("head.2", "ffn.2")):
        mapper.copy(f"{ours}.weight", f"{official}.weight")
        mapper.copy(f"{ours}.bias", f"{official}.bias")
    mean, std = OFFICIAL_LABEL_NORMALISATION  # the label units of the official predictions
    mapper.put("label_mean", torch.tensor(mean), "OFFICIAL_LABEL_NORMALISATION")
    mapper.put("label_std", torch.tensor(std), "OFFICIAL_LABEL_NORMALISATION")
    mapper.finish(scorer, ())
    scorer.eval().requires_grad_(False)
    return scorer, spec


# --------------------------------------------------------------------------- generator
_CLASS_TABLE = "cls_embedding.embedding_table.weight"


def is_frame_prediction(checkpoint: OfficialCheckpoint) -> bool:
    """True for an official frame-prediction generator (AdapTok-FP).

    Its configuration says so (``frame_prediction``); a configuration without the key is
    read from the tensors (a frame-prediction generator has no class table).
    """
    if "frame_prediction" in checkpoint.config:
        return bool(checkpoint.config["frame_prediction"])
    return _CLASS_TABLE not in checkpoint.state


def _frame_prediction_layout(
    checkpoint: OfficialCheckpoint, num_blocks: int, tokens_per_block: int
) -> int:
    """Condition blocks of an official FP generator; checks its layout against the suite's.

    The official FP input is ``cls_token_num - 1`` condition codes, ``<SEP>`` and the
    ``<EOB>``-closed stream of blocks ``start_ar_block_idx .. K-1``, one learned position
    each except the stream's last token; the suite's (``class_slot=False``) is the same with
    ``prefix_blocks`` whole condition blocks and generation from block 1.

    Returns:
        ``prefix_blocks``.

    Raises:
        OfficialCheckpointError: A condition that is not whole blocks, a position table
            that does not fit it, or generation from another block than 1.
    """
    config, state, source = checkpoint.config, checkpoint.state, checkpoint.source
    k, m = num_blocks, tokens_per_block
    condition = int(_get(config, "cls_token_num", None, source)) - 1  # without <SEP>
    if condition < m or condition % m != 0 or condition // m > k:
        raise OfficialCheckpointError(
            f"{source}: the official frame-prediction condition holds {condition} codes "
            f"(cls_token_num - 1 for <SEP>), not 1..{k} whole blocks of {m}; the suite's "
            "prefix is whole condition blocks"
        )
    positions = int(state["abs_pe"].shape[1])
    generated, rest = divmod(positions - condition, m + 1)
    start = k - generated
    stated = config.get("start_ar_block_idx")
    if rest != 0 or not 0 <= start < k or (stated is not None and int(stated) != start):
        raise OfficialCheckpointError(
            f"{source}: official generator tensor 'abs_pe' has {positions} positions, "
            f"expected {condition} condition codes + <SEP> + blocks "
            f"{stated if stated is not None else 'b'}..{k - 1} x ({m} codes + <EOB>) - 1"
        )
    if start != 1:
        raise OfficialCheckpointError(
            f"{source}: the official frame-prediction generator generates blocks "
            f"{start}..{k - 1} (start_ar_block_idx {start}); the suite's frame prediction "
            f"copies block 0 from the condition and generates blocks 1..{k - 1} "
            "(start_ar_block_idx 1, as the official K600 training script)"
        )
    return condition // m


def convert_generator(
    checkpoint: OfficialCheckpoint, tokenizer: AdapTokTokenizer
) -> tuple[ARGenerator, dict[str, Any]]:
    """Builds our generator from an official AdapTok-AR or AdapTok-FP checkpoint.

    The class-conditional generator (AdapTok-AR, UCF-101) becomes an ``ARGenerator``
    without budget slot and block embeddings; the frame-prediction one (AdapTok-FP, K600:
    no class table, a prefix of condition codes and ``<SEP>``) one that also has no class
    slot (``class_slot=False``) and ``prefix_blocks`` condition blocks.

    Args:
        checkpoint: The official generator.
        tokenizer: The converted tokenizer it generates codes for (K, M, codebook).

    Returns:
        ``(generator, spec)``, the generator in eval mode.

    Raises:
        OfficialCheckpointError: A vocabulary, sequence length or frame-prediction layout
            that does not fit the tokenizer or the suite, or a mismatching tensor.
    """
    config, state, source = checkpoint.config, checkpoint.state, checkpoint.source
    if "tok_embeddings.weight" not in state:
        raise OfficialCheckpointError(f"{source}: not an AdapTok-AR checkpoint (no tok_embeddings)")
    frame_prediction = is_frame_prediction(checkpoint)
    depth_from_name, heads_from_name, _ = _GENERATOR_SIZES.get(checkpoint.name or "", (0, 0, 0))
    heads = int(config.get("n_head") or heads_from_name)
    if not heads:
        raise OfficialCheckpointError(f"{source}: the official config gives no 'n_head'")
    if config.get("n_kv_head") not in (None, heads):
        raise OfficialCheckpointError(f"{source}: grouped-query attention is not supported")
    codebook = tokenizer.quantizer.codebook_size
    vocab_out, width = state["output.weight"].shape
    if vocab_out != codebook + 1:
        raise OfficialCheckpointError(
            f"{source}: official generator tensor 'output.weight' predicts {vocab_out} ids, "
            f"expected the tokenizer's {codebook} codes + <EOB> (with_block_sep)"
        )
    k, m = tokenizer.num_blocks, tokenizer.tokens_per_block
    if frame_prediction:
        prefix_blocks = _frame_prediction_layout(checkpoint, k, m)
        classes, label_dropout = 0, 0.0
    else:
        prefix_blocks = 0
        positions = state["abs_pe"].shape[1]
        if positions != k * (m + 1):
            raise OfficialCheckpointError(
                f"{source}: official generator tensor 'abs_pe' has {positions} positions, "
                f"expected {k} blocks x ({m} codes + <EOB>) = {k * (m + 1)}"
            )
        if _CLASS_TABLE not in state:
            raise OfficialCheckpointError(
                f"{source}: the official generator tensor {_CLASS_TABLE!r} is missing (a "
                "class-conditional configuration)"
            )
        classes = state[_CLASS_TABLE].shape[0] - 1
        label_dropout = float(config.get("class_dropout_prob", 0.1))
    spec = {
        "class_path": GENERATOR_CLASS,
        "init_args": {
            "codebook_size": codebook,
            "num_blocks": k,
            "tokens_per_block": m,
            "num_classes": int(classes),
            "num_budgets": 1,
            "prefix_blocks": prefix_blocks,
            "width": int(width),
            "depth": _count_blocks(state, "layers."),
            "heads": heads,
            "mlp_hidden": int(state["layers.0.feed_forward.w1.weight"].shape[0]),
            "dropout": float(config.get("resid_dropout_p", 0.1)),
            "attn_dropout": float(config.get("attn_dropout_p", 0.0)),
            "label_dropout": label_dropout,
            "norm_eps": float(config.get("norm_eps", 1e-5)),
            "init_std": float(config.get("initializer_range", 0.02)),
            "budget_slot": False,
            "block_embeddings": False,
        },
    }
    if frame_prediction:
        spec["init_args"]["class_slot"] = False
    if depth_from_name and depth_from_name != spec["init_args"]["depth"]:
        raise OfficialCheckpointError(
            f"{source}: {checkpoint.name} has {depth_from_name} layers, the tensors "
            f"{spec['init_args']['depth']}"
        )
    generator = ARGenerator(**spec["init_args"])
    mapper = _Mapper(state, source, "generator")
    if frame_prediction:  # codes, <EOB> and <SEP> (cond_sep_id): our table as it is
        mapper.copy("token_embed.weight", "tok_embeddings.weight")
    else:
        mapper.copy("class_embed.weight", _CLASS_TABLE)

        def with_sep_row(table: Tensor) -> Tensor:  # no <SEP> id: a zero row
            rows = generator.vocab.size - table.shape[0]
            return torch.cat([table, table.new_zeros(rows, table.shape[1])]) if rows > 0 else table

        mapper.copy("token_embed.weight", "tok_embeddings.weight", with_sep_row)
    mapper.copy("position_embed", "abs_pe", lambda t: t[0])
    for index in range(spec["init_args"]["depth"]):
        src, dst = f"layers.{index}", f"blocks.{index}"
        mapper.copy(f"{dst}.norm1.weight", f"{src}.attention_norm.weight")
        mapper.copy(f"{dst}.norm2.weight", f"{src}.ffn_norm.weight")
        mapper.copy(f"{dst}.attn.qkv.weight", f"{src}.attention.wqkv.weight")
        mapper.copy(f"{dst}.attn.proj.weight", f"{src}.attention.wo.weight")
        w1 = mapper.take(f"{src}.feed_forward.w1.weight")
        w3 = mapper.take(f"{src}.feed_forward.w3.weight")
        mapper.put(f"{dst}.mlp.w13.weight", torch.cat([w1, w3]), f"{src}.feed_forward.w1/w3")
        mapper.copy(f"{dst}.mlp.w2.weight", f"{src}.feed_forward.w2.weight")
    mapper.copy("norm.weight", "norm.weight")
    mapper.copy("head.weight", "output.weight")
    mapper.finish(generator, ("freqs_cis",))
    generator.eval().requires_grad_(False)
    return generator, spec


# --------------------------------------------------------------------------- writing
def _lightning_version() -> str:
    try:
        from lightning import __version__
    except ImportError:  # pragma: no cover
        return "2.6.0"
    return __version__


PROVENANCE_KEY = "adaptok_official"
"""Top-level checkpoint key of a converted checkpoint's provenance (kept out of the
hyperparameters, which are the LightningModule's init arguments)."""


def _checkpoint(
    state: dict[str, Tensor], hparams: dict[str, Any], provenance: dict[str, Any]
) -> dict[str, Any]:
    return {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": _lightning_version(),
        "state_dict": state,
        "hyper_parameters": hparams,
        PROVENANCE_KEY: provenance,
    }


def _prefixed(prefix: str, module: torch.nn.Module) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v.detach().clone() for k, v in module.state_dict().items()}


def write_suite_checkpoints(
    out: str | Path,
    tokenizer: str | Path | None = None,
    scorer: str | Path | None = None,
    generator: str | Path | Sequence[str | Path] | None = None,
) -> dict[str, Path]:
    """Converts the given official checkpoints and writes suite checkpoints into ``out``.

    The tokenizer comes from ``tokenizer`` or, when only a scorer is given, from the
    scorer's checkpoint (which holds the whole AdapTok model); when both are given the
    scorer's own tokenizer tensors are used for ``scorer.ckpt``. Each generator is
    recognised as class-conditional (AdapTok-AR, written as ``generator.ckpt``) or frame
    prediction (AdapTok-FP, ``fp_generator.ckpt``); both hold the tokenizer.

    Args:
        out: Output folder (created).
        tokenizer: Official AdapTok checkpoint.
        scorer: Official AdapTok-Scorer checkpoint.
        generator: One official generator checkpoint or several (at most one of each kind).

    Returns:
        Written paths by name (``tokenizer``, ``scorer``, ``generator``, ``fp_generator``).

    Raises:
        OfficialCheckpointError: As the ``convert_*`` functions; nothing to convert; or two
            generators of one kind.
    """
    if tokenizer is None and scorer is None:
        raise OfficialCheckpointError("give --tokenizer or --scorer (it holds the tokenizer)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    source = "VisionXLab/AdapTok (MIT licence)"
    base = read_official(tokenizer if tokenizer is not None else scorer)  # type: ignore[arg-type]
    tok, tok_spec = convert_tokenizer(base)
    provenance = {"converted_from": {"tokenizer": base.source}, "weights_source": source}
    written["tokenizer"] = out / "tokenizer.ckpt"
    torch.save(
        _checkpoint(_prefixed("tokenizer", tok), {"tokenizer_spec": tok_spec}, provenance),
        written["tokenizer"],
    )
    if scorer is not None:
        official = read_official(scorer)
        scorer_tok, scorer_tok_spec = convert_tokenizer(official)
        net, spec = convert_scorer(official)
        mean, std = OFFICIAL_LABEL_NORMALISATION
        hparams = {
            "_class_path": "modules.scorer.ScorerModule",
            "_instantiator": "lightning.pytorch.cli.instantiate_module",
            "scorer": spec,
            "tokenizer_ckpt": None,
            "metric": "lpips",
            "target_mean": mean,
            "target_std": std,
            "context_drop": None,
            "optimizer": None,
            "scheduler": None,
            "lpips_net": "vgg",
            "tokenizer_spec": scorer_tok_spec,
        }
        # `scorer`: the network's own arguments, `scorer_spec`: the resolved spec, as
        # ScorerModule saves them
        upgrade_network_specs({"hyper_parameters": hparams})
        state = {**_prefixed("tokenizer", scorer_tok), **_prefixed("scorer", net)}
        written["scorer"] = out / "scorer.ckpt"
        provenance = {"converted_from": {"scorer": official.source}, "weights_source": source}
        torch.save(_checkpoint(state, hparams, provenance), written["scorer"])
    if generator is None:
        generators = []
    elif isinstance(generator, (str, Path)):
        generators = [generator]
    else:
        generators = list(generator)
    for path in generators:
        official = read_official(path)
        net, spec = convert_generator(official, tok)
        frame_prediction = net.prefix_blocks > 0
        name = "fp_generator" if frame_prediction else "generator"
        if name in written:
            raise OfficialCheckpointError(
                f"{official.source}: a second {name.replace('_', ' ')} (give one of each kind)"
            )
        hparams = {
            "_class_path": "modules.generator.GeneratorModule",
            "_instantiator": "lightning.pytorch.cli.instantiate_module",
            "generator": spec,
            "tokenizer_ckpt": None,
            "tokenizer_spec": tok_spec,
            # The official generator has no budget input; one level stands for the ~50 %
            # of the tokens its annotations were made at (docs/METHOD.md section 5).
            "budgets": [0.5],
            "candidate_lengths": None,
        }
        if frame_prediction:  # the official K600 protocol conditions on 5 frames
            hparams["condition_frames"] = min(OFFICIAL_CONDITION_FRAMES, tok.num_frames)
        upgrade_network_specs({"hyper_parameters": hparams})  # as GeneratorModule saves them
        state = {**_prefixed("tokenizer", tok), **_prefixed("generator", net)}
        written[name] = out / f"{name}.ckpt"
        provenance = {
            "converted_from": {"generator": official.source, "tokenizer": base.source},
            "weights_source": source,
            "generator_task": "frame_prediction" if frame_prediction else "class_conditional",
        }
        torch.save(_checkpoint(state, hparams, provenance), written[name])
    return written


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``adaptok convert-official``."""
    parser = argparse.ArgumentParser(
        prog="adaptok convert-official",
        description="Convert the official AdapTok checkpoints (VisionXLab/AdapTok: tokenizer, "
        "scorer, class-conditional AR and K600 frame-prediction generators) into "
        "self-describing suite checkpoints.",
    )
    parser.add_argument("--tokenizer", type=Path, help="official AdapTok checkpoint")
    parser.add_argument(
        "--scorer", type=Path, help="official AdapTok-Scorer checkpoint (holds a tokenizer)"
    )
    parser.add_argument(
        "--generator",
        type=Path,
        action="append",
        help="official generator checkpoint: AdapTok-AR (class-conditional, written as "
        "generator.ckpt) or AdapTok-FP (frame prediction, fp_generator.ckpt), recognised "
        "from its contents; give it twice to convert both",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors are printed as one line with exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        written = write_suite_checkpoints(args.out, args.tokenizer, args.scorer, args.generator)
    except (OfficialCheckpointError, FileNotFoundError) as error:
        print(f"adaptok convert-official: error: {error}", file=sys.stderr)
        return 2
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
