"""How stages are saved and restored: self-describing checkpoints.

A later stage's checkpoint holds what it needs of the earlier stages, the way litgpt and
nanoGPT store their model configuration next to the weights:

- the frozen tokenizer's *spec* (``{"class_path", "init_args"}``, exactly what the
  tokenizer stage's YAML built) goes into ``hyper_parameters["tokenizer_spec"]`` and its
  weights into the state dict under ``tokenizer.``; restoring builds the network from the
  spec and the state dict fills it, so the tokenizer checkpoint it came from may be deleted
  or overwritten afterwards;
- frozen metric networks (LPIPS, I3D) are *not* saved: their weights live in the weight
  cache (``adaptok-weights``) and are put back from the freshly built module at load time.

Any stage checkpoint (tokenizer, scorer, generator, annotator) can be restored with
:func:`load_stage`, which reads the LightningModule class from the checkpoint itself.
"""

from __future__ import annotations

import functools
import importlib
import pickle
import tarfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from adaptok.data.tar_samples import read_tar_json
from adaptok.metrics.i3d import InceptionI3d
from adaptok.metrics.lpips import LPIPS
from adaptok.nn.discriminator import DISCRIMINATOR_GEOMETRY
from adaptok.nn.scorer import upgrade_scorer_checkpoint
from adaptok.nn.state_check import first_weight_mismatch
from adaptok.nn.tokenizer import AdapTokTokenizer

__all__ = [
    "FROZEN_METRIC_TYPES",
    "CheckpointError",
    "TokenizerMismatchError",
    "annotation_metadata",
    "annotation_tokenizer_sha256",
    "build_child_network",
    "check_checkpoint",
    "check_tokenizer_matches_shards",
    "NetworkSpec",
    "build_network",
    "drop_frozen_metric_weights",
    "freeze",
    "frozen_tokenizer",
    "instantiator_spec_overrides",
    "load_frozen_scorer",
    "load_stage",
    "load_frozen_tokenizer",
    "metadata_tokenizer_sha256",
    "read_checkpoint",
    "read_checkpoint_safely",
    "restore_frozen_metric_weights",
    "tokenizer_spec_of",
    "upgrade_network_specs",
]

NetworkSpec = dict[str, Any]
"""``{"class_path": "package.module.Class", "init_args": {...}}``, as in LightningCLI YAML."""

FROZEN_METRIC_TYPES: tuple[type[nn.Module], ...] = (LPIPS, InceptionI3d)
"""Networks rebuilt from the weight cache, never stored in a checkpoint."""

_HOW_TO_TRAIN = (
    "Train one first, e.g. `adaptok fit --config experiments/demo/data.yaml --config "
    "experiments/demo/tokenizer.yaml`, and point the setting at a file under its checkpoints/ "
    "folder."
)


class CheckpointError(ValueError):
    """A checkpoint this version cannot use as it is; the message names the file and field."""


_SPEC_PREFIXES = {
    "tokenizer_spec": "tokenizer.",
    "tokenizer": "tokenizer.",
    "scorer_spec": "scorer.",
    "scorer": "scorer.",
    "generator_spec": "generator.",
    "generator": "generator.",
}
"""Hyperparameters holding a network spec, and where that network's weights are stored.

A stage that builds its network from a factory and its parent's geometry stores the resolved
spec as ``<name>_spec`` (``scorer_spec``, ``generator_spec``); ``<name>`` then holds only the
network's own arguments and is not checked (checkpoints written before that hold the whole
spec under ``<name>``)."""
_DATA_GEOMETRY = {"image_size": "resolution", "num_frames": "num_frames"}
"""Tokenizer init argument -> the data setting it was trained with (must be equal)."""


def _foreign_values(value: Any, where: str) -> Iterator[tuple[str, Any]]:
    """``(field, value)`` of every numpy / torch object inside a hyperparameter tree."""
    if isinstance(value, np.generic | np.ndarray | torch.Tensor):
        yield where, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _foreign_values(item, f"{where}[{key!r}]")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _foreign_values(item, f"{where}[{index}]")


