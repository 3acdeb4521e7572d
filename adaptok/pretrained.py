"""``load_pretrained``: a ready model from any suite checkpoint or export, without Lightning.

Example (``README.md``, "Python API")::

    import torch
    from adaptok import load_pretrained

    model = load_pretrained("runs/demo/scorer/checkpoints/last.ckpt")  # or an export folder
    video = torch.rand(1, 3, model.num_frames, model.image_size, model.image_size)
    tokens = model.tokenize(video, budget=0.25, mode="per_clip")
    tokens.codes.shape, tokens.lengths  # (1, K, M) with -1 past each length, (1, K)
    recon = model.detokenize(tokens.codes, tokens.lengths)  # (1, 3, T, H, W) in [0, 1]

Sources:

- a folder written by ``adaptok export`` (``spec.json`` + ``model.safetensors``): read with
  ``json`` and ``safetensors``, so loading executes no pickled code at all;
- a suite checkpoint (``.ckpt``) of any stage (tokenizer, scorer, generator, or one written
  by ``adaptok convert-official``): read with ``torch.load(weights_only=True)``, which refuses
  anything but tensors and plain containers.

Networks are rebuilt from their specs (``{"class_path", "init_args"}``), but only the suite's
own network classes are accepted (:data:`NETWORK_CLASSES`): a spec cannot name arbitrary code.
The loaded tensors are the stored ones, bit for bit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from adaptok.nn.generator import ARGenerator
from adaptok.nn.scorer import BlockCausalScorer, upgrade_scorer_checkpoint
from adaptok.nn.state_check import first_weight_mismatch
from adaptok.nn.tokenizer import AdapTokTokenizer, TokenizerEncoding

__all__ = [
    "COST_UNITS",
    "EXPORT_FORMAT",
    "NETWORK_CLASSES",
    "PretrainedAdapTok",
    "TokenizeModeName",
    "Tokens",
    "WeightsMismatchError",
    "build_safe_network",
    "cost_unit",
    "first_spec_difference",
    "initialise_network",
    "load_pretrained",
    "read_checkpoint_safely",
]

EXPORT_FORMAT = "adaptok-export/1"
"""``format`` field of an export's ``spec.json``."""

NETWORK_CLASSES: dict[str, type[nn.Module]] = {
    "adaptok.nn.tokenizer.AdapTokTokenizer": AdapTokTokenizer,
    "adaptok.nn.scorer.BlockCausalScorer": BlockCausalScorer,
    "adaptok.nn.generator.ARGenerator": ARGenerator,
    # the re-exports the YAML files use
    "adaptok.nn.AdapTokTokenizer": AdapTokTokenizer,
    "adaptok.nn.BlockCausalScorer": BlockCausalScorer,
    "adaptok.nn.ARGenerator": ARGenerator,
}
"""The only classes a spec may name when loading (full paths and ``adaptok.nn`` re-exports)."""

_NETWORK_NAMES = ("tokenizer", "scorer", "generator")
"""The networks a source may hold, by the name of their weights' prefix."""

TokenizeModeName = Literal["per_clip", "streaming", "target", "uniform"]

COST_UNITS: dict[str, str] = {
    "lpips": "LPIPS distance, lower is better, e.g. 0.2",
    "mse": "mean squared error of pixels in [0, 1], lower is better, e.g. 0.01 = 20 dB PSNR",
    "psnr": "-PSNR in dB, lower is better, e.g. -30 for at least 30 dB",
    "ssim": "-SSIM, lower is better, e.g. -0.9 for an SSIM of at least 0.9",
}
"""The units of a scorer's predicted costs, and so of a ``target`` threshold, by label metric.

Costs are :class:`adaptok.losses.block_quality.BlockQuality`'s: LPIPS and MSE as they are,
PSNR and SSIM negated. A scorer stage checkpoint records its metric as
``hyper_parameters["metric"]``, an export as ``spec.json`` ``info.metric``
(:func:`checkpoint_contents`); the paper's scorer learns LPIPS, the demo's MSE."""


