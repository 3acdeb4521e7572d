"""Networks: tokenizer, quantizer, tail-drop sampler, discriminator, prior and building blocks."""

from adaptok.nn.discriminator import DISCRIMINATOR_GEOMETRY, Discriminator, DiscriminatorFactory
from adaptok.nn.generator import ARGenerator, GeneratorKVCache
from adaptok.nn.generator_sequence import (
    GeneratorVocab,
    build_sequence,
    collate_sequences,
    parse_sequence,
)
from adaptok.nn.masks import causal_mask, decoder_mask, encoder_mask, with_key_padding
from adaptok.nn.pos_embed import sincos_1d, sincos_3d
from adaptok.nn.prior import Prior
from adaptok.nn.quantizer import QuantizerOutput, StochasticQuantizer
from adaptok.nn.sampling import SampleOutput, sample
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
    "ARGenerator",
    "AdapTokTokenizer",
    "BlockCausalScorer",
    "DISCRIMINATOR_GEOMETRY",
    "Discriminator",
    "DiscriminatorFactory",
    "GeneratorKVCache",
    "GeneratorVocab",
    "LayerKVCache",
    "Prior",
    "QuantizerOutput",
    "SampleOutput",
    "StochasticQuantizer",
    "StreamingEncoder",
    "TailDropSampler",
    "TokenizerEncoding",
    "TokenizerOutput",
    "TransformerBlock",
    "TransformerStack",
    "build_sequence",
    "causal_mask",
    "collate_sequences",
    "decoder_mask",
    "encoder_mask",
    "keep_mask",
    "parse_sequence",
    "sample",
    "sincos_1d",
    "sincos_3d",
    "with_key_padding",
]
