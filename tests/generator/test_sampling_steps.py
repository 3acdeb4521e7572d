"""The named steps of `sample`, one by one, and the one source of reachable token totals."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from test_sampling import K, M, V, _model

from adaptok.alloc.feasibility import InfeasibleBudgetError, TokenGrid, check_total
from adaptok.nn.frame_condition import condition_clip, condition_prefix
from adaptok.nn.generator_sequence import GeneratorVocab, build_sequence
from adaptok.nn.sampling import (
    _ActiveClips,
    _budget,
    _length_masks,
    _length_rules,
    _prompt,
    _record,
    allowed_length_table,
    nearest_reachable_total,
    reachable_totals,
)

CPU = torch.device("cpu")


def _sums(lengths: list[int], blocks: int) -> set[int]:
    """Every total of `blocks` lengths, by enumeration."""
    return {sum(choice) for choice in itertools.product(lengths, repeat=blocks)}


@pytest.mark.parametrize(
    ("block_max", "min_length", "grid"),
    [(6, 2, [2, 4, 6]), (6, 1, None), (8, 3, [3, 5, 8]), (12, 4, [4, 9]), (5, 5, [5])],
)
def test_reachable_totals_agree_with_the_allocation_feasibility_test(
    block_max: int, min_length: int, grid: list[int] | None
) -> None:
    """`sample`'s table (former torch DP) and `check_total` (allocation) give the same set."""
    allowed = allowed_length_table(block_max, min_length, grid)
    lengths = allowed.nonzero().flatten().tolist()
    token_grid = TokenGrid.from_lengths(np.asarray(lengths, dtype=np.int64))
    table = reachable_totals(allowed, 4)
    assert table.shape == (5, 4 * block_max + 1)
    assert table[0].nonzero().flatten().tolist() == [0]
    for blocks in range(1, 5):
        expected = _sums(lengths, blocks)
        assert set(table[blocks].nonzero().flatten().tolist()) == expected
        for total in range(table.shape[1]):
            try:
                check_total(total, blocks, token_grid, equality=True)
                accepted = True
            except InfeasibleBudgetError:
                accepted = False
            assert accepted == bool(table[blocks, total]), (blocks, total)


def test_nearest_reachable_total_snaps_onto_totals_allocation_accepts() -> None:
    asked = torch.arange(0, 3 * 6 + 3)
    snapped = nearest_reachable_total(asked, 3, 6, candidate_lengths=[2, 4, 6], grid=True)
    grid = TokenGrid.from_lengths(np.array([2, 4, 6]))
    for value in snapped.tolist():
        check_total(value, 3, grid, equality=True)  # raises when unreachable
    assert snapped[7].item() in (6, 8)  # 7 is odd: the nearest even totals
    fp = nearest_reachable_total(torch.tensor([3]), 3, 6, copied_blocks=1, candidate_lengths=[2])
    assert fp.item() == 6 + 2 + 2  # block 0 copied at M, two blocks at the smallest length


def test_length_masks_follow_the_budget() -> None:
    rules = _length_rules(M, [2, 4, 6], True, CPU)
    assert rules.allowed.nonzero().flatten().tolist() == [2, 4, 6]
    model = _model()
    budget = _budget(model, torch.tensor([12, 18]), rules, "exact", 2, CPU)
    assert budget is not None and budget.left.tolist() == [12, 18]
    clips = _ActiveClips.start(2, 0, CPU)
    clips.block[:] = 1  # block 0 closed at 6 (clip 0) and 6 (clip 1)
    clips.closed[:] = 6
    clips.position[:] = torch.tensor([2, 4])
    eob_ok, code_ok = _length_masks(clips, rules, budget, K)
    # clip 0: 6 left over blocks 1, 2; closing at 2 leaves 4 for block 2 (reachable)
    # clip 1: 12 left; closing at 4 leaves 8 for one block (unreachable), so it must go on
    assert eob_ok.tolist() == [True, False]
    assert code_ok.tolist() == [True, True]
    free_eob, free_code = _length_masks(clips, rules, None, K)
    assert free_eob.tolist() == [True, True] and free_code.tolist() == [True, True]
    with pytest.raises(ValueError, match="cannot be reached"):
        _budget(model, torch.tensor([7, 12]), rules, "exact", 2, CPU)


