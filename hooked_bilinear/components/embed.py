"""Token embedding, learned positional embedding and unembedding (TransformerLens layout)."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from hooked_bilinear.config import HookedBilinearConfig


class Embed(nn.Module):
    """`W_E [d_vocab, d_model]`: tokens -> residual stream."""

    def __init__(self, cfg: HookedBilinearConfig):
        super().__init__()
        self.cfg = cfg
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model, dtype=cfg.dtype))

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        return self.W_E[tokens]


class PosEmbed(nn.Module):
    """`W_pos [n_ctx, d_model]`: learned absolute positions."""

    def __init__(self, cfg: HookedBilinearConfig):
        super().__init__()
        self.cfg = cfg
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model, dtype=cfg.dtype))

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        return self.W_pos[: tokens.shape[-1]].expand(tokens.shape[0], -1, -1)


class Unembed(nn.Module):
    """`W_U [d_model, d_vocab]`, `b_U [d_vocab]`: residual stream -> logits."""

    def __init__(self, cfg: HookedBilinearConfig):
        super().__init__()
        self.cfg = cfg
        self.W_U = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab, dtype=cfg.dtype))
        self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab, dtype=cfg.dtype), requires_grad=cfg.unembed_bias)

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_vocab"]:
        return torch.matmul(x, self.W_U) + self.b_U
