"""Multi-head causal attention with TransformerLens hooks and optional rotary embeddings.

Scores: `q·k / attn_scale`, causal mask, softmax. Per-head outputs (`hook_result`,
[batch, pos, head, d_model]) are only materialised when a hook is attached there; otherwise the
heads are summed inside one matmul, which is the same math with less memory traffic.
"""

from __future__ import annotations

from typing import Optional

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


def causal_mask(n: int, device) -> Tensor:
    """[n, n] bool, True above the diagonal (the keys a query may not see)."""
    with torch.inference_mode(False):  # a normal tensor even when first built under inference_mode
        return torch.ones(n, n, dtype=torch.bool, device=device).triu(1)


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
        """Forget the lazily built constants (causal mask, RoPE tables); the next forward rebuilds them.

        They are not buffers: each is built on first use at the length actually used (grown
        geometrically up to n_ctx), on the input's device and, for RoPE, in the input's dtype from
        float64 angles, so `.double()` gets float64-exact tables and an n_ctx=100000 config costs
        nothing until a long input comes. They belong to this module (freed with the model), never
        to a module-level cache. `device` is accepted for backward compatibility and ignored.
        """
        self._mask: Optional[Tensor] = None
        self._rope: Optional[tuple[Tensor, Tensor]] = None

    def _grown(self, have: Optional[Tensor], n: int) -> int:
        """Length to build so that n positions fit: at least double the last one, at most n_ctx."""
        old = 0 if have is None else have.shape[0]
        return max(n, min(self.cfg.n_ctx, 2 * old))

    def causal_mask(self, n: int, device) -> Tensor:
        """[n, n] bool mask (True = masked), a view of this module's lazily grown table."""
        m = self._mask
        if m is None or m.shape[0] < n or m.device != torch.device(device):
            m = self._mask = causal_mask(self._grown(m, n), device)
        return m[:n, :n]

    def rotary_tables(self, n: int, device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """cos, sin [n, rotary_dim] in `dtype` (from float64 angles), views of the lazily grown tables."""
        rope = self._rope
        if rope is None or rope[0].shape[0] < n or rope[0].device != torch.device(device) or rope[0].dtype != dtype:
            size = self._grown(None if rope is None or rope[0].dtype != dtype else rope[0], n)
            with torch.inference_mode(False):
                cos, sin = rotary_tables(size, self.cfg.rotary_dim, float(self.cfg.rotary_base), dtype)
            rope = self._rope = (cos.to(device), sin.to(device))
        return rope[0][:n], rope[1][:n]

    @property
    def mask(self) -> Tensor:
        """The full [n_ctx, n_ctx] causal mask on the weights' device (built on demand; forward uses less)."""
        return self.causal_mask(self.cfg.n_ctx, self.W_Q.device)

    @property
    def rotary_cos(self) -> Tensor:
        """RoPE cos table [n_ctx, rotary_dim] in the weights' dtype (built on demand)."""
        return self.rotary_tables(self.cfg.n_ctx, self.W_Q.device, self.W_Q.dtype)[0]

    @property
    def rotary_sin(self) -> Tensor:
        """RoPE sin table [n_ctx, rotary_dim] in the weights' dtype (built on demand)."""
        return self.rotary_tables(self.cfg.n_ctx, self.W_Q.device, self.W_Q.dtype)[1]

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
        cos, sin = self.rotary_tables(n, x.device, x.dtype)
        cos, sin = cos[:, None, :], sin[:, None, :]
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
        scores = scores.masked_fill(self.causal_mask(n, scores.device), float("-inf"))
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
