"""Softmax-free bilinear attention (spec graphs.md §3), the attention of fully bilinear transformers.

Per head, two query/key pairs and a product instead of a softmax:

    A[p, q] = mask[p, q] · (q1_p · k1_q) (q2_p · k2_q) / attn_scale        (mask: causal, 0 above the diagonal)
    z_p = Σ_q A[p, q] v_q,     out = Σ_h z_h W_O[h] + b_O

with `q1 = x W_Q1 + b_Q1` (and k1, q2, k2 alike), RoPE on all four when the model is rotary. A is a
homogeneous polynomial of degree 4 in the (normalised) residual stream when the biases are zero, so a
model with linear norms is an exact polynomial of its embeddings: nothing needs freezing.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

from hooked_bilinear.components.attention import Attention, _is_hooked, rotate_half
from hooked_bilinear.config import HookedBilinearConfig
from hooked_bilinear.hook_point import HookPoint

QK_NAMES = ("Q1", "K1", "Q2", "K2")


class BilinearAttention(nn.Module):
    """`W_Q1, W_K1, W_Q2, W_K2, W_V [n_heads, d_model, d_head]`, `W_O [n_heads, d_head, d_model]`."""

    def __init__(self, cfg: HookedBilinearConfig):
        super().__init__()
        self.cfg = cfg
        h, d, e, dtype = cfg.n_heads, cfg.d_model, cfg.d_head, cfg.dtype
        for name in QK_NAMES + ("V",):
            setattr(self, f"W_{name}", nn.Parameter(torch.empty(h, d, e, dtype=dtype)))
            setattr(self, f"b_{name}", nn.Parameter(torch.zeros(h, e, dtype=dtype), requires_grad=cfg.attn_bias))
        self.W_O = nn.Parameter(torch.empty(h, e, d, dtype=dtype))
        self.b_O = nn.Parameter(torch.zeros(d, dtype=dtype), requires_grad=cfg.attn_bias)
        self.rotary = cfg.positional_embedding_type == "rotary"
        self.init_buffers()
        self.hook_q1 = HookPoint()  # [batch, pos, head, d_head]
        self.hook_k1 = HookPoint()  # [batch, pos, head, d_head]
        self.hook_q2 = HookPoint()  # [batch, pos, head, d_head]
        self.hook_k2 = HookPoint()  # [batch, pos, head, d_head]
        if self.rotary:
            self.hook_rot_q1 = HookPoint()  # [batch, pos, head, d_head]
            self.hook_rot_k1 = HookPoint()  # [batch, pos, head, d_head]
            self.hook_rot_q2 = HookPoint()  # [batch, pos, head, d_head]
            self.hook_rot_k2 = HookPoint()  # [batch, pos, head, d_head]
        self.hook_v = HookPoint()  # [batch, pos, head, d_head]
        self.hook_scores1 = HookPoint()  # [batch, head, query_pos, key_pos]  q1·k1 (unmasked)
        self.hook_scores2 = HookPoint()  # [batch, head, query_pos, key_pos]  q2·k2 (unmasked)
        self.hook_pattern = HookPoint()  # [batch, head, query_pos, key_pos]  A (0 above the diagonal)
        self.hook_z = HookPoint()  # [batch, pos, head, d_head]
        self.hook_result = HookPoint()  # [batch, pos, head, d_model]

    # The causal mask and RoPE tables are built lazily per module, exactly as for softmax attention
    # (same code: at the length used, on the input's device, RoPE in the input's dtype).
    init_buffers = Attention.init_buffers
    _grown = Attention._grown
    causal_mask = Attention.causal_mask
    rotary_tables = Attention.rotary_tables

    def qk_factor(self, i: int):
        """QK circuit of factor i (1 or 2), `W_Qi W_Kiᵀ` per head, as a FactoredMatrix [n_heads, d_model, d_model]."""
        from hooked_bilinear._tl import FactoredMatrix

        return FactoredMatrix(getattr(self, f"W_Q{i}"), getattr(self, f"W_K{i}").transpose(-2, -1))

    @property
    def OV(self):
        """Per-head OV circuits `W_V W_O` as a FactoredMatrix [n_heads, d_model, d_model]."""
        from hooked_bilinear._tl import FactoredMatrix

        return FactoredMatrix(self.W_V, self.W_O)

    def _project(self, x: Tensor, W: Tensor, b: Tensor) -> Tensor:
        h, d, e = W.shape
        out = torch.matmul(x, W.permute(1, 0, 2).reshape(d, h * e))
        return out.view(*x.shape[:-1], h, e) + b

    def _rotate(self, x: Tensor) -> Tensor:
        n, r = x.shape[1], self.cfg.rotary_dim
        cos, sin = self.rotary_tables(n, x.device, x.dtype)
        cos, sin = cos[:, None, :], sin[:, None, :]
        if r == x.shape[-1]:
            return x * cos + rotate_half(x) * sin
        x_rot, x_pass = x[..., :r], x[..., r:]
        return torch.cat((x_rot * cos + rotate_half(x_rot) * sin, x_pass), dim=-1)

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        n = x.shape[1]
        qk = []
        for name in QK_NAMES:
            t = getattr(self, f"hook_{name.lower()}")(self._project(x, getattr(self, f"W_{name}"), getattr(self, f"b_{name}")))
            if self.rotary:
                t = getattr(self, f"hook_rot_{name.lower()}")(self._rotate(t))
            qk.append(t.transpose(1, 2))  # [batch, head, pos, d_head]
        q1, k1, q2, k2 = qk
        v = self.hook_v(self._project(x, self.W_V, self.b_V))
        s1 = self.hook_scores1(torch.matmul(q1, k1.transpose(-2, -1)))
        s2 = self.hook_scores2(torch.matmul(q2, k2.transpose(-2, -1)))
        pattern = (s1 * s2 / self.cfg.attn_scale).masked_fill(self.causal_mask(n, s1.device), 0.0)
        pattern = self.hook_pattern(pattern)
        z = self.hook_z(torch.matmul(pattern, v.transpose(1, 2)).transpose(1, 2))
        h, e, d = self.W_O.shape
        if _is_hooked(self.hook_result):
            per_head = torch.einsum("bphe,hed->bphd", z, self.W_O)
            return self.hook_result(per_head).sum(dim=-2) + self.b_O
        return torch.matmul(z.reshape(*z.shape[:-2], h * e), self.W_O.reshape(h * e, d)) + self.b_O
