"""Sequence layout of the AR generator: round trips, padding keeps every <EOB>, clear errors."""

from __future__ import annotations

import pytest
import torch

from adaptok.nn.generator_sequence import (
    GeneratorVocab,
    build_sequence,
    collate_sequences,
    parse_sequence,
)

V, K, M = 16, 4, 6


def _clip(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, V, (K, M), generator=g)
    lengths = torch.randint(1, M + 1, (K,), generator=g)
    return codes, lengths


def _prefix_view(codes: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Codes with the tail after each length zeroed, as parse_sequence returns them."""
    keep = torch.arange(M)[None, :] < lengths[:, None]
    return torch.where(keep, codes, torch.zeros_like(codes))


def test_vocab_ids() -> None:
    vocab = GeneratorVocab(V)
    assert (vocab.eob, vocab.sep, vocab.size, vocab.num_outputs) == (V, V + 1, V + 2, V + 1)
    with pytest.raises(ValueError):
        GeneratorVocab(0)


def test_layout_of_a_small_example() -> None:
    codes = torch.arange(8).view(2, 4)
    seq = build_sequence(codes, torch.tensor([2, 3]), codebook_size=V)
    assert seq["tokens"].tolist() == [0, 1, V, 4, 5, 6, V]
    assert seq["block_index"].tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert seq["block_position"].tolist() == [0, 1, 2, 0, 1, 2, 3]
    assert seq["loss_mask"].all()
    assert int(seq["prefix_length"]) == 0


@pytest.mark.parametrize("seed", range(5))
def test_class_conditional_round_trip(seed: int) -> None:
    codes, lengths = _clip(seed)
    lengths[0] = 0 if seed == 0 else lengths[0]  # an empty block still round-trips
    lengths[-1] = M
    seq = build_sequence(codes, lengths, codebook_size=V)
    assert seq["tokens"].numel() == int(lengths.sum()) + K
    assert int((seq["tokens"] == V).sum()) == K
    out_codes, out_lengths = parse_sequence(seq["tokens"], K, M, codebook_size=V)
    assert torch.equal(out_lengths, lengths)
    assert torch.equal(out_codes, _prefix_view(codes, lengths))


@pytest.mark.parametrize("seed", range(5))
def test_frame_prediction_round_trip(seed: int) -> None:
    codes, lengths = _clip(seed)
    cond, _ = _clip(seed + 100)
    seq = build_sequence(codes, lengths, prefix=cond[:2], codebook_size=V)
    prefix_length = 2 * M + 1
    assert int(seq["prefix_length"]) == prefix_length
    assert seq["tokens"][prefix_length - 1] == V + 1
    assert not seq["loss_mask"][:prefix_length].any()
    assert seq["loss_mask"][prefix_length:].all()
    # block 0 is not modelled: K - 1 <EOB>s
    assert int((seq["tokens"] == V).sum()) == K - 1
    assert seq["block_index"][prefix_length:].min() == 1
    out_codes, out_lengths = parse_sequence(seq["tokens"], K, M, codebook_size=V)
    expected_lengths = lengths.clone()
    expected_lengths[0] = M
    expected_codes = _prefix_view(codes, lengths)
    expected_codes[0] = cond[0]
    assert torch.equal(out_lengths, expected_lengths)
    assert torch.equal(out_codes, expected_codes)
    # a flat prefix gives the same stream
    flat = build_sequence(codes, lengths, prefix=cond[:2].reshape(-1), codebook_size=V)
    assert torch.equal(flat["tokens"], seq["tokens"])


def test_collate_pads_to_full_length_and_keeps_every_eob() -> None:
    samples = []
    for seed in range(3):
        codes, lengths = _clip(seed)
        s = build_sequence(codes, lengths, codebook_size=V)
        s["label"] = torch.tensor(seed)
        samples.append(s)
    batch = collate_sequences(samples, pad_id=GeneratorVocab(V).pad)
    longest = max(s["tokens"].numel() for s in samples)
    assert batch["tokens"].shape == (3, longest)
    assert batch["label"].tolist() == [0, 1, 2]
    for i, s in enumerate(samples):
        n = s["tokens"].numel()
        assert batch["padding_mask"][i].sum() == n
        # every <EOB> of every sample is a loss target, the longest one's final <EOB> included
        eob_targets = (batch["tokens"][i] == V) & batch["loss_mask"][i]
        assert int(eob_targets.sum()) == K
        assert not batch["loss_mask"][i, n:].any()
        codes, lengths = parse_sequence(batch["tokens"][i], K, M, codebook_size=V)
        assert torch.equal(lengths, _clip(i)[1])


def test_bad_inputs_raise_clear_errors() -> None:
    codes, lengths = _clip(0)
    with pytest.raises(ValueError, match="codes must lie"):
        build_sequence(codes + V, lengths, codebook_size=V)
    with pytest.raises(ValueError, match="lengths must lie"):
        build_sequence(codes, lengths + M, codebook_size=V)
    with pytest.raises(ValueError, match="without <SEP>"):
        build_sequence(codes, lengths, prefix=torch.full((2, M), V + 1), codebook_size=V)
    with pytest.raises(TypeError):
        build_sequence(codes.float(), lengths, codebook_size=V)
    seq = build_sequence(codes, lengths, codebook_size=V)
    with pytest.raises(ValueError, match="closes"):
        parse_sequence(seq["tokens"][:-1], K, M, codebook_size=V)
    with pytest.raises(ValueError, match="at least one"):
        collate_sequences([], pad_id=V)
