"""Networks: tokenizer, quantizer, tail-drop sampler, discriminator, prior and building blocks."""

from adaptok.nn.discriminator import Discriminator
from adaptok.nn.masks import causal_mask, decoder_mask, encoder_mask, with_key_padding
from adaptok.nn.pos_embed import sincos_1d, sincos_3d
from adaptok.nn.prior import Prior
from adaptok.nn.quantizer import QuantizerOutput, StochasticQuantizer
from adaptok.nn.scorer import BlockCausalScorer
from adaptok.nn.tail_drop import TailDropSampler, keep_mask
from adaptok.nn.tokenizer import (
    AdapTokTokenizer,
    StreamingEncoder,
    TokenizerEncoding,
    TokenizerOutput,
)
from adaptok.nn.transformer import LayerKVCache, TransformerBlock, TransformerStack

__all__ = [
    "AdapTokTokenizer",
    "BlockCausalScorer",
    "Discriminator",
    "LayerKVCache",
    "Prior",
    "QuantizerOutput",
    "StochasticQuantizer",
    "StreamingEncoder",
    "TailDropSampler",
    "TokenizerEncoding",
    "TokenizerOutput",
    "TransformerBlock",
    "TransformerStack",
    "causal_mask",
    "decoder_mask",
    "encoder_mask",
    "keep_mask",
    "sincos_1d",
    "sincos_3d",
    "with_key_padding",
]
