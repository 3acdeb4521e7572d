"""LightningModules (wiring only) and the ``adaptok`` CLI."""

from modules.annotator import AnnotatorModule
from modules.generator import GeneratorModule
from modules.scorer import ScorerModule
from modules.tokenizer import TokenizerModule

__all__ = ["AnnotatorModule", "GeneratorModule", "ScorerModule", "TokenizerModule"]