def cost_unit(metric: str | None) -> str:
    """A metric named with its cost units, e.g. ``"mse (mean squared error ...)"``.

    Args:
        metric: A label metric (``lpips``, ``mse``, ``psnr``, ``ssim``) or None (unknown).

    Returns:
        ``"METRIC (UNITS)"`` for a metric of :data:`COST_UNITS`, the metric alone for
        another one, and a sentence saying it is unknown for None.
    """
    if metric is None:
        return "unknown (the source records no scorer metric)"
    unit = COST_UNITS.get(str(metric))
    return f"{metric} ({unit})" if unit else str(metric)


@dataclass
class Tokens:
    """Codes kept per block and the per-block lengths.

    Attributes:
        codes: Long ``(B, K, M)``; positions at or beyond a block's length hold -1.
        lengths: Long ``(B, K)`` kept tokens per block.
    """

    codes: Tensor
    lengths: Tensor

    @property
    def num_tokens(self) -> Tensor:
        """Long ``(B,)`` tokens kept per clip."""
        return self.lengths.sum(dim=1)


def build_safe_network(spec: Mapping[str, Any]) -> nn.Module:
    """Builds a network from ``{"class_path", "init_args"}``, for the suite's classes only.

    Raises:
        ValueError: The spec names another class or has nested class specs.
    """
    class_path = spec.get("class_path") if isinstance(spec, Mapping) else None
    if class_path not in NETWORK_CLASSES:
        raise ValueError(
            f"refusing to build {class_path!r}: pretrained models may only name "
            f"{', '.join(sorted(NETWORK_CLASSES))}"
        )
    init_args = dict(spec.get("init_args") or {})
    for key, value in init_args.items():
        if isinstance(value, Mapping) and "class_path" in value:
            raise ValueError(f"refusing nested class spec in init argument {key!r}")
    return NETWORK_CLASSES[class_path](**init_args)


