"""GeneratorModule: trains the AR generator on token annotations (docs/METHOD.md section 5)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from adaptok.nn.frame_condition import condition_clip
from adaptok.nn.generator import ARGenerator
from adaptok.nn.sampling import BudgetRule, SampleOutput, sample
from adaptok.schedules import WarmupCosineLR
from modules.annotator import state_sha256
from modules.loading import (
    annotation_metadata,
    build_child_network,
    check_tokenizer_matches_shards,
    metadata_tokenizer_sha256,
)
from modules.stage import OptimizerParameters, StageModule

__all__ = ["GeneratorFactory", "GeneratorModule"]

GeneratorFactory = Callable[[int, int, int], ARGenerator]
"""Builds the AR network from the tokenizer's ``(codebook_size, num_blocks,
tokens_per_block)``: in a YAML, ``class_path: adaptok.nn.ARGenerator`` with only its own
``init_args`` (``num_classes``, ``num_budgets``, ``width``, ``depth``, ...); in Python, e.g.
``functools.partial(ARGenerator, num_classes=6, width=96, depth=3, heads=4)``."""

_OPTIMIZER_KEYS = ("lr", "betas", "weight_decay")
"""Older init arguments that set the default optimizer (``optimizer`` replaces them)."""
_SCHEDULE_KEYS = ("warmup_steps", "total_steps", "min_lr_ratio")
"""Older init arguments that set the default schedule (``scheduler`` replaces them)."""


class GeneratorModule(StageModule):
    """Next-token training of an `ARGenerator`, sampling, and decoding through the tokenizer.

    Batches come from `datamodules.TokenShardsDataModule` (see
    `adaptok.nn.generator_sequence`): `tokens`, `block_index`, `block_position`,
    `loss_mask`, `padding_mask` (B, S); `label`, `budget_level` (B,) long; `budget` (B,)
    float. The loss is the cross-entropy of the kept codes and every `<EOB>` (the positions
    where `loss_mask` and `padding_mask` hold), never of the frame-prediction prefix.

    The frozen tokenizer decodes samples (and encodes frame-prediction conditions); it is
    stored in this module's checkpoint (its spec as the `tokenizer_spec` hyperparameter, its
    weights under `tokenizer.`), so a generator checkpoint describes itself. At the start of
    fitting (training and validation shards) and testing (test shards) its weights' SHA-256
    is compared with the one every token shard records (`check_tokenizer_of_shards`): a
    tokenizer retrained after annotation stops the run in one line.

    Optimisation (docs/METHOD.md section 5.6): two parameter groups, the weights of linear
    layers and the rest (embeddings, positions and norms), the second with `weight_decay`
    0; by default AdamW at lr 6e-4, betas (0.9, 0.95), weight decay 0.05, and
    `adaptok.schedules.WarmupCosineLR` (no warm-up, cosine decay to 0.01 of the rate over
    the trainer's estimated stepping batches), stepped every optimizer step. A YAML states
    them as `optimizer:` (e.g. `torch.optim.AdamW` with `lr`, `betas`, `weight_decay`) and
    `scheduler:` (`adaptok.schedules.WarmupCosineLR` with `warmup_steps`, `total_steps`,
    `min_lr_ratio`); the optimizer receives both groups and its `weight_decay` applies to the
    first.

    Geometry: the network's codebook size, blocks K and tokens per block M are the frozen
    tokenizer's, read from it and given to the `generator` factory; the scorer's candidate
    lengths are read from the token shards (every annotation records them) when fitting
    starts. The YAML states only the generator's own settings; the resolved network spec
    (`generator_spec`) and candidate lengths are saved in the checkpoint, so a generator
    checkpoint restores alone.

    Args:
        generator: Builds the AR network from the tokenizer's geometry
            (:data:`GeneratorFactory`); may be left unset when `generator_spec` is given.
        tokenizer_ckpt: Tokenizer (or scorer) stage checkpoint holding the tokenizer.
        tokenizer_spec: Filled in by this module (restoring from its own checkpoint). Leave
            unset.
        generator_spec: Filled in by this module and saved in its checkpoint (the network's
            resolved `class_path`/`init_args`, geometry included). Leave unset.
        budgets: The annotated budget fractions, in level order (must match the shards'
            `budgets`, e.g. [0.25, 0.5, 0.75, 1.0]); level i asks for about
            `budgets[i] * K * M` tokens per clip.
        candidate_lengths: The scorer's candidate lengths: at sampling `<EOB>` is banned below
            the smallest; grid mode closes blocks only at these. Leave unset: read from the
            training and validation token shards when fitting starts (all must agree; then
            saved); a value that contradicts the shards stops the fit or test. None after that (shards recording none,
            converted official generators): 1..M.
        condition_frames: Frame prediction: frames of the condition clip (paper 5), the last
            repeated to the clip length before encoding.
        optimizer: Optimizer factory, given the two parameter groups (None: AdamW, lr 6e-4
            (the paper's, at global batch 64), betas (0.9, 0.95), weight decay 0.05).
        scheduler: LR schedule factory, stepped every optimizer step (None: warm-up then
            cosine, `WarmupCosineLR(warmup_steps=0, min_lr_ratio=0.01)` over the run).
        temperature: Default sampling temperature (paper 1.0).
        top_k: Default top-k (None: off; paper off).
        top_p: Default nucleus mass (None: off; paper off).
        cfg_scale: Default guidance scale (None: no guidance; LARP used 1.25).
        lr: Older checkpoints' setting of the default optimizer's peak rate, read only when
            `optimizer` is unset; likewise `betas` and `weight_decay`. State `optimizer`
            instead.
        betas: Older setting, see `lr`.
        weight_decay: Older setting, see `lr`.
        warmup_steps: Older checkpoints' setting of the default schedule, read only when
            `scheduler` is unset; likewise `total_steps` (None: the trainer's estimate) and
            `min_lr_ratio`. State `scheduler` instead.
        total_steps: Older setting, see `warmup_steps`.
        min_lr_ratio: Older setting, see `warmup_steps`.

    Raises:
        ValueError: On bad settings.
    """

    frozen_parts = ("tokenizer",)
    child_network = "generator"

    def __init__(
        self,
        generator: GeneratorFactory | None = None,
        tokenizer_ckpt: str | None = None,
        tokenizer_spec: dict[str, Any] | None = None,
        budgets: list[float] | None = None,
        candidate_lengths: list[int] | None = None,
        condition_frames: int = 5,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        cfg_scale: float | None = None,
        lr: float | None = None,
        betas: tuple[float, float] | None = None,
        weight_decay: float | None = None,
        warmup_steps: int | None = None,
        total_steps: int | None = None,
        min_lr_ratio: float | None = None,
        generator_spec: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler)
        self.save_hyperparameters()
        tokenizer = self.attach_frozen_tokenizer(tokenizer_ckpt, tokenizer_spec)
        for name, keys, factory in (
            ("optimizer", _OPTIMIZER_KEYS, optimizer),
            ("scheduler", _SCHEDULE_KEYS, scheduler),
        ):
            older = [key for key in keys if self.hparams[key] is not None]
            if factory is not None and older:
                rank_zero_warn(
                    f"GeneratorModule: {', '.join(older)} ignored because `{name}` is given "
                    f"(they shape only the default {name}; state them in `{name}`)"
                )
        geometry = {
            "codebook_size": tokenizer.quantizer.codebook_size,
            "num_blocks": tokenizer.num_blocks,
            "tokens_per_block": tokenizer.tokens_per_block,
        }
        network, self.hparams["generator_spec"] = build_child_network(
            "generator", generator, self.hparams.get("generator"), generator_spec, geometry
        )
        generator = self.generator = network
        self.budgets = list(budgets) if budgets is not None else [0.25, 0.5, 0.75, 1.0]
        if len(self.budgets) != generator.num_budgets or not all(
            0.0 < b <= 1.0 for b in self.budgets
        ):
            raise ValueError(
                f"budgets {self.budgets} must be {generator.num_budgets} fractions in (0, 1] "
                "(one per budget level of the generator)"
            )
        self.candidate_lengths = None if candidate_lengths is None else list(candidate_lengths)
        self._check_candidates(candidate_lengths, "candidate_lengths")
        if generator.prefix_blocks > 0 and not 1 <= condition_frames <= self.tokenizer.num_frames:
            raise ValueError(f"condition_frames must lie in [1, {self.tokenizer.num_frames}]")
        self.condition_frames = condition_frames
        self._checked_budgets = False

    # ------------------------------------------------------------------------ properties
    @property
    def frame_prediction(self) -> bool:
        """True when the generator continues a condition clip instead of a class."""
        return self.generator.prefix_blocks > 0

    @property
    def max_tokens(self) -> int:
        """K * M, the tokens of a clip kept at full length."""
        return self.generator.num_blocks * self.generator.tokens_per_block

    def asked_tokens(self, budget_level: Tensor) -> Tensor:
        """Tokens per clip a budget level asks for, `round(budgets[level] * K * M)`, long `(B,)`."""
        fractions = torch.tensor(self.budgets, device=budget_level.device)[budget_level]
        return (fractions * self.max_tokens).round().long()

    def _check_candidates(self, candidates: Sequence[int] | None, source: str) -> None:
        """Raise ValueError unless ``candidates`` (None: unset) lie in ``[1, M]``."""
        limit = self.generator.tokens_per_block
        if candidates is not None and (
            not candidates or min(candidates) < 1 or max(candidates) > limit
        ):
            raise ValueError(f"{source} {list(candidates)} must lie in [1, {limit}]")

    # ------------------------------------------------------------------------ start-up
    def _datamodule(self) -> Any | None:
        """The trainer's datamodule; None without a trainer or a datamodule."""
        return getattr(self._trainer, "datamodule", None) if self._trainer else None

    def shard_metadata(self, splits: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """The first annotation's ``json`` of every token shard of ``splits``, read once.

        Args:
            splits: Datamodule splits, e.g. ``("train", "val")``.

        Returns:
            Shard -> its first annotation's object (:func:`modules.loading.annotation_metadata`;
            None for a shard that is not local or records none), in the datamodule's order;
            empty without the trainer's datamodule's resolved ``shards``.
        """
        resolved = getattr(self._datamodule(), "shards", None)
        if not isinstance(resolved, Mapping):
            return {}
        shards = [shard for split in splits for shard in resolved.get(split) or []]
        return {shard: annotation_metadata(shard) for shard in shards}

    def resolve_candidate_lengths(
        self, metadata: Mapping[str, Mapping[str, Any] | None] | None = None, adopt: bool = True
    ) -> list[int] | None:
        """Read the scorer's candidate lengths from the token shards' annotations.

        Every annotation records the candidate lengths of the scorer it was made with
        (``callbacks.AnnotationWriter``); all shards that record them must agree. Unset
        ``candidate_lengths`` take them when ``adopt`` (and the hyperparameter saved in the
        checkpoint too); set ones must equal them.

        Args:
            metadata: Shard -> first annotation (:meth:`shard_metadata`); None: the training
                shards'.
            adopt: Take the shards' lengths when unset (fitting); False: only compare set ones
                (testing a trained module).

        Returns:
            The candidate lengths in use (None: none known, so 1..M).

        Raises:
            ValueError: Two shards record different candidate lengths, set
                ``candidate_lengths`` contradict the shards', or the shards' do not lie in
                ``[1, M]`` (each naming the shard).
        """
        if metadata is None:
            metadata = self.shard_metadata(("train",))
        recorded = {
            shard: [int(length) for length in meta["candidate_lengths"]]
            for shard, meta in metadata.items()
            if meta is not None and isinstance(meta.get("candidate_lengths"), list)
        }
        if not recorded:
            return self.candidate_lengths
        first, lengths = next(iter(recorded.items()))
        for shard, other in recorded.items():
            if other != lengths:
                raise ValueError(
                    f"token shard {shard} was annotated with candidate_lengths={other} but "
                    f"{first} with candidate_lengths={lengths}: the shards come from different "
                    "scorers; annotate them all with one"
                )
        if self.candidate_lengths is None:
            if adopt:
                self._check_candidates(lengths, f"token shard {first}: candidate_lengths")
                self.candidate_lengths = lengths
                self.hparams["candidate_lengths"] = lengths
        elif list(self.candidate_lengths) != lengths:
            raise ValueError(
                f"model candidate_lengths={list(self.candidate_lengths)} but token shard "
                f"{first} was annotated with candidate_lengths={lengths}"
            )
        return self.candidate_lengths

    def check_tokenizer_of_shards(
        self,
        splits: Sequence[str],
        metadata: Mapping[str, Mapping[str, Any] | None] | None = None,
    ) -> None:
        """Refuse token shards annotated with another tokenizer than this module's.

        Reads the hash each local shard of `splits` records (the trainer's datamodule's
        resolved `shards`; nothing is checked without them) and compares it with
        `modules.annotator.state_sha256` of the tokenizer, as the annotator computed it (fp32
        weights; under a true half precision the check is skipped with a warning). Shards
        recording no hash are named in a warning.

        Args:
            splits: Datamodule splits whose shards are checked, e.g. `("train", "val")`.
            metadata: Their first annotations, already read (:meth:`shard_metadata` of
                `splits`); None: read here.

        Raises:
            modules.loading.TokenizerMismatchError: A shard records another hash (naming both
                hashes and the fix).
        """
        if metadata is None:
            metadata = self.shard_metadata(splits)
        if not metadata:
            return
        dtypes = {parameter.dtype for parameter in self.tokenizer.parameters()}
        if dtypes != {torch.float32}:
            rank_zero_warn(
                f"GeneratorModule: tokenizer weights are {sorted(map(str, dtypes))}, not the "
                "fp32 weights annotations are hashed from: the token shards' tokenizer hash "
                "is NOT checked"
            )
            return
        recorded = {shard: metadata_tokenizer_sha256(meta) for shard, meta in metadata.items()}
        ckpt = self.hparams.get("tokenizer_ckpt")
        source = f"tokenizer_ckpt={ckpt}" if ckpt else "the tokenizer stored in this generator"
        unchecked = check_tokenizer_matches_shards(state_sha256(self.tokenizer), recorded, source)
        if unchecked:
            rank_zero_warn(
                f"GeneratorModule: {len(unchecked)} token shard(s) (e.g. {unchecked[0]}) record "
                "no tokenizer hash (not local, or annotated elsewhere): whether they were made "
                "with this tokenizer is NOT checked"
            )

    def check_shard_sizes(self) -> None:
        """Refuse token shards of other sizes than the tokenizer's, in one line.

        The trainer's datamodule reads K, M and the codebook size from its first shard
        (``TokenShardsDataModule.spec``); the network is sized by the tokenizer.

        Raises:
            ValueError: Naming the size, the shards' value and the tokenizer's.
        """
        spec = getattr(self._datamodule(), "spec", None)
        if not isinstance(spec, Mapping):
            return
        ours = {
            "num_blocks": self.generator.num_blocks,
            "tokens_per_block": self.generator.tokens_per_block,
            "codebook_size": self.generator.codebook_size,
        }
        for name, value in ours.items():
            if name in spec and int(spec[name]) != value:
                raise ValueError(
                    f"the token shards hold {name}={spec[name]} but the generator's tokenizer "
                    f"has {name}={value}"
                )

    def _check_token_shards(self, splits: Sequence[str], adopt: bool) -> None:
        """Sizes, tokenizer hash and candidate lengths of the shards of ``splits``."""
        self.check_shard_sizes()
        metadata = self.shard_metadata(splits)  # each shard's first annotation, read once
        self.check_tokenizer_of_shards(splits, metadata)
        self.resolve_candidate_lengths(metadata, adopt=adopt)

    @override
    def on_fit_start(self) -> None:
        """Check the training and validation token shards against this module.

        Their sizes must be the tokenizer's, their recorded tokenizer hash this tokenizer's,
        and their candidate lengths agree (unset ``candidate_lengths`` take them).

        Raises:
            ValueError: A size or the candidate lengths disagree (naming the shard).
            modules.loading.TokenizerMismatchError: A shard was annotated with another
                tokenizer.
        """
        self._check_token_shards(("train", "val"), adopt=True)

    @override
    def on_test_start(self) -> None:
        """Check the test token shards against this module, as :meth:`on_fit_start` does.

        Set ``candidate_lengths`` must equal the shards'; unset ones stay unset (1..M).

        Raises:
            ValueError: A size or the candidate lengths disagree (naming the shard).
            modules.loading.TokenizerMismatchError: A shard was annotated with another
                tokenizer.
        """
        self._check_token_shards(("test",), adopt=False)

    # ------------------------------------------------------------------------ training
    def _labels(self, label: Tensor) -> Tensor:
        if self.generator.num_classes == 0:
            return torch.full_like(label, self.generator.null_class)
        if label.numel() and (
            int(label.min()) < 0 or int(label.max()) >= self.generator.num_classes
        ):
            raise ValueError(
                f"labels must lie in [0, {self.generator.num_classes}), got "
                f"[{int(label.min())}, {int(label.max())}]"
            )
        return label

    def _check_budgets(self, batch: dict[str, Any]) -> None:
        if self._checked_budgets or "budget" not in batch:
            return
        expected = torch.tensor(self.budgets, device=batch["budget"].device)[batch["budget_level"]]
        if not torch.allclose(batch["budget"].float(), expected.float(), atol=1e-6):
            raise ValueError(
                f"the data's budget fractions {batch['budget'].tolist()} at levels "
                f"{batch['budget_level'].tolist()} contradict model.budgets={self.budgets}"
            )
        self._checked_budgets = True

    def loss(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Cross-entropy over target positions and the top-1 accuracy there.

        Args:
            batch: A token batch (see the class docstring).

        Returns:
            `(loss, accuracy)` scalars (mean over target tokens of the batch).

        Raises:
            ValueError: On budgets that contradict `budgets`, labels out of range, or a
                batch without any target.
        """
        self._check_budgets(batch)
        logits = self.generator(
            batch["tokens"],
            batch["block_index"],
            batch["block_position"],
            self._labels(batch["label"]),
            batch["budget_level"],
        )
        targets = batch["loss_mask"] & batch["padding_mask"]
        if not bool(targets.any()):
            raise ValueError("the batch holds no target token (loss_mask is all False)")
        chosen = logits[targets].float()
        wanted = batch["tokens"][targets]
        if int(wanted.max()) >= self.generator.vocab.num_outputs:
            raise ValueError("a target is <SEP> or beyond: loss_mask must exclude the prefix")
        loss = F.cross_entropy(chosen, wanted)
        accuracy = (chosen.argmax(-1) == wanted).float().mean()
        return loss, accuracy

    @override
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss, accuracy = self.loss(batch)
        size = batch["tokens"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/accuracy", accuracy, batch_size=size)
        return loss

    @override
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, accuracy = self.loss(batch)
        size = batch["tokens"].shape[0]
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=size)
        self.log("val/accuracy", accuracy, sync_dist=True, batch_size=size)

    @override
    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, accuracy = self.loss(batch)
        size = batch["tokens"].shape[0]
        self.log("test/loss", loss, sync_dist=True, batch_size=size)
        self.log("test/accuracy", accuracy, sync_dist=True, batch_size=size)

    @override
    def optimizer_parameters(self) -> OptimizerParameters:
        """Two unnamed groups: linear weights (decayed) and the rest (`weight_decay` 0)."""
        decay, no_decay = [], []
        linear_weights = {
            id(m.weight) for m in self.generator.modules() if isinstance(m, nn.Linear)
        }
        for parameter in self.generator.parameters():
            if parameter.requires_grad:
                (decay if id(parameter) in linear_weights else no_decay).append(parameter)
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]

    @override
    def default_optimizer(self, parameters: OptimizerParameters) -> torch.optim.Optimizer:
        hparams = self.hparams
        return torch.optim.AdamW(
            parameters,
            lr=6e-4 if hparams.lr is None else hparams.lr,
            betas=(0.9, 0.95) if hparams.betas is None else tuple(hparams.betas),
            weight_decay=0.05 if hparams.weight_decay is None else hparams.weight_decay,
        )

    @override
    def default_scheduler(self, optimizer: torch.optim.Optimizer) -> WarmupCosineLR:
        hparams = self.hparams
        return WarmupCosineLR(
            optimizer,
            warmup_steps=0 if hparams.warmup_steps is None else hparams.warmup_steps,
            total_steps=hparams.total_steps,
            min_lr_ratio=0.01 if hparams.min_lr_ratio is None else hparams.min_lr_ratio,
        )

    # ------------------------------------------------------------------------ generation
    @torch.no_grad()
    def encode_condition(self, video: Tensor) -> Tensor:
        """Codes of the frame-prediction condition of real clips.

        The condition clip (`adaptok.nn.frame_condition.condition_clip`, the one the
        annotator encodes too: the first `condition_frames` frames, the last one repeated to
        the clip length) is encoded by the frozen tokenizer without dropping (argmax codes;
        docs/METHOD.md section 5.3).

        Args:
            video: `(B, C, T, H, W)` in [0, 1], T = the tokenizer's clip length.

        Returns:
            Long `(B, K, M)`.
        """
        codes = self.tokenizer.encode(condition_clip(video, self.condition_frames)).codes
        return codes.view(
            video.shape[0], self.generator.num_blocks, self.generator.tokens_per_block
        )

    @torch.no_grad()
    def sample(
        self,
        label: Tensor,
        budget_level: Tensor,
        *,
        condition_codes: Tensor | None = None,
        total_tokens: Tensor | None = None,
        budget_rule: BudgetRule = "exact",
        grid: bool = False,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        cfg_scale: float | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> SampleOutput:
        """Samples clips' codes and lengths (see `adaptok.nn.sampling.sample`).

        Args:
            label: Long `(B,)` classes (ignored, i.e. null, for frame prediction).
            budget_level: Long `(B,)` budget levels.
            condition_codes: Frame prediction: `(B, K, M)` from `encode_condition`.
            total_tokens: Exact/at-most budget per clip (all K blocks); None: free lengths.
            budget_rule: "exact" or "at_most".
            grid: Close blocks only at `candidate_lengths`.
            temperature: None: the module's default. Likewise `top_k`, `top_p`, `cfg_scale`.
            top_k: Top-k filter.
            top_p: Nucleus filter.
            cfg_scale: Classifier-free guidance scale.
            use_cache: Use the KV cache.
            generator: Random source.

        Returns:
            `SampleOutput`: codes `(B, K, M)`, lengths `(B, K)`.
        """
        was_training = self.generator.training
        self.generator.eval()
        try:
            return sample(
                self.generator,
                self._labels(torch.as_tensor(label, device=self.device).long()),
                torch.as_tensor(budget_level, device=self.device).long(),
                condition_codes=condition_codes,
                temperature=self.hparams.temperature if temperature is None else temperature,
                top_k=self.hparams.top_k if top_k is None else top_k,
                top_p=self.hparams.top_p if top_p is None else top_p,
                cfg_scale=self.hparams.cfg_scale if cfg_scale is None else cfg_scale,
                candidate_lengths=self.candidate_lengths,
                grid=grid,
                total_tokens=total_tokens,
                budget_rule=budget_rule,
                use_cache=use_cache,
                generator=generator,
            )
        finally:
            self.generator.train(was_training)

    @torch.no_grad()
    def decode(self, output: SampleOutput) -> Tensor:
        """Videos `(B, C, T, H, W)` in [0, 1] (clamped) of sampled codes and lengths."""
        self.tokenizer.eval()
        video = self.tokenizer.decode(output.codes.flatten(1), output.lengths)
        return video.float().clamp(0.0, 1.0)
