"""TokenizerModule: trains an AdapTok tokenizer with block-wise tail dropping.

Wiring only: the networks (tokenizer, loss with its discriminator and optional prior, and the
tail-drop sampler) are injected from YAML; this class owns the manual G/D optimisation loop,
the prior's learning-rate group and the prior's scheduled-sampling progress. The tokenizer's
geometry is stated once, in its own ``init_args``: the discriminator's clip geometry and the
tail drop's ``max_tokens`` are derived from it here.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from typing_extensions import override

from adaptok.losses.tokenizer_loss import TokenizerLoss
from adaptok.metrics.frame_quality import psnr_per_video
from adaptok.metrics.token_diagnostics import block_mean_baseline, code_diagnostics
from adaptok.nn.tail_drop import TailDropSampler
from adaptok.nn.tokenizer import AdapTokTokenizer
from modules.loading import instantiator_spec_overrides
from modules.stage import OptimizerParameters, StageModule

__all__ = ["TokenizerModule"]


class TokenizerModule(StageModule):
    """Manual optimisation of the tokenizer (generator) and the loss's discriminator.

    Geometry: the discriminator judges the tokenizer's clips, so its ``num_frames``,
    ``image_size``, ``in_channels`` and ``patch_size`` are the tokenizer's: the loss's
    ``discriminator`` is a factory (:data:`adaptok.nn.DiscriminatorFactory`; the YAML gives
    its ``class_path`` and only its own ``init_args``) built here with the tokenizer's values
    (:meth:`adaptok.losses.TokenizerLoss.build_discriminator`). The tail drop's ``max_tokens``
    left null is the tokenizer's ``tokens_per_block`` (:meth:`TailDropSampler.resolve`). The
    checkpoint records the loss's own settings next to the tokenizer's spec, and restoring
    derives the same geometry again; the weights keep their names (``loss.discriminator.*``).

    Args:
        tokenizer: The block-causal 1D tokenizer.
        loss: L1 + LPIPS + GAN + VQ (+ prior) loss; owns the discriminator, built here from
            its factory with the tokenizer's geometry.
        tail_drop: Samples the kept tokens per sample and block during training;
            ``max_tokens`` null (the default) becomes the tokenizer's ``tokens_per_block``.
        optimizer: Generator optimizer factory (default Adam lr 1e-4, betas (0.5, 0.9)).
        disc_optimizer: Discriminator optimizer factory (default Adam lr 3e-5, betas (0.5, 0.9)).
        scheduler: Generator LR schedule, stepped every batch (e.g. ``adaptok.schedules.WarmupCosineLR``).
        disc_scheduler: Discriminator LR schedule, stepped with each discriminator update.
        grad_clip_norm: Gradient-norm clip applied inside the step (Lightning refuses
            ``gradient_clip_val`` with manual optimisation); ``None`` disables it (the
            official code does not clip: ``clip_grad_max_norm: 0.0``).
        val_tokens_per_block: Kept tokens per block at validation (``None``: all).
        prior_lr_mult: The prior's parameters form their own parameter group of the generator
            optimizer with ``lr = prior_lr_mult x`` the optimizer's lr (schedules scale both
            groups alike). The official training script passes ``optimizer.prior_lr_mult 50``.
        init_weights: An export folder (``adaptok export``) or suite checkpoint whose tokenizer
            weights a fit starts from, e.g. the committed demo weights
            ``pretrained/demo-tokenizer`` (docs/demo_weights.md). Loaded in ``setup("fit")``
            (before the strategy wraps the model; a resumed fit restores its own weights after
            it); its tokenizer spec must agree with this one's; training shards with other
            bytes than the ones it was trained on (content fingerprint) give a warning.

    Raises:
        ValueError: ``prior_lr_mult`` not positive; ``tail_drop.max_tokens`` (or
            ``min_tokens``) larger than the tokenizer's ``tokens_per_block``; a discriminator
            factory that states a geometry argument itself (each names both values).
    """

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Lightning's ``load_from_checkpoint``, also for checkpoints that restate geometry.

        A checkpoint written by LightningCLI before the discriminator's geometry was derived
        states the tokenizer's geometry in the loss's discriminator ``init_args``, which the
        parser now refuses: the loss is given without it as an override
        (``modules.loading.upgrade_network_specs``, which checks the stated values against
        the tokenizer's). Explicit ``kwargs`` win.

        Raises:
            modules.loading.CheckpointError: The old checkpoint's discriminator geometry is
                not its tokenizer's.
        """
        overrides = instantiator_spec_overrides(checkpoint_path, "loss")
        return super().load_from_checkpoint(checkpoint_path, *args, **{**overrides, **kwargs})

    def __init__(
        self,
        tokenizer: AdapTokTokenizer,
        loss: TokenizerLoss,
        tail_drop: TailDropSampler,
        optimizer: OptimizerCallable | None = None,
        disc_optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        disc_scheduler: LRSchedulerCallable | None = None,
        grad_clip_norm: float | None = 1.0,
        val_tokens_per_block: int | None = None,
        prior_lr_mult: float = 1.0,
        init_weights: str | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler)
        if not prior_lr_mult > 0:
            raise ValueError(f"prior_lr_mult must be > 0, got {prior_lr_mult}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.tokenizer = tokenizer
        loss.build_discriminator(
            tokenizer.num_frames, tokenizer.image_size, tokenizer.in_channels, tokenizer.patch_size
        )
        self.loss = loss
        self.tail_drop = tail_drop.resolve(tokenizer.tokens_per_block)
        self.disc_optimizer_factory = disc_optimizer
        self.disc_scheduler_factory = disc_scheduler
        self.grad_clip_norm = grad_clip_norm
        tokenizer.check_lengths(
            self._full_lengths(1, "cpu", val_tokens_per_block), 1, tokenizer.num_blocks
        )
        self.val_tokens_per_block = val_tokens_per_block
        self.prior_lr_mult = prior_lr_mult
        self.init_weights = init_weights
        # Batches trained so far; global_step counts optimizer steps (2 per batch with G + D).
        self.register_buffer("train_batches", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------ initial weights
    @override
    def setup(self, stage: str) -> None:
        """Give the datamodule the tokenizer's clip size; a fresh fit loads ``init_weights``.

        Raises:
            modules.loading.CheckpointError: ``init_weights`` cannot start this tokenizer
                (:meth:`~modules.stage.StageModule.load_init_weights`).
        """
        super().setup(stage)  # the datamodule's clip size: the tokenizer's
        spec = self.hparams.get("tokenizer")
        self.load_init_weights(
            stage, "tokenizer", self.init_weights, spec if isinstance(spec, dict) else None
        )

    # ------------------------------------------------------------------ optimisers
    def _generator_parameters(self) -> list[torch.nn.Parameter]:
        disc = self.loss.discriminator
        disc_ids = {id(p) for p in disc.parameters()} if disc is not None else set()
        return [p for p in self.parameters() if p.requires_grad and id(p) not in disc_ids]

    @override
    def optimizer_parameters(self) -> OptimizerParameters:
        """Generator parameter groups: one, or with a prior ``main`` and ``prior`` (its own lr)."""
        parameters = self._generator_parameters()
        prior = self.tokenizer.prior
        if prior is None:  # one unnamed group: the learning-rate monitor logs `lr-<Optimizer>`
            return [{"params": parameters}]
        prior_ids = {id(p) for p in prior.parameters()}
        return [
            {"params": [p for p in parameters if id(p) not in prior_ids], "name": "main"},
            {"params": [p for p in parameters if id(p) in prior_ids], "name": "prior"},
        ]

    @override
    def default_optimizer(self, parameters: OptimizerParameters) -> torch.optim.Optimizer:
        return torch.optim.Adam(parameters, lr=1e-4, betas=(0.5, 0.9))

    @staticmethod
    def default_disc_optimizer(parameters: OptimizerParameters) -> torch.optim.Optimizer:
        """The discriminator's optimizer when ``disc_optimizer`` is unset."""
        return torch.optim.Adam(parameters, lr=3e-5, betas=(0.5, 0.9))

    @override
    def configure_optimizers(self) -> Any:
        make_g = self.optimizer_factory or self.default_optimizer
        opt_g = make_g(self.optimizer_parameters())
        for group in opt_g.param_groups:  # before the schedules record their initial lr
            if group.get("name") == "prior":
                group["lr"] = opt_g.defaults["lr"] * self.prior_lr_mult
        optimizers = [opt_g]
        # stepped once per batch (generator steps): the trainer's estimate counts them
        schedules = [self.step_schedule(opt_g, self.scheduler_factory)]
        if self.loss.discriminator is not None:
            make_d = self.disc_optimizer_factory or self.default_disc_optimizer
            opt_d = make_d(list(self.loss.discriminator.parameters()))
            optimizers.append(opt_d)
            schedules.append(self.step_schedule(opt_d, self.disc_scheduler_factory))
        return optimizers, [schedule for schedule in schedules if schedule is not None]

    def _as_list(self, value: Any) -> list[Any]:
        if value is None:
            return []
        return list(value) if isinstance(value, list | tuple) else [value]

    @staticmethod
    def _step_schedulers(schedulers: list[Any], optimizer: Any) -> None:
        """Step the schedulers that drive ``optimizer`` (a LightningOptimizer)."""
        for scheduler in schedulers:
            if scheduler.optimizer is optimizer.optimizer:
                scheduler.step()

    # ------------------------------------------------------------------ steps
    def _full_lengths(self, batch_size: int, device: Any, per_block: int | None) -> torch.Tensor:
        count = self.tokenizer.tokens_per_block if per_block is None else per_block
        return torch.full(
            (batch_size, self.tokenizer.num_blocks), count, dtype=torch.long, device=device
        )

    @override
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        video = batch["video"]
        step = int(self.train_batches.item())
        optimizers = self._as_list(self.optimizers())
        schedulers = self._as_list(self.lr_schedulers())
        lengths = self.tail_drop.sample(
            video.shape[0], self.tokenizer.num_blocks, device=video.device
        )
        prior = self.tokenizer.prior
        if prior is not None:  # scheduled sampling ramps with the share of training done
            total = self.trainer.estimated_stepping_batches
            prior.progress = step / total if math.isfinite(total) and total > 0 else 1.0
        output = self.tokenizer(video, lengths)

        gen_loss, gen_terms = self.loss.generator_loss(video, output, step)
        opt_g = optimizers[0]
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(gen_loss)
        if self.grad_clip_norm is not None:
            self.clip_gradients(
                opt_g, gradient_clip_val=self.grad_clip_norm, gradient_clip_algorithm="norm"
            )
        opt_g.step()
        self._step_schedulers(schedulers, opt_g)

        logs = {f"train/{name}": value.detach() for name, value in gen_terms.items()}
        if len(optimizers) > 1:
            disc_loss, disc_terms = self.loss.discriminator_loss(video, output.recon.detach(), step)
            if disc_loss is not None:
                opt_d = optimizers[1]
                opt_d.zero_grad(set_to_none=True)
                self.manual_backward(disc_loss)
                if self.grad_clip_norm is not None:
                    self.clip_gradients(
                        opt_d, gradient_clip_val=self.grad_clip_norm, gradient_clip_algorithm="norm"
                    )
                opt_d.step()
                self._step_schedulers(schedulers, opt_d)
            logs.update(
                {f"train/disc_{name}": value.detach() for name, value in disc_terms.items()}
            )
        with torch.no_grad():
            psnr = psnr_per_video(video.clamp(0, 1), output.recon.detach().clamp(0, 1)).mean()
        logs["train/psnr"] = psnr
        logs["train/mean_tokens_per_block"] = lengths.float().mean()
        # Share of the codebook used by the kept tokens of this batch: a collapse detector.
        used = output.codes[output.keep].unique().numel()
        logs["train/code_usage"] = torch.tensor(used / self.tokenizer.quantizer.codebook_size)
        # What one block's tokens say (batch-level usage hides a per-block collapse): the
        # encoder's codes of all M tokens, every log_every_n_steps batches (it syncs the device).
        if step % max(1, self.trainer.log_every_n_steps) == 0:
            stats = code_diagnostics(
                output.codes,
                self.tokenizer.tokens_per_block,
                self.tokenizer.quantizer.codebook_size,
            )
            logs["train/distinct_codes_per_block"] = torch.tensor(stats.distinct_per_block)
            logs["train/codebook_perplexity"] = torch.tensor(stats.codebook_perplexity)
        self.log_dict(logs, prog_bar=False, on_step=True, on_epoch=False)
        self.log("train/loss", gen_loss.detach(), prog_bar=True, on_step=True, on_epoch=False)
        self.train_batches += 1

    def _evaluation_step(
        self, batch: dict[str, Any], batch_idx: int, split: str
    ) -> dict[str, torch.Tensor]:
        video = batch["video"]
        lengths = self._full_lengths(video.shape[0], video.device, self.val_tokens_per_block)
        encoding = self.tokenizer.encode(video)
        recon = self.tokenizer.decode(encoding.codes, lengths).clamp(0, 1)
        size = video.shape[0]
        self.log(f"{split}/l1", (recon - video).abs().mean(), sync_dist=True, batch_size=size)
        # Trivial baselines on the same clips, next to the tokenizer's own PSNR and codes.
        psnr = psnr_per_video(video, recon)
        mean_colour = psnr_per_video(
            video, block_mean_baseline(video, self.tokenizer.frames_per_block)
        )
        stats = code_diagnostics(
            encoding.codes, self.tokenizer.tokens_per_block, self.tokenizer.quantizer.codebook_size
        )
        figures = {
            "psnr_mean_colour_baseline": mean_colour.mean(),
            "psnr_gain_over_mean_colour": (psnr - mean_colour).mean(),
            "beats_mean_colour": (psnr > mean_colour).float().mean(),
            "distinct_codes_per_block": torch.tensor(stats.distinct_per_block),
            # over this batch's clips only (at most batch x K values per position)
            "position_perplexity_batch": stats.position_perplexity.mean(),
        }
        for name, value in figures.items():
            self.log(f"{split}/{name}", value.to(video.device), sync_dist=True, batch_size=size)
        return {"real": video, "fake": recon}

    @override
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._evaluation_step(batch, batch_idx, "val")

    @override
    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._evaluation_step(batch, batch_idx, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Return the codes of every token plus the keys, for annotation writers."""
        encoding = self.tokenizer.encode(batch["video"])
        return {"key": batch.get("key"), "codes": encoding.codes}
