"""Converted official weights reproduce the official outputs (codes exactly, floats 1e-5)."""

from __future__ import annotations

import pytest
import torch

from adaptok import load_pretrained

ATOL = 1e-5


def _close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape
    error = (ours - theirs).abs().max().item()
    assert error <= ATOL, f"max abs difference {error:.2e} > {ATOL}"


@pytest.fixture(scope="module")
def scorer_model(converted):
    return load_pretrained(converted["scorer"])


@pytest.mark.parametrize("attention", ["blockwise", "dense"])
def test_encoder_codes_and_latents(reference, scorer_model, attention):
    tokenizer = scorer_model.tokenizer
    tokenizer.attention = attention
    try:
        encoding = tokenizer.encode(reference.inputs["video"])
    finally:
        tokenizer.attention = "blockwise"
    assert torch.equal(encoding.codes, reference.outputs["codes"])
    _close(encoding.latents, reference.outputs["latents"])
    _close(encoding.quantized, reference.outputs["quantized"])


@pytest.mark.parametrize("attention", ["blockwise", "dense"])
@pytest.mark.parametrize("setting", ["full", "mixed", "short"])
def test_decoder_at_kept_lengths(reference, scorer_model, setting, attention):
    tokenizer = scorer_model.tokenizer
    lengths = reference.inputs[f"lengths.{setting}"]
    tokenizer.attention = attention
    try:
        video = tokenizer.decode_quantized(reference.outputs["quantized"], lengths)
    finally:
        tokenizer.attention = "blockwise"
    _close(video, reference.outputs[f"decoded.{setting}"])


def test_decoder_from_codes(reference, scorer_model):
    lengths = reference.inputs["lengths.mixed"]
    video = scorer_model.tokenizer.decode(reference.outputs["codes"], lengths)
    _close(video, reference.outputs["decoded_codes.mixed"])


def test_scorer_predictions(reference, scorer_model):
    scores = scorer_model.scorer(
        reference.outputs["latents"],
        reference.outputs["quantized"],
        reference.inputs["scorer_context"],
    )
    _close(scores, reference.outputs["scores"])


def test_scorer_on_our_encoding(reference, scorer_model):
    encoding = scorer_model.encode(reference.inputs["video"])
    scores = scorer_model.scorer(
        encoding.latents, encoding.quantized, reference.inputs["scorer_context"]
    )
    _close(scores, reference.outputs["scores"])


def _stream_positions(lengths: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Block index and within-block position of each token of an ``<EOB>``-closed stream."""
    blocks, positions = [], []
    for row in lengths.tolist():
        block = [b for b, n in enumerate(row) for _ in range(n + 1)]
        position = [p for n in row for p in range(n + 1)]
        pad = width - len(block)
        blocks.append(block + [len(row) - 1] * pad)
        positions.append(position + [0] * pad)
    return torch.tensor(blocks), torch.tensor(positions)


def test_generator_logits(reference, converted):
    model = load_pretrained(converted["generator"])
    stream = reference.inputs["generator_stream"]
    block, position = _stream_positions(reference.inputs["generator_lengths"], stream.shape[1])
    labels = reference.inputs["generator_labels"]
    logits = model.generator(stream, block, position, labels, torch.zeros_like(labels))
    _close(logits, reference.outputs["generator_logits"])


def test_generator_kv_cache_steps_match(reference, converted):
    generator = load_pretrained(converted["generator"]).generator
    stream = reference.inputs["generator_stream"]
    block, position = _stream_positions(reference.inputs["generator_lengths"], stream.shape[1])
    labels = reference.inputs["generator_labels"]
    budget = torch.zeros_like(labels)
    cache = generator.new_cache()
    logits = [generator(stream[:, :1], block[:, :1], position[:, :1], labels, budget, cache)[:, 0]]
    for index in range(1, 6):
        logits.append(
            generator.step(stream[:, index - 1], block[:, index], position[:, index], cache)
        )
    _close(torch.stack(logits, 1), reference.outputs["generator_logits"][:, :6])
