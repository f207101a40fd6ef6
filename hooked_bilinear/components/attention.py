"""Multi-head causal attention with TransformerLens hooks and optional rotary embeddings.

Scores: `q·k / attn_scale`, causal mask, softmax. Per-head outputs (`hook_result`,
[batch, pos, head, d_model]) are only materialised when a hook is attached there; otherwise the
heads are summed inside one matmul, which is the same math with less memory traffic.
"""

from __future__ import annotations

import functools

import torch
from jaxtyping import Float
from torch import Tensor, nn

from hooked_bilinear.hook_point import HookPoint
from hooked_bilinear.config import HookedBilinearConfig


def rotate_half(x: Tensor) -> Tensor:
    """Half-split RoPE rotation: `cat(-x2, x1)` over the two halves of the last axis."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rotary_tables(n_ctx: int, rotary_dim: int, base: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos/sin tables [n_ctx, rotary_dim] built from `cat(freqs, freqs)` (computed in float64)."""
    # Explicit CPU: inside a `torch.device("meta")` context these would otherwise be meta tensors,
    # whose first use imports torch's Python reference kernels (seconds).
    inv_freq = 1.0 / (base ** (torch.arange(0, rotary_dim, 2, dtype=torch.float64, device="cpu") / rotary_dim))
    angles = torch.outer(torch.arange(n_ctx, dtype=torch.float64, device="cpu"), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


@functools.lru_cache(maxsize=8)
def _constant_buffers(n_ctx: int, rotary_dim: int, base: float, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """Causal mask [n_ctx, n_ctx] (True above the diagonal) and RoPE cos/sin tables, on the CPU.

    Built once and shared by every layer (and model) with the same sizes: they are constants,
    never modified in place, and small tensor ops are costly on a busy machine (thread wake-ups).
    """
    with torch.inference_mode(False):  # normal tensors even when first built under inference_mode
        mask = torch.ones(n_ctx, n_ctx, dtype=torch.bool, device="cpu").triu(1)
        cos, sin = rotary_tables(n_ctx, rotary_dim, base, dtype) if rotary_dim else (None, None)
    return mask, cos, sin


def _is_hooked(hook: HookPoint) -> bool:
    # Backward hooks count too: a bwd-only hook on hook_result must see the per-head tensor.
    return bool(hook._forward_hooks or hook._backward_hooks)


class Attention(nn.Module):
    """`W_Q, W_K, W_V [n_heads, d_model, d_head]`, `W_O [n_heads, d_head, d_model]`."""

    def __init__(self, cfg: HookedBilinearConfig):
        super().__init__()
        self.cfg = cfg
        h, d, e, dtype = cfg.n_heads, cfg.d_model, cfg.d_head, cfg.dtype
        self.W_Q = nn.Parameter(torch.empty(h, d, e, dtype=dtype))
        self.W_K = nn.Parameter(torch.empty(h, d, e, dtype=dtype))
        self.W_V = nn.Parameter(torch.empty(h, d, e, dtype=dtype))
        self.W_O = nn.Parameter(torch.empty(h, e, d, dtype=dtype))
        self.b_Q = nn.Parameter(torch.zeros(h, e, dtype=dtype), requires_grad=cfg.attn_bias)
        self.b_K = nn.Parameter(torch.zeros(h, e, dtype=dtype), requires_grad=cfg.attn_bias)
        self.b_V = nn.Parameter(torch.zeros(h, e, dtype=dtype), requires_grad=cfg.attn_bias)
        self.b_O = nn.Parameter(torch.zeros(d, dtype=dtype), requires_grad=cfg.attn_bias)
        self.rotary = cfg.positional_embedding_type == "rotary"
        self.init_buffers()
        if self.rotary:
            self.hook_rot_q = HookPoint()  # [batch, pos, head, d_head]
            self.hook_rot_k = HookPoint()  # [batch, pos, head, d_head]
        self.hook_q = HookPoint()  # [batch, pos, head, d_head]
        self.hook_k = HookPoint()  # [batch, pos, head, d_head]
        self.hook_v = HookPoint()  # [batch, pos, head, d_head]
        self.hook_attn_scores = HookPoint()  # [batch, head, query_pos, key_pos]
        self.hook_pattern = HookPoint()  # [batch, head, query_pos, key_pos]
        self.hook_z = HookPoint()  # [batch, pos, head, d_head]
        self.hook_result = HookPoint()  # [batch, pos, head, d_model]

    def init_buffers(self, device=None) -> None:
        """(Re)build the non-persistent buffers: causal `mask` [n_ctx, n_ctx] and RoPE tables.

        Built on the CPU, then moved to `device` when given. Called by the constructor, and by
        loaders after building on the meta device.
        """
        cfg = self.cfg
        rotary_dim = cfg.rotary_dim if self.rotary else 0
        mask, cos, sin = _constant_buffers(cfg.n_ctx, rotary_dim, float(cfg.rotary_base), cfg.dtype)
        if device is not None:
            mask, cos, sin = (t if t is None else t.to(device) for t in (mask, cos, sin))
        self.register_buffer("mask", mask, persistent=False)
        if self.rotary:
            self.register_buffer("rotary_cos", cos, persistent=False)
            self.register_buffer("rotary_sin", sin, persistent=False)

    @property
    def OV(self):
        """Per-head OV circuits `W_V W_O` as a FactoredMatrix [n_heads, d_model, d_model]."""
        from hooked_bilinear._tl import FactoredMatrix

        return FactoredMatrix(self.W_V, self.W_O)

    @property
    def QK(self):
        """Per-head QK circuits `W_Q W_Kᵀ` as a FactoredMatrix [n_heads, d_model, d_model]."""
        from hooked_bilinear._tl import FactoredMatrix

        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    def _project(self, x: Tensor, W: Tensor, b: Tensor) -> Tensor:
        h, d, e = W.shape
        out = torch.matmul(x, W.permute(1, 0, 2).reshape(d, h * e))
        return out.view(*x.shape[:-1], h, e) + b

    def _rotate(self, x: Tensor) -> Tensor:
        n, r = x.shape[1], self.cfg.rotary_dim
        cos = self.rotary_cos[:n, None, :]
        sin = self.rotary_sin[:n, None, :]
        if r == x.shape[-1]:
            return x * cos + rotate_half(x) * sin
        x_rot, x_pass = x[..., :r], x[..., r:]
        return torch.cat((x_rot * cos + rotate_half(x_rot) * sin, x_pass), dim=-1)

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        n = x.shape[1]
        q = self.hook_q(self._project(x, self.W_Q, self.b_Q))
        k = self.hook_k(self._project(x, self.W_K, self.b_K))
        v = self.hook_v(self._project(x, self.W_V, self.b_V))
        if self.rotary:
            q = self.hook_rot_q(self._rotate(q))
            k = self.hook_rot_k(self._rotate(k))
        scores = torch.matmul(q.transpose(1, 2), k.permute(0, 2, 3, 1)) / self.cfg.attn_scale
        scores = scores.masked_fill(self.mask[:n, :n], float("-inf"))
        pattern = self.hook_pattern(torch.softmax(self.hook_attn_scores(scores), dim=-1))
        z = self.hook_z(torch.matmul(pattern, v.transpose(1, 2)).transpose(1, 2))
        h, e, d = self.W_O.shape
        if _is_hooked(self.hook_result):
            # per head in [head, batch*pos, d_model] layout: one batched matmul with no layout copy;
            # hooks see a [batch, pos, head, d_model] view of it
            per_head = torch.matmul(z.permute(2, 0, 1, 3).reshape(h, -1, e), self.W_O)
            view = per_head.view(h, *z.shape[:2], d).permute(1, 2, 0, 3)
            result = self.hook_result(view)
            summed = per_head.sum(0).view(*z.shape[:2], d) if result is view else result.sum(dim=-2)
            return summed + self.b_O
        return torch.matmul(z.reshape(*z.shape[:-2], h * e), self.W_O.reshape(h * e, d)) + self.b_O
