"""LightningModules (wiring only) and the ``adaptok`` CLI."""

from modules.scorer import ScorerModule
from modules.tokenizer import TokenizerModule

__all__ = ["ScorerModule", "TokenizerModule"]
