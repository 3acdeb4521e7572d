"""Session fixtures shared across the suite: tiny shards and tiny trained checkpoints.

Stages run through the real ``adaptok`` CLI on the shipped YAML files shrunk by their tiny
overlays (``tests/conf``, applied by :func:`tests.helpers.tiny_args`), inside a temporary
workspace that mirrors the repository layout: the shipped relative paths (``data/demo/...``,
``runs/demo/...``) resolve there, so each stage finds the previous one where its YAML says.
The fixtures are session-scoped and built on first use, in a chain:
``workspace`` -> ``tokenizer_ckpt`` -> ``scorer_ckpt`` -> ``demo_tokens`` -> ``generator_ckpt``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import EXPERIMENTS, REPO, overlay_flags, tiny_args, working_directory

__all__ = [
    "EXPERIMENTS",
    "REPO",
    "TINY_DATA",
    "TINY_SCORER",
    "TINY_TOKENIZER",
    "working_directory",
]

# The tiny overlays as flags, for tests that still append them after a single --config
# (prefer tests.helpers.tiny_args). Same settings as tests/conf/demo/{tokenizer,scorer}.yaml,
# with the shard URLs of tests/conf/demo/data.yaml.
TINY_TOKENIZER = overlay_flags("demo/data.yaml") + overlay_flags("demo/tokenizer.yaml")
TINY_SCORER = overlay_flags("demo/data.yaml") + overlay_flags("demo/scorer.yaml")
TINY_DATA = [a for a in TINY_TOKENIZER if a.startswith("--data.")]


def _last_ckpt(root: Path, stage: str) -> Path:
    ckpt = root / "runs" / "demo" / stage / "checkpoints" / "last.ckpt"
    assert ckpt.is_file(), sorted(str(p) for p in root.rglob("*.ckpt"))
    return ckpt


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``data/demo/synthetic`` shards (12 train + 4 val clips, 8 frames, 32 px)."""
    from adaptok.data.cli import main as shards

    root = tmp_path_factory.mktemp("workspace")
    out = root / "data" / "demo" / "synthetic"
    args = ["synthetic", "--out", str(out), "--num-clips", "16", "--seed", "0", "--size", "32"]
    code = shards(
        [*args, "--num-frames", "8", "--val-fraction", "0.25", "--shard-samples", "2", "--quiet"]
    )
    assert code in (0, None)
    return root


@pytest.fixture(scope="session")
def tokenizer_ckpt(workspace: Path) -> Path:
    """experiments/demo/tokenizer.yaml + tests/conf/demo/tokenizer.yaml, trained 8 steps."""
    from modules.cli import run_cli

    with working_directory(workspace):
        run_cli(["fit", *tiny_args("demo/tokenizer.yaml")])
    return _last_ckpt(workspace, "tokenizer")


@pytest.fixture(scope="session")
def scorer_ckpt(workspace: Path, tokenizer_ckpt: Path) -> Path:
    """experiments/demo/scorer.yaml + its overlay, 6 steps on ``tokenizer_ckpt``."""
    from modules.cli import run_cli

    with working_directory(workspace):
        run_cli(["fit", *tiny_args("demo/scorer.yaml")])
    return _last_ckpt(workspace, "scorer")


@pytest.fixture(scope="session")
def demo_tokens(workspace: Path, scorer_ckpt: Path) -> Path:
    """experiments/demo/annotate.yaml + its overlay: token shards of the 12 training clips."""
    from modules.cli import run_cli

    with working_directory(workspace):
        run_cli(["predict", *tiny_args("demo/annotate.yaml")])
    out = workspace / "data" / "demo" / "tokens"
    assert sorted(out.glob("train-*.tar")), sorted(out.iterdir())
    return out


@pytest.fixture(scope="session")
def generator_ckpt(workspace: Path, demo_tokens: Path) -> Path:
    """experiments/demo/generator.yaml + its overlay, 6 steps on ``demo_tokens``."""
    from modules.cli import run_cli

    with working_directory(workspace):
        run_cli(["fit", *tiny_args("demo/generator.yaml")])
    return _last_ckpt(workspace, "generator")