def test_record_writes_codes_in_place_and_closes_blocks_on_eob() -> None:
    codes = torch.zeros(2, K, M, dtype=torch.long)
    lengths = torch.zeros(2, K, dtype=torch.long)
    clips = _ActiveClips.start(2, 0, CPU)
    eob = GeneratorVocab(V).eob
    _record(torch.tensor([5, 7]), clips, codes, lengths, eob)
    _record(torch.tensor([eob, 3]), clips, codes, lengths, eob)
    assert codes[0, 0, :1].tolist() == [5] and codes[1, 0, :2].tolist() == [7, 3]
    assert lengths.tolist() == [[1, 0, 0], [0, 0, 0]]
    assert clips.block.tolist() == [1, 0] and clips.position.tolist() == [0, 2]
    assert clips.closed.tolist() == [1, 0]
    clips.keep(torch.tensor([1]))
    assert clips.index.tolist() == [1] and clips.position.tolist() == [2]


def test_the_fp_prompt_is_the_training_prefix() -> None:
    """Sampling starts with exactly the prefix `build_sequence` trains on."""
    model = _model(prefix_blocks=2, num_classes=0)
    cond = torch.randint(0, V, (3, K, M), generator=torch.Generator().manual_seed(0))
    prompt = _prompt(model, cond, 3, CPU)
    for row in range(3):
        trained = build_sequence(cond[row], torch.full((K,), 2), cond[row, :2], codebook_size=V)
        length = int(trained["prefix_length"])
        assert torch.equal(prompt.tokens[row], trained["tokens"][:length])
        assert torch.equal(prompt.block_index, trained["block_index"][:length])
        assert torch.equal(prompt.block_position, trained["block_position"][:length])
    assert torch.equal(prompt.codes[:, 0], cond[:, 0]) and (prompt.lengths[:, 0] == M).all()
    assert (prompt.codes[:, 1:] == 0).all() and (prompt.lengths[:, 1:] == 0).all()
    with pytest.raises(ValueError, match="condition_codes"):
        _prompt(_model(), cond, 3, CPU)
    plain = _prompt(_model(), None, 3, CPU)
    assert plain.tokens.shape == (3, 0) and plain.block_index.numel() == 0


def test_condition_clip_holds_the_last_condition_frame() -> None:
    video = torch.arange(2 * 3 * 6 * 2 * 2, dtype=torch.float32).view(2, 3, 6, 2, 2)
    clip = condition_clip(video, 2)
    assert clip.shape == video.shape
    assert torch.equal(clip[:, :, :2], video[:, :, :2])
    assert all(torch.equal(clip[:, :, t], video[:, :, 1]) for t in range(2, 6))
    assert torch.equal(condition_clip(video, 6), video)
    with pytest.raises(ValueError, match="condition_frames"):
        condition_clip(video, 0)
    prefix = condition_prefix(torch.zeros(2, 4, dtype=torch.long), sep=V + 1)
    assert prefix.length == 9 and prefix.tokens[-1].item() == V + 1
    assert prefix.block_index.tolist() == [0] * 4 + [1] * 4 + [1]
    assert prefix.block_position.tolist() == [0, 1, 2, 3] * 2 + [4]


def test_annotator_and_generator_build_the_same_condition_clip() -> None:
    """The annotator's `cond.npy` clip and the generator's evaluation clip are one function."""
    from types import SimpleNamespace

    from modules.annotator import AnnotatorModule

    video = torch.rand(1, 3, 8, 4, 4)
    annotator = SimpleNamespace(condition_frames=3)
    built = AnnotatorModule.condition_clip(annotator, video)  # type: ignore[arg-type]
    assert torch.equal(built, condition_clip(video, 3))
