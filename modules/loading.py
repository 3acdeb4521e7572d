"""Loading an earlier stage's network from its checkpoint, frozen, for a later stage."""

from __future__ import annotations

from pathlib import Path

import torch

from adaptok.nn.tokenizer import AdapTokTokenizer

__all__ = ["load_frozen_tokenizer"]


def load_frozen_tokenizer(
    ckpt_path: str | Path, map_location: str | torch.device = "cpu"
) -> AdapTokTokenizer:
    """Rebuild the tokenizer of a ``TokenizerModule`` checkpoint, in eval mode, without gradients.

    Raises:
        FileNotFoundError: The checkpoint does not exist (the message says how to make one).
    """
    from modules.tokenizer import TokenizerModule  # local: avoids a cycle with modules/__init__

    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"tokenizer checkpoint not found: {path}. Train one first, e.g. "
            "`adaptok fit --config experiments/demo/tokenizer.yaml`, and point "
            "`tokenizer_ckpt` at a file under its checkpoints/ folder."
        )
    module = TokenizerModule.load_from_checkpoint(path, map_location=map_location)
    tokenizer = module.tokenizer.eval()
    tokenizer.requires_grad_(False)
    return tokenizer
