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


# ----------------------------------------------------------------------------- frame prediction
def _fp_streams(reference, generator) -> dict:
    """The suite's FP streams of the reference clips: condition blocks, ``<SEP>``, blocks 1.."""
    from adaptok.nn.generator_sequence import build_sequence, collate_sequences

    k, m = generator.num_blocks, generator.tokens_per_block
    batch = reference.inputs["fp_lengths"].shape[0]
    codes = reference.outputs["codes"].view(batch, k, m)
    condition = reference.outputs["fp_condition_codes"].view(batch, k, m)
    samples = [
        build_sequence(
            codes[i],
            reference.inputs["fp_lengths"][i],
            condition[i, : generator.prefix_blocks],
            codebook_size=generator.codebook_size,
        )
        for i in range(batch)
    ]
    return collate_sequences(samples, pad_id=generator.vocab.pad)


@pytest.fixture(scope="module")
def fp_model(converted):
    return load_pretrained(converted["fp_generator"])


def test_fp_streams_are_the_official_input(reference, fp_model):
    streams = _fp_streams(reference, fp_model.generator)
    official = torch.cat([reference.inputs["fp_condition"], reference.inputs["fp_stream"]], 1)
    assert torch.equal(streams["tokens"], official)
    assert int(streams["prefix_length"][0]) == reference.inputs["fp_condition"].shape[1]


def test_fp_generator_logits(reference, fp_model):
    generator = fp_model.generator
    assert not generator.class_slot and generator.prefix_blocks == 2
    streams = _fp_streams(reference, generator)
    null = torch.zeros(streams["tokens"].shape[0], dtype=torch.long)
    logits = generator(
        streams["tokens"], streams["block_index"], streams["block_position"], null, null
    )
    prefix = int(streams["prefix_length"][0])
    _close(logits[:, prefix:], reference.outputs["fp_logits"])
    assert not logits[:, 0].any()  # nothing predicts the first condition code


def test_fp_generator_kv_cache_steps_match(reference, fp_model):
    generator = fp_model.generator
    streams = _fp_streams(reference, generator)
    tokens, block, position = (
        streams["tokens"],
        streams["block_index"],
        streams["block_position"],
    )
    prefix = int(streams["prefix_length"][0])
    null = torch.zeros(tokens.shape[0], dtype=torch.long)
    cache = generator.new_cache()
    end = prefix + 1
    logits = [generator(tokens[:, :end], block[:, :end], position[:, :end], null, null, cache)]
    logits = [logits[0][:, -1]]
    for index in range(end, end + 5):
        logits.append(
            generator.step(tokens[:, index - 1], block[:, index], position[:, index], cache)
        )
    _close(torch.stack(logits, 1), reference.outputs["fp_logits"][:, :6])


def test_fp_condition_codes_match(reference, converted):
    from modules.loading import load_stage

    module = load_stage(converted["fp_generator"])
    assert module.condition_frames == int(reference.inputs["fp_condition_frames"])
    codes = module.encode_condition(reference.inputs["video"])
    assert torch.equal(codes.flatten(1), reference.outputs["fp_condition_codes"])


def test_class_slot_off_is_for_frame_prediction_only(fp_model):
    from adaptok.nn.generator import ARGenerator

    sizes = {"width": 24, "depth": 1, "heads": 2, "mlp_hidden": 32, "budget_slot": False}
    with pytest.raises(ValueError, match="class_slot=False is for frame prediction"):
        ARGenerator(64, 4, 8, num_classes=5, class_slot=False, **sizes)
    with pytest.raises(ValueError, match="class_slot=False is for frame prediction"):
        ARGenerator(64, 4, 8, prefix_blocks=2, class_slot=False, **{**sizes, "budget_slot": True})
    generator = fp_model.generator
    assert generator.max_positions == generator.position_embed.shape[0] == 43
    one = torch.ones(1, dtype=torch.long)
    with pytest.raises(ValueError, match="prefill"):
        generator.step(one, one, one, generator.new_cache())
