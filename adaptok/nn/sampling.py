"""Sampling adaptive token blocks from an `ARGenerator` (docs/METHOD.md section 5.5).

One loop serves every mode: KV-cache or full recomputation, temperature / top-k / top-p,
classifier-free guidance with a doubled batch, class-conditional or frame-prediction (FP)
streams, free lengths, grid lengths and exact (or at-most) token budgets.

Length rules, applied as masks on the logits of each clip before sampling:

- `<EOB>` is banned until the current block holds the smallest allowed length and forced at
  the largest (so no block comes out empty: a defect of the reference, which only banned
  `<EOB>` as the very first token);
- grid mode allows `<EOB>` only at the scorer's candidate lengths;
- budget mode: with `T` the clip's asked total, `C` the codes of its closed blocks, `n` the
  codes of the current block and `r` the blocks after it, `<EOB>` is allowed only when
  `T - C - n` is a total the `r` remaining blocks can still reach, and a code only when some
  allowed length `L > n` leaves a reachable `T - C - L`. "exact" uses the set of sums of `r`
  allowed lengths (a small dynamic programme), "at_most" the lower bound `r * min length`.
  The invariant "some completion reaches the budget" then holds at every step, so every
  clip lands on its budget.

Clips that have closed all their blocks leave the active batch (and the KV cache) at once:
finished clips stop costing compute. Codes are written straight to `(clip, block, position)`
as they are sampled, so no compaction (and no sort) is needed afterwards.

Every step draws one uniform number per clip of the WHOLE batch from `generator`, and the
clip samples by inverse CDF with it; so cached and uncached decoding, or CFG at scale 1 and
plain conditional sampling, consume the same random numbers and give the same clips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from adaptok.nn.generator import ARGenerator

__all__ = [
    "BudgetRule",
    "SampleOutput",
    "allowed_length_table",
    "nearest_reachable_total",
    "reachable_totals",
    "sample",
]

BudgetRule = Literal["exact", "at_most"]


@dataclass
class SampleOutput:
    """Sampled clips, ready for `AdapTokTokenizer.decode(codes.flatten(1), lengths)`.

    Attributes:
        codes: Long `(B, K, M)`; zero after each block's length.
        lengths: Long `(B, K)` in `[1, M]`.
        steps: Decoding steps run (the longest clip's stream length).
        row_steps: Sum over steps of the rows the network processed (doubled under CFG):
            the compute actually spent, which shrinks as clips finish.
    """

    codes: Tensor
    lengths: Tensor
    steps: int
    row_steps: int

    @property
    def total_tokens(self) -> Tensor:
        """Long `(B,)`, kept codes per clip (all K blocks)."""
        return self.lengths.sum(1)


def allowed_length_table(
    tokens_per_block: int, min_length: int = 1, grid: Sequence[int] | None = None
) -> Tensor:
    """Which block lengths may close a block.

    Args:
        tokens_per_block: M.
        min_length: Smallest length (the smallest candidate of the scorer; >= 1).
        grid: When given, only these lengths (the scorer's candidates, each in `[1, M]`).

    Returns:
        Bool `(M + 1,)`, True at allowed lengths.

    Raises:
        ValueError: On an empty set or values outside `[1, M]`.
    """
    table = torch.zeros(tokens_per_block + 1, dtype=torch.bool)
    if grid is not None:
        values = sorted({int(v) for v in grid})
        if not values or values[0] < 1 or values[-1] > tokens_per_block:
            raise ValueError(f"grid lengths must be a non-empty subset of [1, {tokens_per_block}]")
        table[torch.tensor(values)] = True
        table[: max(min_length, 1)] = False
    else:
        if not 1 <= min_length <= tokens_per_block:
            raise ValueError(f"min_length must lie in [1, {tokens_per_block}], got {min_length}")
        table[min_length:] = True
    if not bool(table.any()):
        raise ValueError(f"no allowed block length (min_length {min_length}, grid {grid})")
    return table


def reachable_totals(allowed: Tensor, max_blocks: int, rule: BudgetRule = "exact") -> Tensor:
    """Totals that `r` blocks with allowed lengths can reach, for `r = 0..max_blocks`.

    Args:
        allowed: Bool `(M + 1,)` from `allowed_length_table`.
        max_blocks: Largest number of blocks r.
        rule: "exact": totals that are sums of r allowed lengths; "at_most": totals at
            least `r * min allowed length` (the rest of a budget may be left unused).

    Returns:
        Bool `(max_blocks + 1, max_blocks * M + 1)`.
    """
    block_max = allowed.numel() - 1
    width = max_blocks * block_max + 1
    lengths = allowed.nonzero().flatten()
    table = torch.zeros(max_blocks + 1, width, dtype=torch.bool)
    if rule == "at_most":
        smallest = int(lengths.min())
        for r in range(max_blocks + 1):
            table[r, r * smallest :] = True
        return table
    if rule != "exact":
        raise ValueError(f"unknown budget rule {rule!r}; use 'exact' or 'at_most'")
    table[0, 0] = True
    for r in range(1, max_blocks + 1):
        previous = table[r - 1]
        for length in lengths.tolist():
            table[r, length:] |= previous[: width - length]
    return table


def nearest_reachable_total(
    total_tokens: Tensor,
    num_blocks: int,
    tokens_per_block: int,
    *,
    copied_blocks: int = 0,
    candidate_lengths: Sequence[int] | None = None,
    grid: bool = False,
) -> Tensor:
    """The reachable clip total closest to each asked total (ties: the smaller).

    Use it to turn a budget fraction into a total that `sample(..., total_tokens=...)` can
    land on exactly: e.g. in grid mode only sums of candidate lengths are reachable, and in
    frame prediction the copied block 0 always counts M.

    Args:
        total_tokens: Long `(B,)` asked totals over all K blocks.
        num_blocks: K.
        tokens_per_block: M.
        copied_blocks: Blocks kept at full length outside the sampler's control (FP: 1).
        candidate_lengths: As in `sample` (the smallest bounds block lengths from below).
        grid: As in `sample`.

    Returns:
        Long `(B,)` reachable totals.
    """
    smallest = min(candidate_lengths) if candidate_lengths else 1
    allowed = allowed_length_table(
        tokens_per_block, smallest, list(candidate_lengths) if grid and candidate_lengths else None
    )
    modelled = num_blocks - copied_blocks
    reachable = reachable_totals(allowed, modelled)[modelled].nonzero().flatten()
    reachable = reachable.to(total_tokens.device) + copied_blocks * tokens_per_block
    distance = (total_tokens.long()[:, None] - reachable[None, :]).abs()
    return reachable[distance.argmin(1)]


def _filter_logits(logits: Tensor, top_k: int | None, top_p: float | None) -> Tensor:
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        probs = logits.softmax(-1)
        ordered, order = probs.sort(dim=-1, descending=True, stable=True)
        before = ordered.cumsum(-1) - ordered  # mass of strictly more likely tokens
        drop_sorted = before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _draw(logits: Tensor, uniform: Tensor, temperature: float) -> Tensor:
    if temperature == 0.0:
        return logits.argmax(-1)
    probs = logits.softmax(-1)
    cdf = probs.cumsum(-1)
    value = (uniform * cdf[:, -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, value, right=True).squeeze(-1).clamp_max(logits.shape[-1] - 1)


@torch.inference_mode()
def sample(
    model: ARGenerator,
    label: Tensor,
    budget_level: Tensor,
    *,
    condition_codes: Tensor | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    cfg_scale: float | None = None,
    candidate_lengths: Sequence[int] | None = None,
    grid: bool = False,
    total_tokens: Tensor | None = None,
    budget_rule: BudgetRule = "exact",
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> SampleOutput:
    """Samples clips of adaptive blocks.

    Args:
        model: The generator (put in eval mode by the caller; sampling runs without grad).
        label: Long `(B,)` classes in `[0, num_classes]` (the null class for FP).
        budget_level: Long `(B,)` budget levels in `[0, num_budgets)`.
        condition_codes: FP only (required when `model.prefix_blocks > 0`): long `(B, K', M)`
            codes of the condition clip encoded without dropping, `K' >= prefix_blocks`;
            its first `prefix_blocks` blocks + `<SEP>` form the prefix and its block 0 is
            copied at full length.
        temperature: Softmax temperature (> 0), or 0 for greedy decoding. Paper 1.0.
        top_k: Keep the k most likely tokens (None: all).
        top_p: Nucleus sampling mass in (0, 1] (None: all).
        cfg_scale: Classifier-free guidance scale s (None: no guidance). The logits are
            `c + (s - 1) * (c - u)` with `c` conditional and `u` null-class logits of a doubled
            batch, so s = 1 reproduces plain conditional sampling. Class-conditional only.
        candidate_lengths: The scorer's candidate lengths: `<EOB>` is banned below the
            smallest (default 1).
        grid: Allow `<EOB>` only at `candidate_lengths`.
        total_tokens: Long `(B,)`, asked kept codes per clip over ALL K blocks (FP: the
            copied block 0 counts M). None: lengths are free.
        budget_rule: "exact" (land exactly on `total_tokens`) or "at_most".
        use_cache: Decode with the KV cache (True) or recompute the whole sequence every
            step (the reference for tests and benchmarks).
        generator: Random source (CPU) for reproducible sampling.

    Returns:
        `SampleOutput` with codes `(B, K, M)` and lengths `(B, K)`.

    Raises:
        ValueError: On inconsistent shapes, a budget no completion can reach, guidance
            without classes, or invalid sampling parameters.
    """
    device = next(model.parameters()).device
    num_blocks, block_size, first = model.num_blocks, model.tokens_per_block, model.first_block
    vocab = model.vocab
    label = torch.as_tensor(label, device=device).long()
    budget_level = torch.as_tensor(budget_level, device=device).long()
    batch = label.shape[0]
    if label.dim() != 1 or budget_level.shape != label.shape or batch == 0:
        raise ValueError("label and budget_level must be non-empty (B,) tensors")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
    guided = cfg_scale is not None
    if guided and model.num_classes == 0:
        raise ValueError(
            "classifier-free guidance needs a class-conditional model (num_classes > 0)"
        )

    smallest = min(candidate_lengths) if candidate_lengths else 1
    allowed = allowed_length_table(
        block_size, smallest, list(candidate_lengths) if grid and candidate_lengths else None
    )
    if grid and not candidate_lengths:
        raise ValueError("grid mode needs candidate_lengths")
    allowed_list = allowed.nonzero().flatten().to(device)
    allowed = allowed.to(device)
    any_above = torch.stack([allowed[n + 1 :].any() for n in range(block_size + 1)])

    codes = torch.zeros(batch, num_blocks, block_size, dtype=torch.long, device=device)
    lengths = torch.zeros(batch, num_blocks, dtype=torch.long, device=device)
    prefix = torch.zeros(batch, 0, dtype=torch.long, device=device)
    prefix_block = torch.zeros(0, dtype=torch.long, device=device)
    prefix_position = torch.zeros(0, dtype=torch.long, device=device)
    if model.prefix_blocks > 0:
        if condition_codes is None:
            raise ValueError("this model predicts frames: give condition_codes (B, K', M)")
        condition_codes = torch.as_tensor(condition_codes, device=device).long()
        if (
            condition_codes.dim() != 3
            or condition_codes.shape[0] != batch
            or condition_codes.shape[1] < model.prefix_blocks
            or condition_codes.shape[2] != block_size
        ):
            raise ValueError(
                f"condition_codes must be ({batch}, >= {model.prefix_blocks}, {block_size}), "
                f"got {tuple(condition_codes.shape)}"
            )
        if int(condition_codes.min()) < 0 or int(condition_codes.max()) >= vocab.codebook_size:
            raise ValueError(f"condition codes must lie in [0, {vocab.codebook_size})")
        codes[:, 0] = condition_codes[:, 0]
        lengths[:, 0] = block_size
        sep = torch.full((batch, 1), vocab.sep, dtype=torch.long, device=device)
        prefix = torch.cat([condition_codes[:, : model.prefix_blocks].flatten(1), sep], 1)
        blocks = torch.arange(model.prefix_blocks, device=device)
        prefix_block = torch.cat([blocks.repeat_interleave(block_size), blocks[-1:]])
        prefix_position = torch.cat(
            [
                torch.arange(block_size, device=device).repeat(model.prefix_blocks),
                torch.tensor([block_size], device=device),
            ]
        )
    elif condition_codes is not None:
        raise ValueError("condition_codes are only for frame-prediction models (prefix_blocks > 0)")

    modelled = num_blocks - first
    budget_left: Tensor | None = None
    feasible: Tensor | None = None
    if total_tokens is not None:
        total_tokens = torch.as_tensor(total_tokens, device=device).long().reshape(-1)
        if total_tokens.shape != (batch,):
            raise ValueError(f"total_tokens must be ({batch},), got {tuple(total_tokens.shape)}")
        budget_left = total_tokens - first * block_size
        feasible = reachable_totals(allowed.cpu(), modelled, budget_rule).to(device)
        top = feasible.shape[1] - 1
        ok = (budget_left >= 0) & feasible[modelled, budget_left.clamp(0, top)]
        if budget_rule == "exact":
            ok &= budget_left <= top
        if not bool(ok.all()):
            reachable = (feasible[modelled].nonzero().flatten() + first * block_size).tolist()
            bad = total_tokens[~ok].tolist()
            raise ValueError(
                f"total_tokens {bad} cannot be reached under the {budget_rule!r} rule with "
                f"allowed lengths {allowed_list.tolist()}; reachable totals run from "
                f"{reachable[0]} to {reachable[-1]} (exact: {reachable[:8]}...)"
            )

    # ---------------------------------------------------------------- per-clip state
    active = torch.arange(batch, device=device)
    block = torch.full((batch,), first, dtype=torch.long, device=device)
    position = torch.zeros(batch, dtype=torch.long, device=device)
    closed = torch.zeros(batch, dtype=torch.long, device=device)
    null = torch.full_like(label, model.null_class)

    def doubled(x: Tensor) -> Tensor:
        return torch.cat([x, x]) if guided else x

    run_label = torch.cat([label, null]) if guided else label
    run_budget = doubled(budget_level)
    stream = doubled(torch.cat([prefix, torch.zeros(batch, 1, dtype=torch.long, device=device)], 1))
    stream_block = doubled(torch.cat([prefix_block.expand(batch, -1), block[:, None]], 1))
    stream_position = doubled(torch.cat([prefix_position.expand(batch, -1), position[:, None]], 1))
    cache = model.new_cache() if use_cache else None
    logits = model(stream, stream_block, stream_position, run_label, run_budget, cache)[:, -1]
    steps, row_steps = 0, 0

    while True:
        logits = logits.float()
        rows = active.shape[0]
        if guided:
            conditional, unconditional = logits[:rows], logits[rows:]
            logits = conditional + (cfg_scale - 1.0) * (conditional - unconditional)
        # ------------------------------------------------------------ length rules
        eob_ok = allowed[position]
        code_ok = any_above[position]
        if budget_left is not None and feasible is not None:
            remaining = num_blocks - 1 - block
            left = budget_left[active] - closed
            top = feasible.shape[1] - 1
            after_eob = left - position
            eob_ok = eob_ok & (after_eob >= 0) & feasible[remaining, after_eob.clamp(0, top)]
            after = left[:, None] - allowed_list[None, :]
            reach = feasible[remaining[:, None], after.clamp(0, top)] & (after >= 0)
            code_ok = (reach & (allowed_list[None, :] > position[:, None])).any(1)
        logits[:, : vocab.codebook_size] = logits[:, : vocab.codebook_size].masked_fill(
            ~code_ok[:, None], float("-inf")
        )
        logits[:, vocab.eob] = logits[:, vocab.eob].masked_fill(~eob_ok, float("-inf"))
        if temperature > 0:
            logits = logits / temperature
        logits = _filter_logits(logits, top_k, top_p)
        uniform = torch.rand(batch, generator=generator).to(device)[active]
        token = _draw(logits, uniform, temperature)
        steps += 1

        # ------------------------------------------------------------ bookkeeping
        is_eob = token == vocab.eob
        is_code = ~is_eob
        codes[active[is_code], block[is_code], position[is_code]] = token[is_code]
        lengths[active[is_eob], block[is_eob]] = position[is_eob]
        closed = closed + torch.where(is_eob, position, torch.zeros_like(position))
        block = block + is_eob.long()
        position = torch.where(is_eob, torch.zeros_like(position), position + 1)
        finished = block == num_blocks
        keep = (~finished).nonzero().flatten()
        if keep.numel() == 0:
            break
        if bool(finished.any()):
            active, block, position, closed = (
                active[keep],
                block[keep],
                position[keep],
                closed[keep],
            )
            token = token[keep]
            run_keep = torch.cat([keep, keep + rows]) if guided else keep
            run_label, run_budget = run_label[run_keep], run_budget[run_keep]
            if cache is not None:
                cache.select(run_keep)
            else:
                stream = stream[run_keep]
                stream_block = stream_block[run_keep]
                stream_position = stream_position[run_keep]
        row_steps += run_label.shape[0]
        if cache is not None:
            logits = model.step(doubled(token), doubled(block), doubled(position), cache)
        else:
            stream = torch.cat([stream[:, :-1], doubled(token)[:, None], stream[:, -1:]], 1)
            stream_block = torch.cat([stream_block, doubled(block)[:, None]], 1)
            stream_position = torch.cat([stream_position, doubled(position)[:, None]], 1)
            logits = model(stream, stream_block, stream_position, run_label, run_budget)[:, -1]
    return SampleOutput(codes=codes, lengths=lengths, steps=steps, row_steps=row_steps)
