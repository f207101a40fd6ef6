"""Multi-head causal attention with TransformerLens hooks and optional rotary embeddings.

Scores: `q·k / attn_scale`, causal mask, softmax. Per-head outputs (`hook_result`,
[batch, pos, head, d_model]) are only materialised when a hook is attached there (and
`cfg.use_attn_result` is on, TL's switch); otherwise the heads are summed inside one matmul, which
is the same math with less memory traffic.

TL's split-qkv-input mode (`cfg.use_split_qkv_input`): each head gets its own copy of the pre-ln1
residual at `hook_q_input/hook_k_input/hook_v_input` [batch, pos, head, d_model], normalised by
ln1 per copy, so an edit there reaches one head's query, key or value alone (direct path patching).
Padding masks (`key_mask`), offset positions and a key/value cache enter through `forward`'s keywords.
"""

from __future__ import annotations

from typing import Optional

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from hooked_bilinear.hook_point import HookPoint
from hooked_bilinear.config import HookedBilinearConfig

SPLIT_INPUTS = ("hook_q_input", "hook_k_input", "hook_v_input")


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
        self.set_split_inputs(bool(cfg.use_split_qkv_input))

    def set_split_inputs(self, on: bool) -> None:
        """Add (or remove) the per-head input hook points of TL's split-qkv-input mode.

        They exist only while the mode is on, so every hook point in `hook_dict` fires on a forward.
        """
        for name in SPLIT_INPUTS:
            if on and not hasattr(self, name):
                setattr(self, name, HookPoint())  # [batch, pos, head, d_model]
            elif not on and hasattr(self, name):
                delattr(self, name)

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
        if x.ndim == 4:  # split inputs: one residual copy per head [batch, pos, head, d_model]
            return torch.einsum("bphd,hde->bphe", x, W) + b
        out = torch.matmul(x, W.permute(1, 0, 2).reshape(d, h * e))
        return out.view(*x.shape[:-1], h, e) + b

    def _rotate(self, x: Tensor, positions: Optional[Tensor] = None) -> Tensor:
        n, r = x.shape[1], self.cfg.rotary_dim
        if positions is None:
            cos, sin = self.rotary_tables(n, x.device, x.dtype)
            cos, sin = cos[:, None, :], sin[:, None, :]
        else:  # [batch, pos] absolute positions (left padding, a key/value cache)
            cos, sin = self.rotary_tables(int(positions.max()) + 1, x.device, x.dtype)
            cos, sin = cos[positions][:, :, None, :], sin[positions][:, :, None, :]
        if r == x.shape[-1]:
            return x * cos + rotate_half(x) * sin
        x_rot, x_pass = x[..., :r], x[..., r:]
        return torch.cat((x_rot * cos + rotate_half(x_rot) * sin, x_pass), dim=-1)

    def _qkv(self, x: Tensor, ln: Optional[nn.Module]) -> tuple[Tensor, Tensor, Tensor]:
        if not self.cfg.use_split_qkv_input:
            return (self.hook_q(self._project(x, self.W_Q, self.b_Q)),
                    self.hook_k(self._project(x, self.W_K, self.b_K)),
                    self.hook_v(self._project(x, self.W_V, self.b_V)))
        out = []
        for name, W, b, hook in (("hook_q_input", self.W_Q, self.b_Q, self.hook_q),
                                 ("hook_k_input", self.W_K, self.b_K, self.hook_k),
                                 ("hook_v_input", self.W_V, self.b_V, self.hook_v)):
            copies = getattr(self, name)(x[:, :, None, :].expand(-1, -1, self.cfg.n_heads, -1).clone())
            out.append(hook(self._project(copies if ln is None else ln(copies), W, b)))
        return out[0], out[1], out[2]

    def forward(
        self,
        x: Float[Tensor, "batch pos d_model"],
        ln: Optional[nn.Module] = None,
        key_mask: Optional[Bool[Tensor, "batch key_pos"]] = None,
        positions: Optional[Int[Tensor, "batch pos"]] = None,
        past_kv: Optional["KVCacheEntry"] = None,
    ) -> Float[Tensor, "batch pos d_model"]:
        """Attention of the block.

        Args:
            x: ln1's output; in split-qkv-input mode the pre-ln1 residual, normalised here by `ln`.
            ln: the block's ln1 (split-qkv-input mode only).
            key_mask: False on padding keys (over the past and present positions); such keys get no attention.
            positions: absolute positions of x's rows for RoPE (default 0..pos-1).
            past_kv: keys/values of earlier positions; this call appends x's.
        """
        n = x.shape[1]
        q, k, v = self._qkv(x, ln)
        if self.rotary:
            q = self.hook_rot_q(self._rotate(q, positions))
            k = self.hook_rot_k(self._rotate(k, positions))
        past = 0
        if past_kv is not None:
            past = past_kv.length
            k, v = past_kv.append(k, v)
        scores = torch.matmul(q.transpose(1, 2), k.permute(0, 2, 3, 1)) / self.cfg.attn_scale
        scores = scores.masked_fill(self.causal_mask(past + n, scores.device)[past:], float("-inf"))
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        pattern = torch.softmax(self.hook_attn_scores(scores), dim=-1)
        if key_mask is not None:  # a padding query with no real key to read: TL's zero row, not NaN
            pattern = torch.where(torch.isnan(pattern), torch.zeros_like(pattern), pattern)
        pattern = self.hook_pattern(pattern)
        z = self.hook_z(torch.matmul(pattern, v.transpose(1, 2)).transpose(1, 2))
        h, e, d = self.W_O.shape
        if self.cfg.use_attn_result and _is_hooked(self.hook_result):
            # per head in [head, batch*pos, d_model] layout: one batched matmul with no layout copy;
            # hooks see a [batch, pos, head, d_model] view of it
            per_head = torch.matmul(z.permute(2, 0, 1, 3).reshape(h, -1, e), self.W_O)
            view = per_head.view(h, *z.shape[:2], d).permute(1, 2, 0, 3)
            result = self.hook_result(view)
            summed = per_head.sum(0).view(*z.shape[:2], d) if result is view else result.sum(dim=-2)
            return summed + self.b_O
        return torch.matmul(z.reshape(*z.shape[:-2], h * e), self.W_O.reshape(h * e, d)) + self.b_O


class KVCacheEntry:
    """One layer's cached keys and values [batch, pos, head, d_head] (keys after RoPE)."""

    def __init__(self) -> None:
        self.k: Optional[Tensor] = None
        self.v: Optional[Tensor] = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[1]

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store `k, v` after the cached ones and return all of them."""
        if self.k is not None:
            k, v = torch.cat([self.k, k], dim=1), torch.cat([self.v, v], dim=1)
        self.k, self.v = k.detach(), v.detach()
        return k, v
