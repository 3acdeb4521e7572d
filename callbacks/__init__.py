"""Lightning callbacks of the suite (evaluation, media logging, reports)."""

from callbacks.annotation_writer import AnnotationWriter
from callbacks.generation_evaluator import GenerationEvaluator
from callbacks.reconstruction_media import ReconstructionMedia
from callbacks.token_allocator import TokenAllocator
from callbacks.token_health import TokenHealth
from callbacks.video_evaluator import VideoEvaluator

__all__ = [
    "AnnotationWriter",
    "GenerationEvaluator",
    "ReconstructionMedia",
    "TokenAllocator",
    "TokenHealth",
    "VideoEvaluator",
]
