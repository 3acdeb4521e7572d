"""ReplayBuffer: first in, first out, uniform draws from what it holds, clear refusals."""

from __future__ import annotations

import pytest
import torch

from adaptok.data.replay_buffer import ReplayBuffer


def rows(start: int, count: int) -> dict[str, torch.Tensor]:
    ids = torch.arange(start, start + count)
    return {"id": ids, "pair": torch.stack([ids, -ids], 1).float()}


def test_keeps_the_last_rows_and_draws_only_those() -> None:
    buffer = ReplayBuffer(5)
    buffer.add(**rows(0, 3))
    assert len(buffer) == 3
    drawn = buffer.sample(200, torch.Generator().manual_seed(0))
    assert set(drawn["id"].tolist()) == {0, 1, 2}
    buffer.add(**rows(3, 4))  # 7 rows seen, 5 held: 0 and 1 are gone
    assert len(buffer) == 5
    drawn = buffer.sample(500, torch.Generator().manual_seed(1))
    assert set(drawn["id"].tolist()) == {2, 3, 4, 5, 6}
    # the tensors of one row stay together
    assert torch.equal(drawn["pair"][:, 0], drawn["id"].float())
    assert torch.equal(drawn["pair"][:, 1], -drawn["id"].float())


def test_a_batch_larger_than_the_capacity_keeps_its_last_rows() -> None:
    buffer = ReplayBuffer(4)
    buffer.add(**rows(0, 2))
    buffer.add(**rows(10, 9))
    drawn = buffer.sample(400, torch.Generator().manual_seed(0))
    assert set(drawn["id"].tolist()) == {15, 16, 17, 18}
    buffer.add(**rows(30, 1))  # the oldest of those goes
    drawn = buffer.sample(400, torch.Generator().manual_seed(0))
    assert set(drawn["id"].tolist()) == {16, 17, 18, 30}


def test_rows_are_copied_not_referenced() -> None:
    buffer = ReplayBuffer(2)
    source = rows(0, 2)
    buffer.add(**source)
    source["id"].fill_(99)
    assert set(buffer.sample(50, torch.Generator().manual_seed(0))["id"].tolist()) == {0, 1}


def test_refusals() -> None:
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        ReplayBuffer(0)
    buffer = ReplayBuffer(3)
    with pytest.raises(ValueError, match="empty"):
        buffer.sample(1)
    with pytest.raises(ValueError, match="at least one"):
        buffer.add()
    with pytest.raises(ValueError, match="same number of rows"):
        buffer.add(a=torch.zeros(2), b=torch.zeros(3))
    buffer.add(**rows(0, 1))
    with pytest.raises(ValueError, match="expected the tensors"):
        buffer.add(id=torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="pair: rows of shape"):
        buffer.add(id=torch.zeros(1, dtype=torch.long), pair=torch.zeros(1, 3))
    with pytest.raises(ValueError, match="size must be >= 1"):
        buffer.sample(0)
