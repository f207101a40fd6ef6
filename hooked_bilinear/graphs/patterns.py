"""Pattern nodes for softmax-free bilinear attention: nothing frozen but norm scales (spec graphs §3).

`A[p, q] = (q1_p·k1_q)(q2_p·k2_q) / attn_scale` is homogeneous of degree 4 in its players (the sources and
the q/k biases), so its Euler split `e(s→A) = ¼ Σ_slots (slot part of s) · (the other factors)` sums to
A exactly and equals integrated gradients from zero. As a row, A reads block l's input at two positions:

    query side at p:  e_p = ¼/scale [ a2 W_Q1 R_pᵀ k1_q + a1 W_Q2 R_pᵀ k2_q ] / σ1[p]
    key side at q:    e_q = ¼/scale [ a2 W_K1 R_qᵀ q1_p + a1 W_K2 R_qᵀ q2_p ] / σ1[q]

(a1 = q1_p·k1_q, a2 = q2_p·k2_q, W folded with ln1, R the RoPE rotation). Downstream, the head's term
`A[p, q] (v_q W_O)` is a product of the pattern node and the value: half of each such term goes to the
pattern node, half along the value path to its sources (the Shapley split of a two-factor product).

The value `v_q = (x_q / σ1[q]) W_V'' + β` has a constant part, the value bias `β = b_V + ln1.b W_V`.
Without a softmax the rows of A do not sum to 1, so β cannot be folded into b_O: its write
`Σ_q A[p, q] β W_O` depends on the prompt through A. β is one more source of the value, like the MLP
branch biases of a neuron: the pattern node's half is `½ A[p, q] (v_q W_O)` with the full value, and β's
half `½ Σ_q A[p, q] β W_O` is a constant written at p (the block's `C_{l}_{p}` node).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch
from torch import Tensor

from hooked_bilinear.circuits.frozen import Folded, _centers, _fold_rows, _norm_params

SLOTS = ("Q1", "K1", "Q2", "K2")


@dataclass
class QKView:
    """One block's bilinear attention, folded with ln1 and replayed on a prompt (n positions, H heads)."""

    W: dict            # slot -> [H, d, dh]  (C diag(w1) W)
    b: dict            # slot -> [H, dh]
    rot: dict          # slot -> [H, n, dh]  the replayed (rotated) q1, k1, q2, k2
    values: Tensor     # [H, n, dh]  (x / σ1) W_V''  (the part from the residual stream)
    b_V: Tensor        # [H, dh]  the value bias β = b_V + ln1.b W_V (the rest of hook_v)
    cos: Optional[Tensor]  # [n, r] RoPE tables, or None
    sin: Optional[Tensor]
    scale: float

    @property
    def n_heads(self) -> int:
        return self.values.shape[0]

    @property
    def v(self) -> Tensor:
        """The real value `hook_v` [H, n, dh]: residual part plus value bias."""
        return self.values + self.b_V[:, None]


def unfold_value_biases(model, folded: Folded) -> Folded:
    """`folded` with `b_O` back to the model's own: `fold_weights` adds `Σ_h β_h W_O_h`, exact only when
    every pattern row sums to 1. For softmax-free attention the value bias is a term of its own
    (`rows.row_edges`); the model is not touched."""
    dtype = folded.W_E.dtype
    layers = [replace(L, b_O=block.attn.b_O.detach().to(dtype)) for L, block in zip(folded.layers, model.blocks)]
    return replace(folded, layers=layers)


def _rope(x: Tensor, cos: Optional[Tensor], sin: Optional[Tensor], transpose: bool = False) -> Tensor:
    """R_p x (or R_pᵀ x) with x [..., n, dh] and tables [n, r] (half-split rotation of the first r dims)."""
    if cos is None:
        return x
    from hooked_bilinear.components.attention import rotate_half

    r = cos.shape[-1]
    xr = x[..., :r]
    out = xr * cos - rotate_half(xr) * sin if transpose else xr * cos + rotate_half(xr) * sin
    return torch.cat([out, x[..., r:]], -1) if r < x.shape[-1] else out


@torch.no_grad()
def qk_views(model, folded, x_pre: list[Tensor], s1: list[Tensor]) -> list[QKView]:
    """Per block, the folded QK weights and the replayed q/k/v of one prompt (x_pre: resid_pre [n, d])."""
    dtype = folded.W_E.dtype
    out = []
    for l, block in enumerate(model.blocks):
        attn, d = block.attn, model.cfg.d_model
        w1, b1 = _norm_params(block.ln1, d, dtype, folded.W_E.device)
        y = x_pre[l] / s1[l]
        n = y.shape[0]
        cos = sin = None
        if getattr(attn, "rotary", False):
            cos, sin = attn.rotary_tables(n, y.device, dtype)
        W, b, rot = {}, {}, {}
        for name in SLOTS:
            Wr = getattr(attn, f"W_{name}").detach().to(dtype)
            W[name] = _fold_rows(Wr, w1, _centers(block.ln1))
            b[name] = getattr(attn, f"b_{name}").detach().to(dtype) + torch.einsum("d,hde->he", b1, Wr)
            rot[name] = _rope(torch.einsum("nd,hde->hne", y, W[name]) + b[name][:, None], cos, sin)
        values = torch.einsum("nd,hde->hne", y, folded.layers[l].W_V)
        out.append(QKView(W, b, rot, values, folded.layers[l].b_V, cos, sin, float(model.cfg.attn_scale)))
    return out


def pattern_encoders(pr, layer: int, head: Tensor, p: Tensor, q: Tensor):
    """(query-side encoders [R, d] at p, key-side encoders [R, d] at q, own constants [R]) of A[h, p, q]."""
    V = pr.qk[layer]
    s1 = pr.s1[layer][:, 0]
    r = {k: V.rot[k][head] for k in SLOTS}                          # [R, n, dh]
    idx = torch.arange(len(head))
    q1, k1, q2, k2 = r["Q1"][idx, p], r["K1"][idx, q], r["Q2"][idx, p], r["K2"][idx, q]  # [R, dh]
    a1, a2 = (q1 * k1).sum(-1), (q2 * k2).sum(-1)
    c = 0.25 / V.scale * (q <= p).to(a1.dtype)                    # masked entries are identically zero

    def back(v: Tensor, at: Tensor) -> Tensor:  # R_atᵀ v, row by row
        if V.cos is None:
            return v
        return _rope(v[:, None], V.cos[at][:, None], V.sin[at][:, None], transpose=True)[:, 0]

    def w(name):  # [R, d, dh]
        return V.W[name][head]

    e_p = (a2[:, None] * (w("Q1") @ back(k1, p)[..., None])[..., 0] + a1[:, None] * (w("Q2") @ back(k2, p)[..., None])[..., 0])
    e_q = (a2[:, None] * (w("K1") @ back(q1, q)[..., None])[..., 0] + a1[:, None] * (w("K2") @ back(q2, q)[..., None])[..., 0])
    e_p, e_q = c[:, None] * e_p / s1[p][:, None], c[:, None] * e_q / s1[q][:, None]

    def rb(name, at):  # the bias slot, rotated at its position: [R, dh]
        bb = V.b[name][head]
        return bb if V.cos is None else _rope(bb[:, None], V.cos[at][:, None], V.sin[at][:, None])[:, 0]

    own = c * (a2 * ((rb("Q1", p) * k1).sum(-1) + (q1 * rb("K1", q)).sum(-1))
               + a1 * ((rb("Q2", p) * k2).sum(-1) + (q2 * rb("K2", q)).sum(-1)))
    return e_p, e_q, own
