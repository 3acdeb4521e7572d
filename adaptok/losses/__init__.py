"""Losses: adversarial, the combined tokenizer loss, and per-block quality costs."""

from adaptok.losses.adversarial import (
    LeCamRegularizer,
    discriminator_adversarial_loss,
    generator_adversarial_loss,
)
from adaptok.losses.block_quality import (
    BlockQuality,
    measure_block_costs,
    measure_cost_table,
    select_block_frames,
)
from adaptok.losses.scorer_loss import scorer_loss
from adaptok.losses.tokenizer_loss import NonFiniteLossError, TokenizerLoss

__all__ = [
    "BlockQuality",
    "LeCamRegularizer",
    "NonFiniteLossError",
    "TokenizerLoss",
    "discriminator_adversarial_loss",
    "generator_adversarial_loss",
    "measure_block_costs",
    "measure_cost_table",
    "scorer_loss",
    "select_block_frames",
]
