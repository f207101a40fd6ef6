"""LayerNorm / RMSNorm variants with TransformerLens hooks (`hook_scale`, `hook_normalized`).

`hook_scale` is the per-position σ that the circuit extractor freezes: after folding, every norm
is the linear map `C x / σ` (C = centering for LN, identity for RMS), see spec §3.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from hooked_bilinear.hook_point import HookPoint
from hooked_bilinear.config import HookedBilinearConfig


def _is_hooked(hook: HookPoint) -> bool:
    return bool(hook._forward_hooks or hook._forward_pre_hooks or hook._backward_hooks or hook._backward_pre_hooks)


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
        if not _is_hooked(self.hook_scale):
            fused = self._fused(x)
            if fused is not None:
                return self.hook_normalized(fused)
        centered = x - x.mean(-1, keepdim=True) if self.center else x
        sigma = self._sigma(centered)
        version = None if sigma.is_inference() else sigma._version
        scale = self.hook_scale(sigma)
        if scale is sigma and version is not None and sigma._version == version:
            # The hooks only read σ (caching does): none replaced it, edited it in place or wrapped it
            # for a backward hook. The output is then the unhooked forward's, bit for bit, without
            # three temporaries that otherwise churn the allocator while a cache grows.
            del centered  # freed before the fused kernel allocates its output
            fused = self._fused(x)
            if fused is not None:
                return self.hook_normalized(fused)
            centered = x - x.mean(-1, keepdim=True) if self.center else x  # no fused kernel (old torch)
        out = centered / scale
        if self.has_weight:
            out = out * self.w
        if self.has_bias:
            out = out + self.b
        return self.hook_normalized(out)

    def _sigma(self, centered: Tensor) -> Tensor:
        """`sqrt(mean(centred²) + eps)` per position, [batch, pos, 1], as one reduction with no further
        [batch, pos, length] temporary (temporaries churn the allocator while a cache grows). `torch.var`
        would not need `centered`, but on CPU it is ~20x slower (1.6 ms against 86 µs at [8, 128, 256])."""
        ms = torch.linalg.vector_norm(centered, dim=-1, keepdim=True).square() / centered.shape[-1]
        return (ms + self.eps).sqrt()

    def _fused(self, x: Tensor) -> Optional[Tensor]:
        """The same norm as one fused kernel, or None where torch has none (rms_norm needs torch >= 2.4).

        Used when nothing listens on hook_scale (σ then never has to exist as a tensor) or when its
        hooks only read σ: the manual path reads x five times and writes four temporaries, and the
        norms were most of the forward overhead against a plain module. Agrees with the manual path
        to float rounding (~1e-7 relative).
        """
        w = self.w if self.has_weight else None
        if self.center:
            return F.layer_norm(x, x.shape[-1:], w, self.b if self.has_bias else None, self.eps)
        if self.has_bias or not hasattr(F, "rms_norm"):
            return None
        return F.rms_norm(x, x.shape[-1:], w, self.eps)


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


class ChannelScale(_Norm):
    """`x * w`: a learnable per-channel scale and no normalisation (σ ≡ 1), linear in x.

    The "norm" of fully bilinear transformers (e.g. `henrylhale/bilinear-vpd`), which keeps the model a
    polynomial of its embeddings. `hook_scale` reads ones so tools that freeze σ treat it like the others.
    """

    has_weight = True

    def _sigma(self, centered: Tensor) -> Tensor:
        return centered.new_ones((*centered.shape[:-1], 1))

    def _fused(self, x: Tensor) -> Optional[Tensor]:
        return x * self.w


NORMS = {"LN": LayerNorm, "LNPre": LayerNormPre, "RMS": RMSNorm, "RMSPre": RMSNormPre, "Scale": ChannelScale}


def make_norm(cfg: HookedBilinearConfig) -> Optional[nn.Module]:
    """The norm module for `cfg.normalization_type`, or None for no normalisation."""
    if cfg.normalization_type is None:
        return None
    return NORMS[cfg.normalization_type](cfg)
