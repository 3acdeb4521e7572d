"""StageModule: what the training stages (tokenizer, scorer, generator) have in common.

Each stage is a LightningModule that

- saves checkpoints without its frozen metric networks (LPIPS, I3D) and puts them back from
  the freshly built module when loading (:func:`modules.loading.drop_frozen_metric_weights`);
- may hold a frozen parent tokenizer, read from the tokenizer stage's checkpoint on the first
  run and rebuilt from the spec in its own checkpoint afterwards (``tokenizer_spec``);
- gives the run's datamodule its tokenizer's clip size in ``setup``
  (:func:`configure_data_clip`: the data sections do not restate ``num_frames`` /
  ``resolution``);
- keeps its frozen parts in eval mode while training (Lightning switches the whole module to
  train mode at every epoch);
- may start a fresh fit of its own network from released weights (``init_weights``: an
  export or a suite checkpoint, :meth:`StageModule.load_init_weights`);
- builds its optimizer from an ``OptimizerCallable`` (``optimizer:`` in the YAML, or the
  stage's default) and its learning-rate schedule from an ``LRSchedulerCallable``
  (``scheduler:``), stepped every optimizer step; a schedule left without ``total_steps``
  (``adaptok.schedules.WarmupCosineLR``) gets the trainer's estimate of the run's steps.

A stage names its trainable parameters (:meth:`StageModule.optimizer_parameters`), its default
optimizer (:meth:`StageModule.default_optimizer`) and, if it has one, its default schedule
(:meth:`StageModule.default_scheduler`); :meth:`StageModule.configure_optimizers` does the
rest. A stage with several optimizers (the tokenizer's generator and discriminator) overrides
``configure_optimizers`` and calls :meth:`StageModule.step_schedule` for each.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from adaptok.nn.tokenizer import AdapTokTokenizer
from adaptok.pretrained import initialise_network
from adaptok.provenance import training_record
from adaptok.schedules import fill_total_steps
from modules.loading import (
    CheckpointError,
    drop_frozen_metric_weights,
    frozen_tokenizer,
    instantiator_spec_overrides,
    restore_frozen_metric_weights,
)

__all__ = ["OptimizerParameters", "StageModule", "configure_data_clip"]

OptimizerParameters = list[torch.nn.Parameter] | list[dict[str, Any]]
"""What an optimizer factory receives: parameters, or parameter groups (dicts with ``params``)."""


def configure_data_clip(module: LightningModule) -> None:
    """Give the trainer's datamodule the clip size of ``module.tokenizer``.

    A datamodule with a ``configure_clip(num_frames, resolution)`` method
    (``VideoShardsDataModule``, ``VideoWindowsDataModule``) adopts the tokenizer's
    ``num_frames`` / ``image_size`` where unset and refuses a contradicting one. Call it from
    the module's ``setup``: Lightning runs the datamodule's ``setup`` (shards only) before it
    and builds the loaders after it. Does nothing without a trainer, a datamodule with that
    method, or a tokenizer.

    Raises:
        ValueError: The datamodule states another clip size than the tokenizer's.
    """
    trainer = module._trainer
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    tokenizer = getattr(module, "tokenizer", None)
    if tokenizer is None or not hasattr(datamodule, "configure_clip"):
        return
    datamodule.configure_clip(int(tokenizer.num_frames), int(tokenizer.image_size))


class StageModule(LightningModule):
    """Base of the training stages: checkpoints, frozen parent, optimizer and schedule.

    Subclasses call ``super().__init__(optimizer, scheduler)`` and then
    ``self.save_hyperparameters()`` in their own ``__init__``.

    Args:
        optimizer: Optimizer factory, called with :meth:`optimizer_parameters`; ``None``: the
            stage's :meth:`default_optimizer`.
        scheduler: Learning-rate schedule factory, called with the optimizer and stepped
            every optimizer step; ``None``: the stage's :meth:`default_scheduler` (no schedule
            unless the stage has one).

    Attributes:
        frozen_parts: Names of the submodules put back into eval mode at the start of every
            training epoch (a frozen parent network, metric networks).
        tokenizer: The stage's tokenizer (trained by the tokenizer stage, a frozen parent of
            the later ones).
        child_network: Name of the network the stage builds from a factory and the
            tokenizer's geometry (``scorer``, ``generator``; its resolved spec is saved as
            ``<name>_spec``), or None.
    """

    frozen_parts: tuple[str, ...] = ()
    child_network: str | None = None
    tokenizer: AdapTokTokenizer

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Lightning's ``load_from_checkpoint``, also for checkpoints older than ``<name>_spec``.

        Such a checkpoint holds the whole spec of :attr:`child_network` under its name:
        without a CLI instantiator the spec reaches ``__init__`` as is
        (``build_child_network`` checks its geometry against the tokenizer); with one, its
        own arguments and the spec are given as overrides first
        (``modules.loading.instantiator_spec_overrides``). Explicit ``kwargs`` win.
        """
        overrides = {}
        if cls.child_network is not None:
            overrides = instantiator_spec_overrides(checkpoint_path, cls.child_network)
        return super().load_from_checkpoint(checkpoint_path, *args, **{**overrides, **kwargs})

    def __init__(
        self,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler

    # ------------------------------------------------------------------ frozen parent
    def attach_frozen_tokenizer(
        self, tokenizer_ckpt: str | None, tokenizer_spec: Mapping[str, Any] | None
    ) -> AdapTokTokenizer:
        """Hold the frozen parent tokenizer as ``self.tokenizer`` and record its spec.

        Call after ``save_hyperparameters``: the spec goes into the ``tokenizer_spec``
        hyperparameter, so the stage's checkpoint rebuilds the tokenizer without the file
        ``tokenizer_ckpt`` names (see :func:`modules.loading.frozen_tokenizer`).

        Args:
            tokenizer_ckpt: A stage checkpoint holding the tokenizer (first training run).
            tokenizer_spec: The spec saved in this stage's own checkpoint (restoring); wins
                over ``tokenizer_ckpt``.

        Returns:
            AdapTokTokenizer: The frozen tokenizer (also ``self.tokenizer``).

        Raises:
            ValueError: Neither argument is given.
        """
        tokenizer, self.hparams["tokenizer_spec"] = frozen_tokenizer(tokenizer_ckpt, tokenizer_spec)
        self.tokenizer = tokenizer
        return tokenizer

    @override
    def setup(self, stage: str) -> None:
        """Give the run's datamodule the tokenizer's clip size (:func:`configure_data_clip`).

        Subclasses that override it call ``super().setup(stage)`` first.
        """
        configure_data_clip(self)

    # ------------------------------------------------------------------ initial weights
    def load_init_weights(
        self, stage: str, name: str, source: str | None, spec: Mapping[str, Any] | None
    ) -> dict[str, Any] | None:
        """Copy network ``name``'s weights from ``source`` when a fresh fit starts.

        Call from ``setup`` after ``super().setup(stage)``: before the strategy wraps or shards
        the model. Nothing is copied outside ``fit``, without a source, or when the fit resumes
        (``ckpt_path``: its checkpoint is restored after this hook, so its own weights win
        either way). The source's spec of the network must equal ``spec``
        (:func:`adaptok.pretrained.initialise_network`). When it records the fingerprint of
        its training shards (an export does) and this run's ``train_urls`` hold other bytes,
        rank zero warns and the fit goes on.

        Args:
            stage: The ``setup`` stage (``fit``, ``validate``, ``test``, ``predict``).
            name: The network to fill: this module's attribute and the source's network of
                that name (``tokenizer``, ``scorer``).
            source: The ``init_weights`` argument: an export folder or a suite checkpoint, or
                None (train from scratch).
            spec: This run's spec of the network (compared with the stored one), or None.

        Returns:
            dict[str, Any] | None: The source's info (``training_data``, a scorer's ``metric``,
            ...) when the weights were copied, else None.

        Raises:
            modules.loading.CheckpointError: Nothing at ``source``, a source without that
                network, another spec or mismatching weights (one line, naming
                ``model.init_args.init_weights``).
        """
        if stage != "fit" or source is None or self.trainer.ckpt_path is not None:
            return None
        try:
            info = initialise_network(getattr(self, name), name, source, spec)
        except (FileNotFoundError, ValueError) as error:
            raise CheckpointError(
                f"model.init_args.init_weights: {error} (the demo's weights are made by "
                "`make demo-weights`; without them train from scratch: leave init_weights unset)"
            ) from error
        self._warn_about_other_training_data(source, info.get("training_data"))
        return info

    def _warn_about_other_training_data(
        self, source: str, trained_on: Mapping[str, Any] | None
    ) -> None:
        """Warn (rank zero) when this run trains on shards the weights were not trained on.

        Shards are compared by their bytes (SHA-256, :func:`adaptok.provenance.shard_fingerprint`):
        a run on the same shards, or on some of them (the demo fine-tunes its scorer on the
        tokenizer's shards without the scorer's extra ones), is quiet. A record without
        per-file digests is compared by its combined fingerprint.

        Args:
            source: The ``init_weights`` the record comes from (named in the warning).
            trained_on: The source's ``training_data`` record, or None (nothing to compare).
        """
        if not (self.trainer.is_global_zero and trained_on and trained_on.get("fingerprint")):
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        urls = None if datamodule is None else datamodule.hparams.get("train_urls")
        current = training_record(urls, "fit start")
        if current is None or current["fingerprint"] in (None, trained_on["fingerprint"]):
            return
        seen = trained_on.get("files")
        if seen:
            known = set(seen.values())
            unseen = [path for path, digest in current["files"].items() if digest not in known]
            if not unseen:
                return
            what = (
                f"{len(unseen)} of this run's {len(current['files'])} train shards (first: "
                f"{unseen[0]}) hold bytes that none of the {len(seen)} shards they were trained "
                "on held"
            )
        else:
            what = (
                f"this run's train shards hold other bytes (fingerprint "
                f"{trained_on['fingerprint'][:12]} vs {current['fingerprint'][:12]})"
            )
        rank_zero_warn(
            f"init_weights {source!r} were trained on other shards: {what}; other data, or the "
            "same data encoded by another PyAV/x264 build; fine-tuning goes on (for the demo: "
            "`make demo-data` rebuilds the shards, `make demo-weights` retrains the weights)"
        )

    @override
    def on_train_epoch_start(self) -> None:
        for name in self.frozen_parts:
            getattr(self, name).eval()

    # ------------------------------------------------------------------ checkpoints
    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        drop_frozen_metric_weights(self, checkpoint)

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        restore_frozen_metric_weights(self, checkpoint)

    # ------------------------------------------------------------------ optimisation
    def optimizer_parameters(self) -> OptimizerParameters:
        """What the (first) optimizer trains: parameters or parameter groups.

        Returns:
            OptimizerParameters: Given to the optimizer factory as its only argument.
        """
        raise NotImplementedError(f"{type(self).__name__} does not name its parameters")

    def default_optimizer(self, parameters: OptimizerParameters) -> torch.optim.Optimizer:
        """The optimizer used when the ``optimizer`` argument is unset.

        Args:
            parameters: From :meth:`optimizer_parameters`.

        Returns:
            torch.optim.Optimizer: The stage's default optimizer.
        """
        raise NotImplementedError(f"{type(self).__name__} has no default optimizer")

    def default_scheduler(
        self, optimizer: torch.optim.Optimizer
    ) -> torch.optim.lr_scheduler.LRScheduler | None:
        """The schedule used when the ``scheduler`` argument is unset (default: none).

        Args:
            optimizer: The optimizer to schedule.

        Returns:
            torch.optim.lr_scheduler.LRScheduler | None: A schedule stepped every optimizer
            step, or ``None`` for a constant learning rate.
        """
        return None

    def step_schedule(
        self, optimizer: torch.optim.Optimizer, factory: LRSchedulerCallable | None
    ) -> dict[str, Any] | None:
        """Build a schedule for ``optimizer``, stepped every optimizer step.

        A schedule with ``total_steps=None`` gets the trainer's estimate of the run's
        optimizer steps (the estimate is asked for only then).

        Args:
            optimizer: The optimizer to schedule.
            factory: Builds the schedule from the optimizer; may return ``None``.

        Returns:
            dict[str, Any] | None: Lightning's ``lr_scheduler`` configuration
            (``{"scheduler": ..., "interval": "step"}``), or ``None`` without a schedule.

        Raises:
            ValueError: The schedule needs the run's length and the trainer cannot tell it.
        """
        scheduler = None if factory is None else factory(optimizer)
        if scheduler is None:
            return None
        if getattr(scheduler, "total_steps", 0) is None:
            fill_total_steps(scheduler, self.trainer.estimated_stepping_batches)
        return {"scheduler": scheduler, "interval": "step"}

    @override
    def configure_optimizers(self) -> Any:
        make_optimizer = self.optimizer_factory or self.default_optimizer
        optimizer = make_optimizer(self.optimizer_parameters())
        schedule = self.step_schedule(optimizer, self.scheduler_factory or self.default_scheduler)
        if schedule is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": schedule}
