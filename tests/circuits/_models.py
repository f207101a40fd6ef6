"""Tiny random bilinear transformers for the circuit-extractor tests (d_model 8, V 11: fast and exact in float64)."""

from __future__ import annotations

import copy
from typing import Any, Optional

import torch

from hooked_bilinear import HookedBilinearConfig, HookedBilinearTransformer

TINY: dict[str, Any] = dict(d_model=8, n_heads=2, d_head=4, d_mlp=6, d_vocab=11, n_ctx=8)


@torch.no_grad()
def make_model(n_layers: int = 2, norm: Optional[str] = "LN", pos: str = "standard", *, biases: bool = True,
               dtype: torch.dtype = torch.float64, attn_only: bool = False, seed: int = 0, scale: Optional[float] = None,
               **overrides: Any
               ) -> HookedBilinearTransformer:
    """Every weight random (scale 0.5; 0.3 without a norm, where activations would otherwise grow like a
    degree-2^L polynomial and a float32 forward pass itself loses 1e-5), norm weights 1 ± 0.2, biases
    N(0, 0.2²) or exactly zero."""
    scale = scale if scale is not None else (0.5 if norm is not None else 0.3)
    cfg = HookedBilinearConfig(**{**TINY, **overrides}, n_layers=n_layers, normalization_type=norm,
                               positional_embedding_type=pos, attn_only=attn_only, dtype=dtype, seed=seed)
    model = HookedBilinearTransformer(cfg)
    gen = torch.Generator().manual_seed(seed)
    rand = lambda p, s: (torch.randn(p.shape, generator=gen, dtype=torch.float64) * s).to(dtype)  # noqa: E731
    for name, p in sorted(model.named_parameters()):
        leaf = name.rsplit(".", 1)[-1]
        if leaf.startswith("W_"):
            p.copy_(rand(p, scale))
        elif leaf == "w":
            p.copy_(1 + rand(p, 0.2))
        else:  # biases, including LayerNorm's b
            p.copy_(rand(p, 0.2) if biases else torch.zeros_like(p))
    return model.eval()


def tokens(batch: int = 2, n: int = 6, seed: int = 1, d_vocab: int = 11) -> torch.Tensor:
    return torch.randint(0, d_vocab, (batch, n), generator=torch.Generator().manual_seed(seed))


def folded_copy(model: HookedBilinearTransformer) -> HookedBilinearTransformer:
    """A deep copy with TL-style weight processing (fold LN, centre writing weights, fold value biases)."""
    out = copy.deepcopy(model)
    out.fold_layer_norm()
    if out.cfg.normalization_type in ("LN", "LNPre"):
        out.center_writing_weights()
    out.fold_value_biases()
    return out
