"""`sample` gives the same clips for a fixed seed as before its split into named steps.

The expected codes and lengths were recorded from the one-function sampler (commit b27e2d5)
on the tiny float64 generators of `test_sampling.py`; any change of the decoding order, the
random-number use or the length rules changes them.
"""

from __future__ import annotations

import pytest
import torch
from test_sampling import CANDIDATES, K, M, V, _gen, _labels, _model

from adaptok.nn.sampling import SampleOutput, sample

# name -> (lengths (B, K), codes (B, K * M), steps, row_steps)
PINNED: dict[str, tuple[list, list, int, int]] = {
    "free": (
        [[3, 5, 6], [2, 6, 6], [3, 3, 3], [3, 6, 5]],
        [
            [2, 9, 2, 0, 0, 0, 2, 9, 7, 4, 4, 0, 3, 1, 3, 11, 2, 9],
            [8, 4, 0, 0, 0, 0, 9, 7, 3, 3, 6, 8, 8, 4, 3, 6, 2, 0],
            [9, 4, 0, 0, 0, 0, 2, 9, 3, 0, 0, 0, 9, 4, 3, 0, 0, 0],
            [1, 4, 2, 0, 0, 0, 2, 7, 3, 6, 1, 0, 2, 7, 2, 11, 2, 0],
        ],
        17,
        59,
    ),
    "exact_grid": (
        [[2, 2, 2], [6, 2, 2], [6, 6, 2], [6, 6, 6]],
        [
            [8, 4, 0, 0, 0, 0, 9, 10, 0, 0, 0, 0, 8, 3, 0, 0, 0, 0],
            [2, 4, 2, 9, 2, 0, 8, 9, 0, 0, 0, 0, 2, 7, 0, 0, 0, 0],
            [5, 11, 0, 8, 0, 4, 7, 5, 3, 8, 9, 10, 2, 9, 0, 0, 0, 0],
            [9, 4, 2, 8, 2, 9, 9, 7, 3, 4, 2, 10, 2, 7, 3, 6, 3, 9],
        ],
        21,
        56,
    ),
    "at_most_cfg": (
        [[2, 2, 3], [3, 4, 2], [3, 6, 3], [3, 6, 5]],
        [
            [2, 4, 0, 0, 0, 0, 9, 2, 0, 0, 0, 0, 9, 7, 2, 0, 0, 0],
            [9, 11, 2, 0, 0, 0, 2, 7, 3, 6, 0, 0, 2, 7, 0, 0, 0, 0],
            [8, 4, 0, 0, 0, 0, 2, 7, 3, 6, 10, 10, 9, 9, 2, 0, 0, 0],
            [0, 11, 2, 0, 0, 0, 2, 7, 3, 6, 9, 4, 3, 7, 2, 11, 2, 0],
        ],
        17,
        100,
    ),
    "fp_uncached": (
        [[6, 3, 1], [6, 5, 1], [6, 4, 4], [6, 6, 6]],
        [
            [3, 0, 4, 2, 3, 1, 2, 7, 2, 0, 0, 0, 9, 0, 0, 0, 0, 0],
            [7, 0, 11, 4, 5, 6, 2, 2, 2, 2, 4, 0, 0, 0, 0, 0, 0, 0],
            [7, 4, 5, 9, 11, 0, 2, 2, 2, 10, 0, 0, 3, 7, 3, 9, 0, 0],
            [6, 1, 4, 11, 4, 11, 2, 2, 2, 2, 4, 7, 2, 0, 1, 9, 3, 3],
        ],
        14,
        34,
    ),
}


def _run(name: str) -> SampleOutput:
    label, budget = _labels(4)
    if name == "free":
        return sample(_model(), label, budget, candidate_lengths=CANDIDATES, generator=_gen(11))
    if name == "exact_grid":
        return sample(
            _model(),
            label,
            budget,
            candidate_lengths=CANDIDATES,
            grid=True,
            total_tokens=torch.tensor([6, 10, 14, 18]),
            generator=_gen(12),
        )
    if name == "at_most_cfg":
        return sample(
            _model(),
            label,
            budget,
            candidate_lengths=CANDIDATES,
            total_tokens=torch.tensor([7, 9, 12, 17]),
            budget_rule="at_most",
            cfg_scale=1.5,
            top_k=6,
            top_p=0.9,
            temperature=0.8,
            generator=_gen(13),
        )
    model = _model(prefix_blocks=2, num_classes=0)
    cond = torch.randint(0, V, (4, K, M), generator=_gen(14))
    return sample(
        model,
        torch.zeros(4, dtype=torch.long),
        budget,
        condition_codes=cond,
        total_tokens=torch.tensor([10, 12, 14, 18]),
        use_cache=False,
        generator=_gen(15),
    )


@pytest.mark.parametrize("name", sorted(PINNED))
def test_fixed_seed_gives_the_recorded_clips(name: str) -> None:
    lengths, codes, steps, row_steps = PINNED[name]
    out = _run(name)
    assert out.lengths.tolist() == lengths
    assert out.codes.flatten(1).tolist() == codes
    assert (out.steps, out.row_steps) == (steps, row_steps)
