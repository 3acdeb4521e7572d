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
  allowed lengths (`adaptok.alloc.feasibility.is_reachable`, the test the allocation solvers
  refuse budgets with), "at_most" the lower bound `r * min length`.
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

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from adaptok.alloc.feasibility import TokenGrid, is_reachable
from adaptok.nn.frame_condition import condition_prefix
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

    "exact" asks `adaptok.alloc.feasibility.is_reachable`, the suite's one test of whether a
    total is a sum of `r` allowed lengths (the same test refuses infeasible allocation
    budgets); the table is cached per set of lengths, so a sampler pays for it once.

    Args:
        allowed: Bool `(M + 1,)` from `allowed_length_table`.
        max_blocks: Largest number of blocks r.
        rule: "exact": totals that are sums of r allowed lengths; "at_most": totals at
            least `r * min allowed length` (the rest of a budget may be left unused).

    Returns:
        Bool `(max_blocks + 1, max_blocks * M + 1)`.

    Raises:
        ValueError: On an unknown `rule`.
    """
    block_max = allowed.numel() - 1
    width = max_blocks * block_max + 1
    lengths = allowed.nonzero().flatten()
    if rule == "at_most":
        table = torch.zeros(max_blocks + 1, width, dtype=torch.bool)
        smallest = int(lengths.min())
        for r in range(max_blocks + 1):
            table[r, r * smallest :] = True
        return table
    if rule != "exact":
        raise ValueError(f"unknown budget rule {rule!r}; use 'exact' or 'at_most'")
    exact = _exact_totals(tuple(lengths.tolist()), block_max, max_blocks)
    return torch.from_numpy(exact.copy())


@functools.lru_cache(maxsize=16)
def _exact_totals(lengths: tuple[int, ...], block_max: int, max_blocks: int) -> np.ndarray:
    """Bool `(max_blocks + 1, max_blocks * block_max + 1)`: `is_reachable` of every total."""
    grid = TokenGrid.from_lengths(np.asarray(lengths, dtype=np.int64))
    width = max_blocks * block_max + 1
    totals = np.tile(np.arange(width, dtype=np.int64), max_blocks + 1)
    counts = np.repeat(np.arange(max_blocks + 1, dtype=np.int64), width)
    table = is_reachable(totals, counts, grid).reshape(max_blocks + 1, width)
    table.flags.writeable = False
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


def _check_options(
    model: ARGenerator,
    label: Tensor,
    budget_level: Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    cfg_scale: float | None,
) -> None:
    """Refuse inconsistent conditions or sampling parameters (see `sample`)."""
    if label.dim() != 1 or budget_level.shape != label.shape or label.shape[0] == 0:
        raise ValueError("label and budget_level must be non-empty (B,) tensors")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
    if cfg_scale is not None and model.num_classes == 0:
        raise ValueError(
            "classifier-free guidance needs a class-conditional model (num_classes > 0)"
        )


@dataclass(frozen=True)
class _LengthRules:
    """Where a block may close, as tables indexed by the current block's length `n`.

    Attributes:
        allowed: Bool `(M + 1,)`: `<EOB>` may follow `n` codes.
        lengths: Long `(J,)`: the allowed lengths.
        any_above: Bool `(M + 1,)`: some allowed length exceeds `n` (a code may follow).
    """

    allowed: Tensor
    lengths: Tensor
    any_above: Tensor


def _length_rules(
    block_size: int,
    candidate_lengths: Sequence[int] | None,
    grid: bool,
    device: torch.device,
) -> _LengthRules:
    """The length tables of free (`<EOB>` from the smallest candidate on) or grid mode.

    Raises:
        ValueError: Grid mode without candidates, or candidates outside `[1, M]`.
    """
    smallest = min(candidate_lengths) if candidate_lengths else 1
    allowed = allowed_length_table(
        block_size, smallest, list(candidate_lengths) if grid and candidate_lengths else None
    )
    if grid and not candidate_lengths:
        raise ValueError("grid mode needs candidate_lengths")
    lengths = allowed.nonzero().flatten().to(device)
    allowed = allowed.to(device)
    any_above = torch.stack([allowed[n + 1 :].any() for n in range(block_size + 1)])
    return _LengthRules(allowed=allowed, lengths=lengths, any_above=any_above)


@dataclass
class _Prompt:
    """What the stream starts with and what sampling does not choose.

    Attributes:
        tokens: Long `(B, P)`: the FP prefix (condition codes + `<SEP>`); `P = 0` otherwise.
        block_index: Long `(P,)`, block of each prefix position.
        block_position: Long `(P,)`, position of each prefix token inside its block.
        codes: Long `(B, K, M)` result codes, block 0 already copied in FP.
        lengths: Long `(B, K)` result lengths, block 0 already `M` in FP.
    """

    tokens: Tensor
    block_index: Tensor
    block_position: Tensor
    codes: Tensor
    lengths: Tensor


def _prompt(
    model: ARGenerator, condition_codes: Tensor | None, batch: int, device: torch.device
) -> _Prompt:
    """The FP prefix (`adaptok.nn.frame_condition.condition_prefix`) and the copied block 0.

    Raises:
        ValueError: Condition codes missing for an FP model, given to a class model, of the
            wrong shape, or outside the codebook.
    """
    num_blocks, block_size = model.num_blocks, model.tokens_per_block
    codes = torch.zeros(batch, num_blocks, block_size, dtype=torch.long, device=device)
    lengths = torch.zeros(batch, num_blocks, dtype=torch.long, device=device)
    empty = torch.zeros(0, dtype=torch.long, device=device)
    if model.prefix_blocks == 0:
        if condition_codes is not None:
            raise ValueError(
                "condition_codes are only for frame-prediction models (prefix_blocks > 0)"
            )
        return _Prompt(empty.expand(batch, 0), empty, empty, codes, lengths)
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
    if int(condition_codes.min()) < 0 or int(condition_codes.max()) >= model.vocab.codebook_size:
        raise ValueError(f"condition codes must lie in [0, {model.vocab.codebook_size})")
    codes[:, 0] = condition_codes[:, 0]
    lengths[:, 0] = block_size
    prefix = condition_prefix(condition_codes[:, : model.prefix_blocks], model.vocab.sep)
    return _Prompt(prefix.tokens, prefix.block_index, prefix.block_position, codes, lengths)


@dataclass(frozen=True)
class _Budget:
    """A per-clip token budget of the modelled blocks.

    Attributes:
        left: Long `(B,)`, tokens the modelled blocks must spend (asked minus copied blocks).
        reachable: Bool `(r + 1, width)`, `reachable_totals` of the rule, on the device.
    """

    left: Tensor
    reachable: Tensor


def _budget(
    model: ARGenerator,
    total_tokens: Tensor | None,
    rules: _LengthRules,
    budget_rule: BudgetRule,
    batch: int,
    device: torch.device,
) -> _Budget | None:
    """The budget state of `total_tokens` (None: free lengths).

    Raises:
        ValueError: A shape other than `(B,)` or a total no completion can reach.
    """
    if total_tokens is None:
        return None
    first, block_size = model.first_block, model.tokens_per_block
    modelled = model.num_blocks - first
    total_tokens = torch.as_tensor(total_tokens, device=device).long().reshape(-1)
    if total_tokens.shape != (batch,):
        raise ValueError(f"total_tokens must be ({batch},), got {tuple(total_tokens.shape)}")
    left = total_tokens - first * block_size
    reachable = reachable_totals(rules.allowed.cpu(), modelled, budget_rule).to(device)
    top = reachable.shape[1] - 1
    ok = (left >= 0) & reachable[modelled, left.clamp(0, top)]
    if budget_rule == "exact":
        ok &= left <= top
    if not bool(ok.all()):
        totals = (reachable[modelled].nonzero().flatten() + first * block_size).tolist()
        bad = total_tokens[~ok].tolist()
        raise ValueError(
            f"total_tokens {bad} cannot be reached under the {budget_rule!r} rule with "
            f"allowed lengths {rules.lengths.tolist()}; reachable totals run from "
            f"{totals[0]} to {totals[-1]} (exact: {totals[:8]}...)"
        )
    return _Budget(left=left, reachable=reachable)


@dataclass
class _ActiveClips:
    """The clips still decoding and where each one stands.

    Attributes:
        index: Long `(A,)`, the clips' rows in the batch.
        block: Long `(A,)`, the block being decoded.
        position: Long `(A,)`, codes already in that block (`n`).
        closed: Long `(A,)`, codes of the clip's closed modelled blocks (`C`).
    """

    index: Tensor
    block: Tensor
    position: Tensor
    closed: Tensor

    @classmethod
    def start(cls, batch: int, first_block: int, device: torch.device) -> _ActiveClips:
        """Every clip at position 0 of its first modelled block."""
        return cls(
            index=torch.arange(batch, device=device),
            block=torch.full((batch,), first_block, dtype=torch.long, device=device),
            position=torch.zeros(batch, dtype=torch.long, device=device),
            closed=torch.zeros(batch, dtype=torch.long, device=device),
        )

    def keep(self, rows: Tensor) -> None:
        """Keep only the clips at `rows` (indices into the active clips)."""
        self.index, self.block = self.index[rows], self.block[rows]
        self.position, self.closed = self.position[rows], self.closed[rows]


def _length_masks(
    clips: _ActiveClips, rules: _LengthRules, budget: _Budget | None, num_blocks: int
) -> tuple[Tensor, Tensor]:
    """Bool `(A,)` pair `(eob_ok, code_ok)`: may each clip close its block, or add a code.

    The module docstring states the rules; with a budget, `<EOB>` is allowed only when the
    blocks after this one can still reach the rest, and a code only when some longer allowed
    length leaves a reachable rest.
    """
    eob_ok = rules.allowed[clips.position]
    code_ok = rules.any_above[clips.position]
    if budget is None:
        return eob_ok, code_ok
    remaining = num_blocks - 1 - clips.block
    left = budget.left[clips.index] - clips.closed
    top = budget.reachable.shape[1] - 1
    after_eob = left - clips.position
    eob_ok = eob_ok & (after_eob >= 0) & budget.reachable[remaining, after_eob.clamp(0, top)]
    after = left[:, None] - rules.lengths[None, :]
    reach = budget.reachable[remaining[:, None], after.clamp(0, top)] & (after >= 0)
    code_ok = (reach & (rules.lengths[None, :] > clips.position[:, None])).any(1)
    return eob_ok, code_ok


def _next_tokens(
    logits: Tensor,
    eob_ok: Tensor,
    code_ok: Tensor,
    vocab_size: int,
    eob: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    uniform: Tensor,
) -> Tensor:
    """One token per active clip: masks, temperature, top-k / top-p, inverse-CDF draw."""
    logits[:, :vocab_size] = logits[:, :vocab_size].masked_fill(~code_ok[:, None], float("-inf"))
    logits[:, eob] = logits[:, eob].masked_fill(~eob_ok, float("-inf"))
    if temperature > 0:
        logits = logits / temperature
    logits = _filter_logits(logits, top_k, top_p)
    return _draw(logits, uniform, temperature)


def _record(token: Tensor, clips: _ActiveClips, codes: Tensor, lengths: Tensor, eob: int) -> None:
    """Write each code at `(clip, block, position)`, close blocks on `<EOB>`, move on."""
    is_eob = token == eob
    is_code = ~is_eob
    codes[clips.index[is_code], clips.block[is_code], clips.position[is_code]] = token[is_code]
    lengths[clips.index[is_eob], clips.block[is_eob]] = clips.position[is_eob]
    zero = torch.zeros_like(clips.position)
    clips.closed = clips.closed + torch.where(is_eob, clips.position, zero)
    clips.block = clips.block + is_eob.long()
    clips.position = torch.where(is_eob, zero, clips.position + 1)


class _NetworkRun:
    """The generator over the active clips: KV cache or full recomputation, CFG doubling.

    Under guidance every clip runs twice, with its class and with the null class (rows
    `A..2A-1`); `select` keeps both halves of the kept clips.
    """

    def __init__(
        self,
        model: ARGenerator,
        prompt: _Prompt,
        label: Tensor,
        budget_level: Tensor,
        clips: _ActiveClips,
        guided: bool,
        use_cache: bool,
    ) -> None:
        self.model, self.guided = model, guided
        batch = label.shape[0]
        null = torch.full_like(label, model.null_class)
        self.label = torch.cat([label, null]) if guided else label
        self.budget = self._doubled(budget_level)
        placeholder = torch.zeros(batch, 1, dtype=torch.long, device=label.device)
        self.tokens = self._doubled(torch.cat([prompt.tokens, placeholder], 1))
        self.block = self._doubled(
            torch.cat([prompt.block_index.expand(batch, -1), clips.block[:, None]], 1)
        )
        self.position = self._doubled(
            torch.cat([prompt.block_position.expand(batch, -1), clips.position[:, None]], 1)
        )
        self.cache = model.new_cache() if use_cache else None

    def _doubled(self, x: Tensor) -> Tensor:
        return torch.cat([x, x]) if self.guided else x

    @property
    def rows(self) -> int:
        """Rows the network processes per step (doubled under guidance)."""
        return self.label.shape[0]

    def start(self) -> Tensor:
        """Logits `(rows, V + 1)` of the first sampled token (prefills the cache)."""
        return self.model(
            self.tokens, self.block, self.position, self.label, self.budget, self.cache
        )[:, -1]

    def select(self, keep: Tensor, active: int) -> None:
        """Keep the rows of the active clips at `keep` (of `active` before the step)."""
        rows = torch.cat([keep, keep + active]) if self.guided else keep
        self.label, self.budget = self.label[rows], self.budget[rows]
        if self.cache is not None:
            self.cache.select(rows)
        else:
            self.tokens = self.tokens[rows]
            self.block = self.block[rows]
            self.position = self.position[rows]

    def advance(self, token: Tensor, block: Tensor, position: Tensor) -> Tensor:
        """Feed each clip's last token; logits `(rows, V + 1)` of the next one."""
        token, block, position = self._doubled(token), self._doubled(block), self._doubled(position)
        if self.cache is not None:
            return self.model.step(token, block, position, self.cache)
        self.tokens = torch.cat([self.tokens[:, :-1], token[:, None], self.tokens[:, -1:]], 1)
        self.block = torch.cat([self.block, block[:, None]], 1)
        self.position = torch.cat([self.position, position[:, None]], 1)
        return self.model(self.tokens, self.block, self.position, self.label, self.budget)[:, -1]


