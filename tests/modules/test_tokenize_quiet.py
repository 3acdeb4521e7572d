"""``adaptok tokenize --quiet`` and the annotator load the scorer stage without Lightning's
note that the stage's hyperparameters hold the scorer network (they do, on purpose: the
checkpoint rebuilds the scorer from them)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from adaptok.data.video_io import encode_video
from modules.annotator import AnnotatorModule, load_scorer_stage
from modules.loading import load_frozen_scorer
from modules.tokenize_cli import main

torch.set_num_threads(1)
_NOTE = "is an instance of `nn.Module` and is already saved during checkpointing"


def _notes(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if _NOTE in str(w.message)]


def test_tokenize_and_the_annotator_load_the_stage_without_the_module_note(
    scorer_ckpt: Path, tmp_path: Path, capsys
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_frozen_scorer(scorer_ckpt)
    assert _notes(caught), "Lightning no longer warns: this test can go"

    clip = tmp_path / "c.mp4"
    frames = np.random.default_rng(0).integers(0, 255, (16, 40, 48, 3), dtype=np.uint8)
    clip.write_bytes(encode_video(frames, 10.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        argv = [str(clip), "--ckpt", str(scorer_ckpt), "--out", str(tmp_path / "t.npz")]
        assert main([*argv, "--quiet"]) == 0
        stage = load_scorer_stage(scorer_ckpt)
        AnnotatorModule(str(scorer_ckpt), budgets=[0.5])
    assert not _notes(caught)
    assert "tokens:" in capsys.readouterr().out
    # The note is silenced, not its cause: the stage still carries its scorer.
    assert isinstance(stage.hparams["scorer"], torch.nn.Module)
