"""Lightning callbacks of the suite (evaluation, media logging, reports)."""

from callbacks.token_allocator import TokenAllocator
from callbacks.video_evaluator import VideoEvaluator

__all__ = ["TokenAllocator", "VideoEvaluator"]
