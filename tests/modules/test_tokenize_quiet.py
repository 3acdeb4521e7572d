"""``adaptok tokenize --quiet`` and the annotator load the scorer stage without Lightning's
note that a stage's hyperparameters hold a network: the stage keeps a factory and the resolved
``scorer_spec`` there, never the network itself, so there is nothing to silence."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from adaptok.data.video_io import encode_video
from modules.annotator import AnnotatorModule
from modules.loading import load_frozen_scorer
from modules.tokenize_cli import main

torch.set_num_threads(1)
_NOTE = "is an instance of `nn.Module` and is already saved during checkpointing"


def _notes(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if _NOTE in str(w.message)]


def test_tokenize_and_the_annotator_load_the_stage_without_the_module_note(
    scorer_ckpt: Path, tmp_path: Path, capsys
) -> None:
    clip = tmp_path / "c.mp4"
    frames = np.random.default_rng(0).integers(0, 255, (16, 40, 48, 3), dtype=np.uint8)
    clip.write_bytes(encode_video(frames, 10.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        argv = [str(clip), "--ckpt", str(scorer_ckpt), "--out", str(tmp_path / "t.npz")]
        assert main([*argv, "--quiet"]) == 0
        stage = load_frozen_scorer(scorer_ckpt)
        AnnotatorModule(str(scorer_ckpt), budgets=[0.5])
    assert not _notes(caught)
    assert "tokens:" in capsys.readouterr().out
    # No network in the hyperparameters: the stage restores its scorer from the saved spec.
    assert not any(isinstance(v, torch.nn.Module) for v in stage.hparams.values())
    assert stage.hparams["scorer_spec"]["init_args"]["tokens_per_block"] > 0