def _spec_problem(spec: Mapping[str, Any], state: Mapping[str, Any], prefix: str) -> str | None:
    """How a network spec disagrees with the stored weights' names and shapes (None: agrees)."""
    weights = _sub_state(state, prefix)
    if not weights:
        return None
    try:
        try:  # no memory for the weights; some initialisations need real tensors
            with torch.device("meta"):
                network = build_network(spec)
        except (NotImplementedError, RuntimeError):
            network = build_network(spec)
    except Exception as error:  # a spec that cannot be built is itself the problem
        return f"cannot be built ({type(error).__name__}: {error})"
    expected = network.state_dict()
    mismatch = first_weight_mismatch(expected, weights)
    if mismatch is None:
        return None
    kind, key = mismatch
    if kind == "unexpected":
        return f"has no parameter {prefix}{key} that the stored weights hold"
    if kind == "shape":
        return (
            f"gives {prefix}{key} the shape {tuple(expected[key].shape)} but the stored "
            f"weights have {tuple(weights[key].shape)}"
        )
    return f"needs {prefix}{key}, which the stored weights lack"


def check_checkpoint(checkpoint: Mapping[str, Any], source: str | Path) -> None:
    """Refuse a checkpoint whose hyperparameters this version cannot restore, in one line.

    Checks that hyperparameters hold plain Python values (a numpy scalar cannot be loaded
    with ``weights_only``), that every stored network spec (``tokenizer_spec``,
    ``tokenizer``, ``scorer_spec``, ``generator_spec``, or an older checkpoint's whole spec
    under ``scorer`` / ``generator``) agrees with the names and shapes of the stored weights, and
    that the tokenizer's ``image_size`` / ``num_frames`` equal the data ``resolution`` /
    ``num_frames`` the checkpoint was trained with (a spec edited to another size loads
    without a shape error, since position embeddings are computed, not stored).

    Raises:
        CheckpointError: Naming the checkpoint, the field and both values.
    """
    hparams = checkpoint.get("hyper_parameters") or {}
    if not isinstance(hparams, Mapping):
        raise CheckpointError(f"checkpoint {source}: hyper_parameters is not a mapping")
    for where, value in _foreign_values(dict(hparams), "hyper_parameters"):
        kind = f"{type(value).__module__}.{type(value).__name__}"
        raise CheckpointError(
            f"checkpoint {source}: {where} is a {kind} ({value!r}), not a plain Python value; "
            "this version stores plain numbers and lists (re-save it with float()/int()/"
            ".tolist() applied to that field)"
        )
    state = checkpoint.get("state_dict") or {}
    data = checkpoint.get("datamodule_hyper_parameters") or {}
    for name, prefix in _SPEC_PREFIXES.items():
        spec = hparams.get(name)
        if not _is_spec(spec) or _is_spec(hparams.get(f"{name}_spec")):
            continue
        problem = _spec_problem(spec, state, prefix)
        if problem is not None:
            raise CheckpointError(
                f"checkpoint {source}: hyper_parameters[{name!r}] ({spec['class_path']}) "
                f"{problem}; the spec was edited or comes from another version"
            )
        if prefix != "tokenizer.":
            continue
        init_args = spec.get("init_args") or {}
        for argument, setting in _DATA_GEOMETRY.items():
            built, trained = init_args.get(argument), data.get(setting)
            if isinstance(built, int) and isinstance(trained, int) and built != trained:
                raise CheckpointError(
                    f"checkpoint {source}: hyper_parameters[{name!r}] has {argument}={built} "
                    f"but the network was trained on data with {setting}={trained} "
                    f"(datamodule_hyper_parameters); the stored weights belong to "
                    f"{argument}={trained}"
                )


def _is_spec(value: Any) -> bool:
    return isinstance(value, Mapping) and "class_path" in value