def _guide(logits: Tensor, active: int, cfg_scale: float | None) -> Tensor:
    """Float logits of the active clips, `c + (s - 1) (c - u)` under guidance."""
    logits = logits.float()
    if cfg_scale is None:
        return logits
    conditional, unconditional = logits[:active], logits[active:]
    return conditional + (cfg_scale - 1.0) * (conditional - unconditional)


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

    Steps: check the options; the length tables (`_length_rules`); the FP prompt and the
    copied block 0 (`_prompt`); the budget state (`_budget`); then one token per step for
    every active clip (`_length_masks`, `_next_tokens`), written in place (`_record`);
    clips that closed their last block leave the batch and the network run.

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
    label = torch.as_tensor(label, device=device).long()
    budget_level = torch.as_tensor(budget_level, device=device).long()
    _check_options(model, label, budget_level, temperature, top_k, top_p, cfg_scale)
    batch, vocab = label.shape[0], model.vocab
    rules = _length_rules(model.tokens_per_block, candidate_lengths, grid, device)
    prompt = _prompt(model, condition_codes, batch, device)
    budget = _budget(model, total_tokens, rules, budget_rule, batch, device)

    clips = _ActiveClips.start(batch, model.first_block, device)
    run = _NetworkRun(model, prompt, label, budget_level, clips, cfg_scale is not None, use_cache)
    logits = run.start()
    steps, row_steps = 0, 0
    while True:
        active = clips.index.shape[0]
        logits = _guide(logits, active, cfg_scale)
        eob_ok, code_ok = _length_masks(clips, rules, budget, model.num_blocks)
        uniform = torch.rand(batch, generator=generator).to(device)[clips.index]
        token = _next_tokens(
            logits, eob_ok, code_ok, vocab.codebook_size, vocab.eob,
            temperature, top_k, top_p, uniform,
        )  # fmt: skip
        steps += 1
        _record(token, clips, prompt.codes, prompt.lengths, vocab.eob)
        finished = clips.block == model.num_blocks
        keep = (~finished).nonzero().flatten()
        if keep.numel() == 0:
            break
        if bool(finished.any()):
            clips.keep(keep)
            token = token[keep]
            run.select(keep, active)
        row_steps += run.rows
        logits = run.advance(token, clips.block, clips.position)
    return SampleOutput(
        codes=prompt.codes, lengths=prompt.lengths, steps=steps, row_steps=row_steps
    )
