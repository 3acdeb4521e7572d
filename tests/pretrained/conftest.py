"""Fixtures: the official reference file and official-format checkpoints made from it.

``official_reference.safetensors`` was written once by ``tools/make_official_reference.py``
from the official code (tiny models, random weights); no internet or official code is
needed here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

REFERENCE = Path(__file__).with_name("official_reference.safetensors")


class Reference:
    """The reference tensors, split by role, and the official configurations."""

    def __init__(self, path: Path) -> None:
        with safe_open(str(path), "pt") as handle:
            self.metadata = handle.metadata()
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        self.tokenizer_state = _strip(tensors, "official.tokenizer.")
        self.generator_state = _strip(tensors, "official.generator.")
        self.fp_generator_state = _strip(tensors, "official.fp_generator.")
        self.inputs = _strip(tensors, "input.")
        self.outputs = _strip(tensors, "output.")
        self.tokenizer_config = json.loads(self.metadata["tokenizer_config"])
        self.generator_config = json.loads(self.metadata["generator_config"])
        self.fp_generator_config = json.loads(self.metadata["fp_generator_config"])


def _strip(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


@pytest.fixture(scope="session")
def reference() -> Reference:
    return Reference(REFERENCE)


@pytest.fixture(scope="session")
def official_files(reference: Reference, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The reference weights in the official release formats.

    tokenizer: a ``.pt`` training checkpoint without the scorer (as ``AdapTok``);
    scorer: a Hugging Face folder (config.json + model.safetensors) of the whole model;
    generator: a ``.pt`` training checkpoint ``{"model": {"name", "args", "sd"}}``;
    fp_generator: a Hugging Face folder whose config.json holds the model arguments (as the
    released AdapTok-FP).
    """
    root = tmp_path_factory.mktemp("official")
    tokenizer_sd = {
        k: v for k, v in reference.tokenizer_state.items() if not k.startswith("scorer.")
    }
    tokenizer = root / "adaptok.pt"
    torch.save(
        {"model": {"name": "adaptok", "args": reference.tokenizer_config, "sd": tokenizer_sd}},
        tokenizer,
    )
    scorer = root / "AdapTok-Scorer"
    scorer.mkdir()
    save_file(dict(reference.tokenizer_state), str(scorer / "model.safetensors"))
    (scorer / "config.json").write_text(json.dumps(reference.tokenizer_config))
    generator = root / "adaptok_ar.pt"
    torch.save(
        {"model": {**reference.generator_config, "sd": reference.generator_state}}, generator
    )
    fp_generator = root / "AdapTok-FP"
    fp_generator.mkdir()
    save_file(dict(reference.fp_generator_state), str(fp_generator / "model.safetensors"))
    (fp_generator / "config.json").write_text(json.dumps(reference.fp_generator_config["args"]))
    return {
        "tokenizer": tokenizer,
        "scorer": scorer,
        "generator": generator,
        "fp_generator": fp_generator,
        "root": root,
    }


@pytest.fixture(scope="session")
def converted(official_files: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Suite checkpoints written by ``adaptok convert-official`` from the official files."""
    from modules.convert_official import main

    out = tmp_path_factory.mktemp("converted")
    code = main(
        [
            "--tokenizer",
            str(official_files["tokenizer"]),
            "--scorer",
            str(official_files["scorer"]),
            "--generator",
            str(official_files["generator"]),
            "--generator",
            str(official_files["fp_generator"]),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    names = ("tokenizer", "scorer", "generator", "fp_generator")
    return {name: out / f"{name}.ckpt" for name in names}
