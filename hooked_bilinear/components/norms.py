"""LayerNorm / RMSNorm variants with TransformerLens hooks (`hook_scale`, `hook_normalized`).

`hook_scale` is the per-position σ that the circuit extractor freezes: after folding, every norm
is the linear map `C x / σ` (C = centering for LN, identity for RMS), see spec §3.
"""

from __future__ import annotations

from typing import Optional

import torch
from jaxtyping import Float
from torch import Tensor, nn

from hooked_bilinear.hook_point import HookPoint
from hooked_bilinear.config import HookedBilinearConfig


class _Norm(nn.Module):
    center: bool = False
    has_weight: bool = False
    has_bias: bool = False

    def __init__(self, cfg: HookedBilinearConfig, length: Optional[int] = None):
        super().__init__()
        self.cfg = cfg
        self.eps = cfg.eps
        length = length or cfg.d_model
        if self.has_weight:
            self.w = nn.Parameter(torch.ones(length, dtype=cfg.dtype))
        if self.has_bias:
            self.b = nn.Parameter(torch.zeros(length, dtype=cfg.dtype))
        self.hook_scale = HookPoint()  # [batch, pos, 1]
        self.hook_normalized = HookPoint()  # [batch, pos, length]

    def forward(self, x: Float[Tensor, "batch pos length"]) -> Float[Tensor, "batch pos length"]:
        if self.center:
            x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        x = x / scale
        if self.has_weight:
            x = x * self.w
        if self.has_bias:
            x = x + self.b
        return self.hook_normalized(x)


class LayerNorm(_Norm):
    """`(x - mean) / σ * w + b` with `σ = sqrt(var + eps)`."""

    center, has_weight, has_bias = True, True, True


class LayerNormPre(_Norm):
    """LayerNorm without weights (what `fold_layer_norm` leaves behind)."""

    center = True


class RMSNorm(_Norm):
    """`x / sqrt(mean(x²) + eps) * w`."""

    has_weight = True


class RMSNormPre(_Norm):
    """Weightless RMSNorm (the norm of the public Dooms et al. models, eps 1e-8)."""


NORMS = {"LN": LayerNorm, "LNPre": LayerNormPre, "RMS": RMSNorm, "RMSPre": RMSNormPre}


def make_norm(cfg: HookedBilinearConfig) -> Optional[nn.Module]:
    """The norm module for `cfg.normalization_type`, or None for no normalisation."""
    if cfg.normalization_type is None:
        return None
    return NORMS[cfg.normalization_type](cfg)