def read_checkpoint_safely(path: str | Path) -> dict[str, Any]:
    """A suite checkpoint read with ``torch.load(weights_only=True)`` (no code unpickled).

    Args:
        path: The checkpoint file.

    Returns:
        The checkpoint (``state_dict``, ``hyper_parameters``, ...), with an older scorer's
        label buffers added.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a file ``torch.save`` writes, not a suite checkpoint, or one holding
            objects beyond tensors and plain containers (one line: the path and why).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not _saved_by_torch(path):
        raise ValueError(
            f"{path} is not a checkpoint (torch.save writes a zip archive, or a pickle in old "
            "files)"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 (torch raises several types on refusal)
        raise ValueError(
            f"{path} cannot be read as tensors and plain containers: {_why(error)}"
        ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a suite checkpoint (no 'state_dict')")
    upgrade_scorer_checkpoint(checkpoint)  # a scorer saved before its label buffers existed
    return checkpoint


def _saved_by_torch(path: Path) -> bool:
    """Whether a file starts as ``torch.save`` output does (a zip archive, or a pickle).

    Args:
        path: An existing file.

    Returns:
        True for a zip or pickle header, and for a file that cannot be opened (``torch.load``
        then says why); False otherwise.
    """
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError:
        return True
    return head == b"PK\x03\x04" or head[:1] == b"\x80"


def _why(error: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in one line.

    Args:
        error: What ``torch.load`` raised.

    Returns:
        The object it refused and what to do, when it names one (its message runs over
        several lines); else the first line of its message (terminal escapes removed).
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    refused = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if refused is not None:
        return (
            f"it holds a {refused.group(1)} object, which a safe load refuses; re-save it "
            "with plain Python values in its place (float(), int(), .tolist())"
        )
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


def _sub_state(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


class PretrainedAdapTok(nn.Module):
    """A tokenizer with its scorer (and generator, when the source has one), ready to use.

    Args:
        tokenizer: The tokenizer.
        scorer: Its scorer; None for a tokenizer-only source (then only ``mode="uniform"``).
        generator: Its AR generator, when the source is a generator stage.
        specs: The networks' specs by name (``tokenizer``, ``scorer``, ``generator``).
        info: Everything else the source records (label normalisation, budgets, ...).
    """

    def __init__(
        self,
        tokenizer: AdapTokTokenizer,
        scorer: BlockCausalScorer | None = None,
        generator: ARGenerator | None = None,
        specs: Mapping[str, Any] | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.scorer = scorer
        self.generator = generator
        self.specs = dict(specs or {})
        self.info = dict(info or {})
        self.eval().requires_grad_(False)

    # ------------------------------------------------------------------- properties
    @property
    def num_frames(self) -> int:
        """Frames ``T`` of one clip."""
        return self.tokenizer.num_frames

    @property
    def image_size(self) -> int:
        """Side ``S`` of the square frames."""
        return self.tokenizer.image_size

    @property
    def num_blocks(self) -> int:
        """Temporal blocks ``K`` of a clip."""
        return self.tokenizer.num_blocks

    @property
    def tokens_per_block(self) -> int:
        """Maximum tokens ``M`` per block."""
        return self.tokenizer.tokens_per_block

    @property
    def candidate_lengths(self) -> list[int]:
        """Lengths the scorer scores (all of ``1..M`` without a scorer)."""
        if self.scorer is None:
            return list(range(1, self.tokens_per_block + 1))
        return list(self.scorer.candidate_lengths)

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return next(self.tokenizer.parameters()).device

    # ------------------------------------------------------------------- tokenizing
    def _as_batch(self, video: Tensor) -> Tensor:
        video = torch.as_tensor(video)
        if video.dim() == 4:
            video = video[None]
        if video.dtype == torch.uint8:
            video = video.float() / 255.0
        return video.to(self.device, torch.float32)

    @torch.no_grad()
    def encode(self, video: Tensor) -> TokenizerEncoding:
        """Encodes every token (argmax codes), see ``AdapTokTokenizer.encode``.

        Args:
            video: ``(B, C, T, H, W)`` or ``(C, T, H, W)``, float in [0, 1] or uint8.
        """
        return self.tokenizer.encode(self._as_batch(video))

    @torch.no_grad()
    def tokenize(
        self,
        video: Tensor,
        budget: float | None = 0.25,
        mode: TokenizeModeName = "per_clip",
        *,
        threshold: float | None = None,
        solver: Literal["fast", "mip"] = "fast",
        equality: bool = True,
    ) -> Tokens:
        """Encodes clips and keeps, per block, the tokens the scorer + allocator choose.

        Args:
            video: ``(B, C, T, H, W)`` or ``(C, T, H, W)`` clips, float in [0, 1] or uint8,
                ``T = num_frames`` and ``H = W = image_size``.
            budget: Mean fraction of the ``M`` tokens per block to keep, in (0, 1]
                (``per_clip``, ``streaming``, ``uniform``); None in ``target`` mode.
            mode: ``per_clip`` (each clip spends ``K * budget * M`` tokens, exact IPAL),
                ``streaming`` (causal block by block, a price per token carried across
                calls), ``target`` (the fewest tokens whose predicted cost reaches
                ``threshold``) or ``uniform`` (``round(budget * M)`` per block, no scorer).
            threshold: ``target`` mode: predicted cost per block in the units of the
                scorer's metric (``info["metric"]``, :data:`COST_UNITS`; e.g. LPIPS 0.2, or
                MSE 0.01 for the demo scorer).
            solver: ``fast`` (exact) or ``mip`` (python-mip CBC).
            equality: Spend the budget exactly (the paper) instead of at most.

        Returns:
            :class:`Tokens`: codes ``(B, K, M)`` (-1 past each length) and lengths ``(B, K)``.

        Raises:
            ValueError: An unknown mode, a scorer-based mode without a scorer, a budget in
                ``target`` mode (or none in the others), a ``uniform`` budget that rounds to
                no token, a wrong video shape.
            adaptok.alloc.InfeasibleBudgetError: A budget outside (0, 1] or one the candidate
                lengths cannot meet (checked by the planner, before any encoding).
        """
        modes = get_args(TokenizeModeName)
        if mode not in modes:
            raise ValueError(f"unknown mode {mode!r}: choose one of {', '.join(modes)}")
        if mode != "uniform" and self.scorer is None:
            raise ValueError(
                f"mode {mode!r} needs a scorer; this model has none (load a scorer checkpoint, "
                "or use mode='uniform')"
            )
        if (mode == "target") != (threshold is not None) or (mode == "target") == (
            budget is not None
        ):
            raise ValueError("target mode takes a threshold and no budget; the others a budget")
        m, k = self.tokens_per_block, self.num_blocks
        # uniform and target plan in per_clip's planner: neither uses its mode
        planner = self._planner(mode if mode == "streaming" else "per_clip", solver, equality)
        token_budget = None
        if budget is not None:  # checked before any encoding
            token_budget = planner.budget_from_fraction(budget)
            policy = "uniform" if mode == "uniform" else "scorer"
            planner.check_budget(token_budget, policy=policy)
        video = self._as_batch(video)
        encoding = self.tokenizer.encode(video)
        if token_budget is None:  # target mode
            lengths = planner.plan_target(video, encoding, float(threshold))  # type: ignore[arg-type]
        elif mode == "uniform":
            lengths = planner.plan(video, encoding, token_budget, policy="uniform")
        else:
            lengths = planner.plan(video, encoding, token_budget, policy="scorer", mode=mode)
        codes = encoding.codes.view(-1, k, m)
        dropped = torch.arange(m, device=codes.device)[None, None, :] >= lengths[:, :, None]
        return Tokens(codes=codes.masked_fill(dropped, -1), lengths=lengths.long())

    def _planner(self, mode: str, solver: str, equality: bool) -> Any:
        """A planner kept across calls (streaming carries its price from call to call)."""
        from adaptok.budget_planner import TokenBudgetPlanner

        key = (mode, solver, equality)
        planners = self.__dict__.setdefault("_planners", {})
        if key not in planners:
            planners[key] = TokenBudgetPlanner(
                self.tokenizer,
                self.scorer,
                mode=mode,  # type: ignore[arg-type]
                solver=solver,  # type: ignore[arg-type]
                equality=equality,
                candidates=self.candidate_lengths,
            )
        return planners[key]

    @torch.no_grad()
    def detokenize(self, codes: Tensor, lengths: Tensor) -> Tensor:
        """Decodes kept codes back to video.

        Args:
            codes: Long ``(B, K, M)`` or ``(B, K * M)``; values past each length are ignored.
            lengths: Long ``(B, K)`` kept tokens per block, in ``[1, M]``.

        Returns:
            ``(B, C, T, H, W)`` float video clamped to [0, 1].
        """
        codes = torch.as_tensor(codes, device=self.device).long()
        lengths = torch.as_tensor(lengths, device=self.device).long()
        flat = codes.flatten(1) if codes.dim() == 3 else codes
        return self.tokenizer.decode(flat.clamp_min(0), lengths).clamp(0, 1)

    # ------------------------------------------------------------------- export
    def export_state(self) -> dict[str, Tensor]:
        """Every network's tensors, prefixed by its name (the export's safetensors content)."""
        state: dict[str, Tensor] = {}
        for name in _NETWORK_NAMES:
            network = getattr(self, name)
            if network is not None:
                state.update({f"{name}.{k}": v for k, v in network.state_dict().items()})
        return state


def _from_export(folder: Path) -> PretrainedAdapTok:
    from safetensors.torch import load_file

    spec_path, weights_path = folder / "spec.json", folder / "model.safetensors"
    if not spec_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(
            f"{folder} is not an adaptok export (needs spec.json and model.safetensors; "
            "write one with `adaptok export CKPT --out DIR`)"
        )
    try:
        spec = json.loads(spec_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{spec_path} cannot be read as JSON: {error}") from error
    if not isinstance(spec, dict) or spec.get("format") != EXPORT_FORMAT:
        found = spec.get("format") if isinstance(spec, dict) else None
        raise ValueError(f"{spec_path}: unknown format {found!r} (expected {EXPORT_FORMAT!r})")
    if not isinstance(spec.get("networks"), Mapping):
        raise ValueError(f"{spec_path} names no networks (no 'networks' mapping)")
    weights, info = load_file(str(weights_path)), spec.get("info") or {}
    mean, std = info.get("cost_normalisation", (None, None))  # exports before the label buffers
    upgrade_scorer_checkpoint(
        {"state_dict": weights, "hyper_parameters": {"target_mean": mean, "target_std": std}}
    )
    return _assemble(spec["networks"], weights, info, folder)


class WeightsMismatchError(ValueError):
    """Stored weights that do not fit the network they are loaded into.

    When loading a source that network is built from the source's own spec, so the source is
    unusable whatever it is asked for (an edited spec, or a file of another version), unlike a
    source of the wrong kind for a task; with :func:`initialise_network` it is this run's.
    """


def _load_exactly(network: nn.Module, weights: Mapping[str, Tensor], source: str) -> None:
    """`network.load_state_dict(weights)`, failing in one line on the first mismatching tensor.

    Raises:
        WeightsMismatchError: A tensor is missing, unexpected or of another shape, named in
            the message.
    """
    own = network.state_dict()
    mismatch = first_weight_mismatch(own, weights)
    if mismatch is not None:
        kind, key = mismatch
        if kind == "missing":
            first = f"the spec's network has {key!r}, which the stored weights lack"
        elif kind == "unexpected":
            first = f"the stored weights hold {key!r}, which the spec's network lacks"
        else:
            first = (
                f"{key!r} has the shape {tuple(weights[key].shape)} in the stored weights but "
                f"{tuple(own[key].shape)} in the spec's network"
            )
        raise WeightsMismatchError(
            f"{source}: weights do not match the spec; first: {first} "
            "(the spec was edited or the file comes from another version)"
        )
    network.load_state_dict(weights)


def _assemble(
    specs: Mapping[str, Any], state: Mapping[str, Tensor], info: Mapping[str, Any], source: Any
) -> PretrainedAdapTok:
    networks: dict[str, nn.Module] = {}
    for name, spec in specs.items():
        network = build_safe_network(spec)
        weights = _sub_state(state, f"{name}.")
        if not weights:
            raise ValueError(f"{source} holds no {name} weights (no '{name}.' tensors)")
        _load_exactly(network, weights, f"{source} ({name})")
        networks[name] = network
    if "tokenizer" not in networks:
        raise ValueError(f"{source} holds no tokenizer")
    return PretrainedAdapTok(
        networks["tokenizer"],  # type: ignore[arg-type]
        networks.get("scorer"),  # type: ignore[arg-type]
        networks.get("generator"),  # type: ignore[arg-type]
        specs=specs,
        info=info,
    )


def checkpoint_contents(checkpoint: Mapping[str, Any], source: Any) -> tuple[dict, dict]:
    """The network specs and the extra info of a suite checkpoint.

    Returns:
        ``(specs, info)``: specs by network name; info with ``stage`` (the LightningModule
        class path, if any), ``cost_normalisation`` and ``metric`` (scorers), ``budgets``
        (generators).

    Raises:
        ValueError: No tokenizer spec in the checkpoint.
    """
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    stage = hparams.get("_class_path")
    specs: dict[str, Any] = {}
    tokenizer = hparams.get("tokenizer_spec") or hparams.get("tokenizer")
    if not (isinstance(tokenizer, Mapping) and "class_path" in tokenizer):
        raise ValueError(
            f"{source} holds no tokenizer spec (hyper_parameters 'tokenizer' or "
            "'tokenizer_spec'); it was not written by `adaptok fit` or `adaptok convert-official`"
        )
    specs["tokenizer"] = dict(tokenizer)
    state = checkpoint.get("state_dict") or {}
    for name in ("scorer", "generator"):  # the stage's own network, when it has one
        # the resolved spec (the geometry read from the tokenizer included); checkpoints
        # written before it existed hold the whole spec under the network's name
        spec = hparams.get(f"{name}_spec") or hparams.get(name)
        has_weights = any(key.startswith(f"{name}.") for key in state)
        if isinstance(spec, Mapping) and "class_path" in spec and has_weights:
            specs[name] = dict(spec)
    info: dict[str, Any] = {"stage": stage}
    if "scorer" in specs:
        info["cost_normalisation"] = [  # the scorer's label buffers (read_checkpoint_safely
            float(state["scorer.label_mean"]),  # gives older checkpoints them)
            float(state["scorer.label_std"]),
        ]
        info["metric"] = hparams.get("metric", "lpips")
    if "generator" in specs:
        info["budgets"] = hparams.get("budgets")
        info["candidate_lengths"] = hparams.get("candidate_lengths")
    if isinstance(checkpoint.get("adaptok_official"), Mapping):  # adaptok convert-official
        info["official"] = dict(checkpoint["adaptok_official"])
    return specs, info


def first_spec_difference(expected: Mapping[str, Any], stored: Mapping[str, Any]) -> str | None:
    """The first way two network specs (``{"class_path", "init_args"}``) differ, or None.

    Only arguments both specs name are compared: an argument added to the class after the
    stored spec was written takes its default (a shape it changes fails the weight check).
    """
    if expected.get("class_path") != stored.get("class_path"):
        return f"class_path {stored.get('class_path')!r} != {expected.get('class_path')!r}"
    ours, theirs = expected.get("init_args") or {}, stored.get("init_args") or {}
    for key in sorted(set(ours) & set(theirs)):
        if ours.get(key) != theirs.get(key):
            return f"init_args.{key} {theirs.get(key)!r} != {ours.get(key)!r}"
    return None


def initialise_network(
    network: nn.Module, name: str, source: str | Path, spec: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Copies the weights of one network of an export or suite checkpoint into ``network``.

    Used to start (fine-tune) a stage's network from released weights, e.g. the committed demo
    weights ``pretrained/demo-tokenizer`` and ``pretrained/demo-scorer``
    (docs/demo_weights.md). Every tensor of the stored network's state dict is copied, its
    buffers included (a scorer's ``label_mean`` / ``label_std``).

    Args:
        network: The network to fill (its own spec is ``spec``).
        name: Which network of the source: ``tokenizer``, ``scorer`` or ``generator``.
        source: An export folder or a suite checkpoint of a stage that holds that network.
        spec: The network's spec; when given it must equal the stored one.

    Returns:
        The source's info (:class:`PretrainedAdapTok` ``info``): the ``training_data`` record
        (training shards and their fingerprint) of an export that has one, a scorer's
        ``metric``, ...

    Raises:
        FileNotFoundError: Nothing at ``source``.
        ValueError: ``name`` is not a network name, the source holds no such network, the
            stored spec differs from ``spec`` (the first difference is named) or a weight does
            not match (the first mismatching tensor is named); one line each.
    """
    if name not in _NETWORK_NAMES:
        raise ValueError(f"unknown network {name!r}: choose one of {', '.join(_NETWORK_NAMES)}")
    model = load_pretrained(source)
    stored = getattr(model, name)
    if stored is None:
        raise ValueError(
            f"{source} holds no {name} (only {', '.join(sorted(model.specs))}): give the "
            f"checkpoint or export of a stage that trains a {name}"
        )
    if spec is not None:
        difference = first_spec_difference(spec, model.specs[name])
        if difference is not None:
            raise ValueError(
                f"{source}: its {name} spec differs from this run's: {difference} "
                "(stored != this run)"
            )
    _load_exactly(network, stored.state_dict(), f"{source} ({name})")
    return dict(model.info)


def load_pretrained(path: str | Path, device: str | torch.device = "cpu") -> PretrainedAdapTok:
    """A ready (eval mode, frozen) model from a suite checkpoint or an export folder.

    Errors are one line each, naming the path (a user's typo is not a traceback).

    Args:
        path: A ``.ckpt`` of any stage, or a folder written by ``adaptok export``.
        device: Where to put the weights.

    Returns:
        The :class:`PretrainedAdapTok`.

    Raises:
        FileNotFoundError: Nothing at ``path``, or a folder without ``spec.json`` and
            ``model.safetensors``.
        ValueError: A file that is not a suite checkpoint, an unreadable ``spec.json``, a
            spec naming a foreign class, or weights that do not match their spec.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        model = _from_export(path)
    else:
        checkpoint = read_checkpoint_safely(path)
        specs, info = checkpoint_contents(checkpoint, path)
        model = _assemble(specs, checkpoint["state_dict"], info, path)
    return model.to(device)
