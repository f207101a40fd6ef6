"""Building blocks of the hooked bilinear transformer, one concept per file."""

from hooked_bilinear.components.attention import Attention
from hooked_bilinear.components.bilinear_attention import BilinearAttention
from hooked_bilinear.components.bilinear_mlp import BilinearMLP
from hooked_bilinear.components.block import TransformerBlock
from hooked_bilinear.components.embed import Embed, PosEmbed, Unembed
from hooked_bilinear.components.norms import ChannelScale, LayerNorm, LayerNormPre, RMSNorm, RMSNormPre, make_norm

__all__ = [
    "Attention",
    "BilinearAttention",
    "BilinearMLP",
    "ChannelScale",
    "Embed",
    "LayerNorm",
    "LayerNormPre",
    "PosEmbed",
    "RMSNorm",
    "RMSNormPre",
    "TransformerBlock",
    "Unembed",
    "make_norm",
]
