"""Lightning callbacks of the suite (evaluation, media logging, reports)."""

from callbacks.allocation_evaluator import AllocationEvaluator
from callbacks.annotation_writer import AnnotationWriter
from callbacks.generation_evaluator import GenerationEvaluator
from callbacks.reconstruction_media import ReconstructionMedia
from callbacks.token_health import TokenHealth
from callbacks.video_evaluator import VideoEvaluator

__all__ = [
    "AllocationEvaluator",
    "AnnotationWriter",
    "GenerationEvaluator",
    "ReconstructionMedia",
    "TokenHealth",
    "VideoEvaluator",
]