_DERIVED_GEOMETRY = {
    "scorer": ("token_width", "num_blocks", "tokens_per_block"),
    "generator": ("codebook_size", "num_blocks", "tokens_per_block"),
}
"""A stage network's init arguments read from its parent tokenizer (never stated)."""


def _plain(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value


def _upgrade_tokenizer_loss(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """``{"loss": ...}`` without the discriminator geometry an older tokenizer stage stated.

    Raises:
        CheckpointError: A stated value is not the tokenizer's (names both values).
    """
    loss, tokenizer = hparams.get("loss"), hparams.get("tokenizer")
    if not (_is_spec(loss) and _is_spec(tokenizer)):
        return {}
    loss_args = dict(loss.get("init_args") or {})
    discriminator = loss_args.get("discriminator")
    if not _is_spec(discriminator):
        return {}
    own = dict(discriminator.get("init_args") or {})
    stated = {key: own.pop(key) for key in DISCRIMINATOR_GEOMETRY if key in own}
    if not stated:
        return {}
    tokenizer_args = tokenizer.get("init_args") or {}
    for key, value in stated.items():
        if key in tokenizer_args and _plain(value) != _plain(tokenizer_args[key]):
            raise CheckpointError(
                f"hyper_parameters['loss'] gives the discriminator {key}={value!r} but "
                f"hyper_parameters['tokenizer'] has {key}={tokenizer_args[key]!r}; the "
                f"discriminator's {', '.join(DISCRIMINATOR_GEOMETRY)} are the tokenizer's"
            )
    loss_args["discriminator"] = {"class_path": discriminator["class_path"], "init_args": own}
    return {"loss": {**loss, "init_args": loss_args}}


def upgrade_network_specs(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """Bring the hyperparameters of a checkpoint older than the derived geometry up to date.

    A scorer (generator) checkpoint written before ``scorer_spec``/``generator_spec``
    existed holds the whole network spec under ``scorer`` (``generator``); it is copied to
    ``scorer_spec`` and ``scorer`` keeps only the network's own arguments (what the stage's
    factory takes). A tokenizer checkpoint written before the discriminator's geometry was
    derived states the tokenizer's ``num_frames``, ``image_size``, ``in_channels`` and
    ``patch_size`` in ``loss.init_args.discriminator.init_args``; they are removed (after
    checking that they are the tokenizer's). In place. Needed wherever the hyperparameters
    go through the CLI's parser, whose factories take only the network's own arguments:
    ``--model`` rebuilt from a checkpoint (:func:`read_checkpoint_safely`) and Lightning's
    instantiator (:func:`instantiator_spec_overrides`); :func:`build_child_network` reads
    the old scorer/generator form itself.

    Args:
        checkpoint: A suite checkpoint (``hyper_parameters``).

    Returns:
        The changed hyperparameters (name -> new value; empty when nothing changed), e.g.
        to pass as overrides to ``load_from_checkpoint``.

    Raises:
        CheckpointError: An older tokenizer checkpoint whose discriminator geometry is not
            its tokenizer's (the message names both values).
    """
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, dict):
        return {}
    changed: dict[str, Any] = _upgrade_tokenizer_loss(hparams)
    for name, derived in _DERIVED_GEOMETRY.items():
        spec = hparams.get(name)
        if not _is_spec(spec) or f"{name}_spec" in hparams:
            continue
        own = {k: v for k, v in dict(spec.get("init_args") or {}).items() if k not in derived}
        changed[f"{name}_spec"] = dict(spec)
        changed[name] = {"class_path": spec["class_path"], "init_args": own}
    hparams.update(changed)
    return changed


def instantiator_spec_overrides(checkpoint_path: Any, name: str) -> dict[str, Any]:
    """``load_from_checkpoint`` overrides that restore an older CLI checkpoint of ``name``.

    A checkpoint written by LightningCLI before ``<name>_spec`` existed holds the whole spec
    under ``<name>``, geometry included; Lightning hands its hyperparameters to the CLI's
    instantiator, whose parser refuses geometry in the factory's ``init_args`` before the
    stage is built. The overrides give ``<name>`` only the network's own arguments and
    ``<name>_spec`` the whole spec (:func:`upgrade_network_specs`); for ``loss`` (a tokenizer
    stage's) the loss without its discriminator's geometry. A checkpoint without an
    instantiator needs none: :func:`build_child_network` reads the old form itself, and a
    loss built in Python is stored as the object.

    Args:
        checkpoint_path: What ``load_from_checkpoint`` was given; only a local file is read
            (memory-mapped, weights only), anything else gets no overrides.
        name: The stage's network (``scorer``, ``generator``) or ``loss``.

    Returns:
        ``{name: own, f"{name}_spec": spec}`` (``{"loss": loss}``), or empty when nothing
        needs overriding.

    Raises:
        CheckpointError: As :func:`upgrade_network_specs`, naming the file.
    """
    path = Path(checkpoint_path) if isinstance(checkpoint_path, str | Path) else None
    if path is None or not path.is_file():
        return {}
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # unreadable here: Lightning's own load reports it
        return {}
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(hparams, dict) or "_instantiator" not in hparams:
        return {}
    try:
        changed = upgrade_network_specs({"hyper_parameters": dict(hparams)})
    except CheckpointError as error:
        raise CheckpointError(f"checkpoint {path}: {error}") from error
    return {key: value for key, value in changed.items() if key in (name, f"{name}_spec")}


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _with_geometry(
    name: str, class_path: str, own: Mapping[str, Any], geometry: Mapping[str, int], where: str
) -> NetworkSpec:
    """``{"class_path", "init_args"}`` of the network the parent sizes.

    Raises:
        ValueError: ``own`` states a geometry argument other than the parent's.
    """
    for key, value in geometry.items():
        if key in own and own[key] != value:
            raise ValueError(
                f"`{name}` ({where}) has {key}={own[key]} but its tokenizer has {key}={value}; "
                f"the {', '.join(geometry)} are read from the tokenizer"
            )
    rest = {key: value for key, value in own.items() if key not in geometry}
    return {"class_path": class_path, "init_args": {**geometry, **rest}}


def _factory_spec(name: str, factory: Any, config: Any, geometry: Mapping[str, int]) -> NetworkSpec:
    """The spec of what ``factory(*geometry.values())`` builds.

    Raises:
        TypeError: It cannot be told (a lambda, a function, a partial with positional
            arguments): the checkpoint could not be restored.
    """
    if _is_spec(config):  # LightningCLI: the YAML's class_path and the network's own arguments
        class_path, own = config["class_path"], dict(config.get("init_args") or {})
    elif isinstance(factory, functools.partial) and isinstance(factory.func, type):
        if factory.args:
            raise TypeError(
                f"`{name}`: functools.partial({factory.func.__name__}, ...) with positional "
                "arguments cannot be recorded (the tokenizer's geometry takes those places); "
                "give the network's own settings as keywords"
            )
        class_path, own = _class_path(factory.func), dict(factory.keywords)
    elif isinstance(factory, type):
        class_path, own = _class_path(factory), {}
    else:
        raise TypeError(
            f"`{name}`: the factory {factory!r} cannot be recorded in the checkpoint, which "
            "then could not be restored; give the network class, functools.partial(Class, "
            "own settings as keywords), or a {'class_path', 'init_args'} dict"
        )
    return _with_geometry(name, class_path, own, geometry, "its factory")


def build_child_network(
    name: str,
    factory: Callable[..., nn.Module] | Mapping[str, Any] | None,
    factory_config: Any,
    spec: Mapping[str, Any] | None,
    geometry: Mapping[str, int],
) -> tuple[nn.Module, NetworkSpec]:
    """A later stage's own network, sized by its parent, and the spec to store for it.

    The geometry (e.g. the tokenizer's token width, blocks and tokens per block) is read
    from the parent network, never restated: ``factory`` takes it as its leading positional
    arguments, in the order of ``geometry``, and holds the network's own settings (width,
    depth, ...). In a LightningCLI YAML the factory is written as a ``class_path`` with only
    those own ``init_args`` (jsonargparse's callable-returning-a-class type); the resolved
    spec is stored in the stage's checkpoint (``<name>_spec``), the way litgpt and nanoGPT
    store their model configuration, so restoring never needs the parent's file.

    A ``factory`` given as a ``{"class_path", "init_args"}`` mapping is a spec whose missing
    geometry the parent fills in: what ``load_from_checkpoint`` passes for a checkpoint
    written before ``<name>_spec`` existed, which held the whole spec under ``<name>``
    (its stated geometry must be the parent's; a checkpoint written by LightningCLI is
    first given overrides, see :func:`instantiator_spec_overrides`).

    Args:
        name: The network's name in the stage (``scorer``, ``generator``), for messages.
        factory: Builds the network from the geometry, or a spec mapping (see above);
            unused when ``spec`` is given.
        factory_config: How the factory was given: the hyperparameter LightningCLI saved
            (a ``{"class_path", "init_args"}`` dict), or the factory itself (Python).
        spec: The resolved spec saved in the stage's own checkpoint (restoring); wins
            (its geometry must be the parent's too).
        geometry: The parent's sizes, in the factory's positional order.

    Returns:
        ``(network, spec)``, ``spec`` the resolved one to store as ``<name>_spec``.

    Raises:
        ValueError: Neither ``factory`` nor ``spec`` is given, or a stated geometry
            argument is not the parent's.
        TypeError: ``factory`` is a built network, or a callable whose spec cannot be
            recorded (a lambda, a function): its checkpoint could not be restored.
    """
    if spec is not None:
        own = dict(spec.get("init_args") or {})
        _with_geometry(name, str(spec.get("class_path")), own, geometry, "its stored spec")
        return build_network(spec), dict(spec)
    if factory is None:
        raise ValueError(
            f"give `{name}`: the network's class_path and its own init_args (its "
            f"{', '.join(geometry)} are the tokenizer's)"
        )
    if isinstance(factory, Mapping):
        if not _is_spec(factory):
            raise ValueError(
                f"`{name}` given as a mapping needs a 'class_path', got keys {sorted(factory)}"
            )
        own = dict(factory.get("init_args") or {})
        resolved = _with_geometry(name, factory["class_path"], own, geometry, "a stored spec")
        return build_network(resolved), resolved
    if isinstance(factory, nn.Module):
        raise TypeError(
            f"`{name}` takes a factory called with ({', '.join(geometry)}), e.g. "
            f"functools.partial({type(factory).__name__}, width=...), not a built network"
        )
    resolved = _factory_spec(name, factory, factory_config, geometry)
    return factory(*geometry.values()), resolved


class TokenizerMismatchError(CheckpointError):
    """A stage's tokenizer is not the one its token shards were annotated with."""


def annotation_metadata(shard: str | Path) -> dict[str, Any] | None:
    """The ``json`` object of the first annotation in a local token shard.

    ``callbacks.AnnotationWriter`` writes into every annotation the sizes (``num_blocks``,
    ``tokens_per_block``, ``codebook_size``), ``budgets``, ``candidate_lengths`` and the
    tokenizer's provenance (``tokenizer.sha256``). Only the shard's first ``json`` member is
    read (:func:`adaptok.data.tar_samples.read_tar_json`).

    Args:
        shard: A token shard path.

    Returns:
        The object; None when the shard is not a readable local file or its first ``json``
        member is not an object.
    """
    if not Path(shard).is_file():
        return None
    try:
        for _, meta in read_tar_json(str(shard)):
            return meta
    except (OSError, tarfile.TarError):
        return None
    return None


def annotation_tokenizer_sha256(shard: str | Path) -> str | None:
    """The tokenizer hash the first annotation of a local token shard records.

    ``callbacks.AnnotationWriter`` stores the SHA-256 of the tokenizer's weights
    (``modules.annotator.state_sha256``) in every annotation's ``json`` as
    ``tokenizer.sha256`` (read with :func:`annotation_metadata`).

    Args:
        shard: A token shard path.

    Returns:
        The recorded hash; None when the shard is not a readable local file or its first
        annotation records none (shards written elsewhere or by older versions).
    """
    return metadata_tokenizer_sha256(annotation_metadata(shard))


def metadata_tokenizer_sha256(meta: Mapping[str, Any] | None) -> str | None:
    """The tokenizer hash an annotation's ``json`` object records (``tokenizer.sha256``).

    Args:
        meta: The object (:func:`annotation_metadata`); None: none read.

    Returns:
        The hash; None when ``meta`` is None or records none.
    """
    provenance = meta.get("tokenizer") if meta is not None else None
    recorded = provenance.get("sha256") if isinstance(provenance, Mapping) else None
    return str(recorded) if recorded else None


def check_tokenizer_matches_shards(
    tokenizer_sha256: str, recorded: Mapping[str, str | None], tokenizer_source: str
) -> list[str]:
    """Refuse token shards annotated with another tokenizer, in one line.

    A tokenizer retrained after annotation has the same sizes, so only the weights' hash
    tells that the generator would decode its samples with other weights than the codes
    were made with.

    Args:
        tokenizer_sha256: ``modules.annotator.state_sha256`` of the stage's tokenizer.
        recorded: Shard -> the hash it records (:func:`annotation_tokenizer_sha256`).
        tokenizer_source: Where the stage's tokenizer came from, for the message.

    Returns:
        The shards that record no hash (they cannot be checked).

    Raises:
        TokenizerMismatchError: Naming the shard, both hashes and the two fixes.
    """
    for shard, found in recorded.items():
        if found is not None and found != tokenizer_sha256:
            raise TokenizerMismatchError(
                f"token shard {shard} was annotated with the tokenizer of sha256 {found}, "
                f"but the generator's tokenizer ({tokenizer_source}) has sha256 "
                f"{tokenizer_sha256}: its samples would be decoded with other weights than "
                "the codes were made with; re-annotate the shards with this tokenizer "
                "(`adaptok predict --config experiments/<set>/annotate.yaml` on a scorer "
                "trained on it) or point model.init_args.tokenizer_ckpt at the checkpoint the "
                "shards were annotated with"
            )
    return [shard for shard, found in recorded.items() if found is None]


def read_checkpoint_safely(ckpt_path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only`` first, and say in one line why it fails.

    A checkpoint holding objects ``weights_only`` refuses (numpy scalars in the
    hyperparameters, from another version) is read once more in full to name the field.

    Raises:
        FileNotFoundError: The file does not exist.
        CheckpointError: The file is not a checkpoint, or a field cannot be restored.
    """
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}. {_HOW_TO_TRAIN}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        try:
            checkpoint = read_checkpoint(path)
        except Exception as second:
            raise CheckpointError(f"cannot read checkpoint {path}: {second}") from second
        check_checkpoint(checkpoint, path)
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise CheckpointError(f"cannot read checkpoint {path} safely: {first_line}") from error
    except (RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict')")
    upgrade_scorer_checkpoint(checkpoint)  # a scorer saved before its label buffers existed
    try:  # saved before the specs were derived from the parent
        upgrade_network_specs(checkpoint)
    except CheckpointError as error:
        raise CheckpointError(f"checkpoint {path}: {error}") from error
    check_checkpoint(checkpoint, path)
    return checkpoint


def _import(class_path: str) -> Any:
    module_name, _, name = class_path.rpartition(".")
    if not module_name:
        raise ValueError(f"class_path {class_path!r} is not of the form 'package.module.Class'")
    return getattr(importlib.import_module(module_name), name)


def build_network(spec: Mapping[str, Any]) -> nn.Module:
    """Instantiate a network from its spec, recursively (nested ``class_path`` dicts too).

    Args:
        spec: ``{"class_path": ..., "init_args": {...}}``.

    Returns:
        The freshly initialised module (weights come from a state dict afterwards).

    Raises:
        ValueError: ``spec`` has no ``class_path``.
    """
    if "class_path" not in spec:
        raise ValueError(f"a network spec needs a 'class_path', got keys {sorted(spec)}")

    def value(item: Any) -> Any:
        if isinstance(item, Mapping) and "class_path" in item:
            return build_network(item)
        return item

    init_args = {key: value(item) for key, item in dict(spec.get("init_args") or {}).items()}
    return _import(spec["class_path"])(**init_args)


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no gradients for every parameter; returns ``module``."""
    module.eval()
    module.requires_grad_(False)
    return module


def read_checkpoint(ckpt_path: str | Path) -> dict[str, Any]:
    """Load a Lightning checkpoint on the CPU.

    Raises:
        FileNotFoundError: The file does not exist (the message says how to make one).
        ValueError: The file is not a Lightning checkpoint.
    """
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}. {_HOW_TO_TRAIN}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict')")
    upgrade_scorer_checkpoint(checkpoint)  # a scorer saved before its label buffers existed
    return checkpoint


def tokenizer_spec_of(checkpoint: Mapping[str, Any], source: str = "checkpoint") -> NetworkSpec:
    """The tokenizer spec a stage checkpoint carries.

    A tokenizer stage stores it as its ``tokenizer`` init argument (LightningCLI saves the
    YAML's ``class_path`` dict); later stages store it as ``tokenizer_spec``.

    Raises:
        ValueError: The checkpoint carries no tokenizer spec.
    """
    hparams = checkpoint.get("hyper_parameters") or {}
    for key in ("tokenizer_spec", "tokenizer"):
        spec = hparams.get(key)
        if isinstance(spec, Mapping) and "class_path" in spec:
            return dict(spec)
    raise ValueError(
        f"{source} holds no tokenizer spec (hyper_parameters 'tokenizer' or 'tokenizer_spec' "
        "as a {'class_path', 'init_args'} dict). Checkpoints written by `adaptok fit` have one; "
        "a module built in Python must be given `tokenizer` as such a dict to be restorable."
    )


def _sub_state(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {
        key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)
    }


def _load_tokenizer(ckpt_path: str | Path) -> tuple[AdapTokTokenizer, NetworkSpec]:
    if Path(ckpt_path).expanduser().is_dir():  # an `adaptok export` folder (safetensors + spec)
        from adaptok.pretrained import load_pretrained

        model = load_pretrained(ckpt_path)
        return freeze(model.tokenizer), dict(model.specs["tokenizer"])
    checkpoint = read_checkpoint(ckpt_path)
    check_checkpoint(checkpoint, ckpt_path)
    spec = tokenizer_spec_of(checkpoint, str(ckpt_path))
    tokenizer = build_network(spec)
    state = _sub_state(checkpoint["state_dict"], "tokenizer.")
    if not state:
        raise ValueError(f"{ckpt_path} holds no tokenizer weights (no 'tokenizer.' keys)")
    tokenizer.load_state_dict(state)
    return freeze(tokenizer), spec


def load_frozen_tokenizer(ckpt_path: str | Path) -> AdapTokTokenizer:
    """The frozen tokenizer (on CPU) of any stage checkpoint, or of an export folder.

    Raises:
        FileNotFoundError: The checkpoint does not exist.
        ValueError: It carries no tokenizer spec or no tokenizer weights.
    """
    return _load_tokenizer(ckpt_path)[0]


def frozen_tokenizer(
    tokenizer_ckpt: str | None, tokenizer_spec: Mapping[str, Any] | None
) -> tuple[AdapTokTokenizer, NetworkSpec]:
    """The frozen tokenizer a later stage holds, with the spec to store in its checkpoint.

    Args:
        tokenizer_ckpt: A stage checkpoint, or an ``adaptok export`` folder, to take the
            tokenizer from (first training run).
        tokenizer_spec: The spec saved in the later stage's own checkpoint (restoring it);
            wins over ``tokenizer_ckpt``: the weights then come from the restored state dict,
            and the file ``tokenizer_ckpt`` names is never read.

    Returns:
        ``(tokenizer, spec)``: store ``spec`` as the stage's ``tokenizer_spec`` hyperparameter
        (``self.hparams["tokenizer_spec"] = spec``) so the checkpoint describes itself.

    Raises:
        ValueError: Neither is given.
    """
    if tokenizer_spec is not None:
        return freeze(build_network(tokenizer_spec)), dict(tokenizer_spec)
    if tokenizer_ckpt is None:
        raise ValueError(
            "give `tokenizer_ckpt` (the tokenizer stage's checkpoint) to train this stage. "
            + _HOW_TO_TRAIN
        )
    return _load_tokenizer(tokenizer_ckpt)


def _frozen_metric_prefixes(module: nn.Module) -> list[str]:
    return [
        f"{name}."
        for name, child in module.named_modules()
        if name and isinstance(child, FROZEN_METRIC_TYPES)
    ]


def drop_frozen_metric_weights(module: nn.Module, checkpoint: dict[str, Any]) -> None:
    """Remove the weights of ``module``'s frozen metric networks from ``checkpoint`` (in place).

    Called from ``on_save_checkpoint`` (:class:`modules.stage.StageModule` does); pair with
    :func:`restore_frozen_metric_weights`.
    """
    prefixes = tuple(_frozen_metric_prefixes(module))
    if prefixes:
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith(prefixes)]:
            del state[key]


def restore_frozen_metric_weights(module: nn.Module, checkpoint: dict[str, Any]) -> None:
    """Put ``module``'s current frozen metric weights into ``checkpoint`` (in place).

    Called from ``on_load_checkpoint`` (:class:`modules.stage.StageModule` does) so strict
    loading finds every key; the weights are the ones the module was just built with (from
    the weight cache).
    """
    prefixes = tuple(_frozen_metric_prefixes(module))
    if not prefixes:
        return
    state = checkpoint["state_dict"]
    for key, value in module.state_dict().items():
        if key.startswith(prefixes):
            state.setdefault(key, value)


def load_stage(ckpt_path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Restore any stage's LightningModule from its checkpoint alone, frozen.

    The class comes from the checkpoint (``hyper_parameters['_class_path']``, written by
    LightningCLI), so callers need not import it.

    Raises:
        FileNotFoundError: The checkpoint does not exist.
        ValueError: The checkpoint does not name its LightningModule class.
    """
    checkpoint = read_checkpoint(ckpt_path)
    check_checkpoint(checkpoint, ckpt_path)
    class_path = (checkpoint.get("hyper_parameters") or {}).get("_class_path")
    if not class_path:
        raise ValueError(
            f"{ckpt_path} does not name its LightningModule (hyper_parameters['_class_path']); "
            "restore it with `YourModule.load_from_checkpoint` instead"
        )
    module = _import(class_path).load_from_checkpoint(ckpt_path, map_location=map_location)
    return freeze(module)


def load_frozen_scorer(ckpt_path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Restore a scorer stage (``ScorerModule``: ``.tokenizer``, ``.scorer``, ``.predict_costs``).

    Raises:
        ValueError: The checkpoint is not a scorer stage's.
    """
    module = load_stage(ckpt_path, map_location)
    if not (hasattr(module, "scorer") and hasattr(module, "tokenizer")):
        raise ValueError(
            f"{ckpt_path} is a {type(module).__name__} checkpoint, not a scorer's; train one with "
            "`adaptok fit --config experiments/demo/data.yaml --config experiments/demo/scorer.yaml`"
        )
    return module
