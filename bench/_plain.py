"""A plain, un-hooked PyTorch transformer with bilinear MLPs: the floor for the forward benchmarks.

Same math and the same weights as a HookedBilinearTransformer (LayerNorm, learned positions), written
the way one would without hooks: fused QKV matrix, one matmul per projection.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PlainBlock(nn.Module):
    def __init__(self, block, n_heads: int, d_head: int):
        super().__init__()
        a, m = block.attn, block.mlp
        h, d, e = a.W_Q.shape
        self.n_heads, self.d_head = n_heads, d_head
        qkv = torch.cat([W.permute(1, 0, 2).reshape(d, h * e) for W in (a.W_Q, a.W_K, a.W_V)], dim=1)
        self.W_qkv = nn.Parameter(qkv.detach().clone())
        self.b_qkv = nn.Parameter(torch.cat([b.reshape(-1) for b in (a.b_Q, a.b_K, a.b_V)]).detach().clone())
        self.W_O = nn.Parameter(a.W_O.reshape(h * e, d).detach().clone())
        self.b_O = nn.Parameter(a.b_O.detach().clone())
        self.ln1 = (block.ln1.w.detach().clone(), block.ln1.b.detach().clone())
        self.ln2 = (block.ln2.w.detach().clone(), block.ln2.b.detach().clone())
        self.W_l, self.W_r = m.W_l.detach().clone(), m.W_r.detach().clone()
        self.b_l, self.b_r = m.b_l.detach().clone(), m.b_r.detach().clone()
        self.W_out, self.b_out = m.W_out.detach().clone(), m.b_out.detach().clone()
        self.eps = block.cfg.eps
        self.register_buffer("mask", torch.ones(block.cfg.n_ctx, block.cfg.n_ctx, dtype=torch.bool).triu(1))

    def forward(self, x):
        b, n, d = x.shape
        y = F.layer_norm(x, (d,), *self.ln1, eps=self.eps)
        q, k, v = (y @ self.W_qkv + self.b_qkv).split(self.n_heads * self.d_head, dim=-1)
        q, k, v = (t.view(b, n, self.n_heads, self.d_head).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.d_head)
        att = att.masked_fill(self.mask[:n, :n], float("-inf")).softmax(-1)
        z = (att @ v).transpose(1, 2).reshape(b, n, -1)
        x = x + z @ self.W_O + self.b_O
        y = F.layer_norm(x, (d,), *self.ln2, eps=self.eps)
        return x + ((y @ self.W_l + self.b_l) * (y @ self.W_r + self.b_r)) @ self.W_out + self.b_out


class PlainBilinearTransformer(nn.Module):
    """Copies the weights of a LayerNorm HookedBilinearTransformer with learned positions."""

    def __init__(self, model):
        super().__init__()
        cfg = model.cfg
        assert cfg.normalization_type == "LN" and cfg.positional_embedding_type == "standard"
        self.W_E = model.W_E.detach().clone()
        self.W_pos = model.W_pos.detach().clone()
        self.blocks = nn.ModuleList([PlainBlock(b, cfg.n_heads, cfg.d_head) for b in model.blocks])
        self.ln_f = (model.ln_final.w.detach().clone(), model.ln_final.b.detach().clone())
        self.W_U, self.b_U = model.W_U.detach().clone(), model.b_U.detach().clone()
        self.eps = cfg.eps

    def forward(self, tokens):
        x = self.W_E[tokens] + self.W_pos[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        x = F.layer_norm(x, (x.shape[-1],), *self.ln_f, eps=self.eps)
        return x @ self.W_U + self.b_U
