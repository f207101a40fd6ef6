"""Edges into a batch of rows from every source, in one backward sweep through the frozen model (spec graphs §1).

With attention patterns A and norm scales σ frozen, the residual stream at every point is linear in the
source writes: token and position embeddings, the constants of each block (b_O' after folding, b_out,
the MLP branch biases) and each neuron's write `h_k W_out[k]`. A row's value is `e · x[p]` for an
encoder `e` at one point (a neuron: its half-gradient `½(b_k W_l''[:,k] + a_k W_r''[:,k]) / σ2[p]` at
resid_mid; a logit: `W_U'' w / σf[p]` at the final residual), plus its own constant. The edge from a
source is the encoder carried back to where the source writes, dotted with the write. Carrying back is
the transpose of the frozen heads, one batched step per block for all rows at once:

    G_pre[q] = G_mid[q] + Σ_h Σ_p A_h[p, q] (G_mid[p] W_O_hᵀ W_V''_hᵀ) / σ1[q]

MLPs are nodes, so nothing flows back through them (their skip connection is the identity).
Softmax-free attention (`pr.qk`): b_O is the model's own, and the value bias β enters twice, in the
pattern nodes' half of each head term and as the constant `½ Σ_q A[p, q] β W_O` (graphs/patterns.py).
By Euler's theorem for the quadratic `h = a b`, the edges of a neuron row sum to `h` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

from hooked_bilinear.circuits.frozen import Folded, FrozenRun


@dataclass
class PromptRun:
    """One prompt of a frozen run, with the MLP branch values replayed from the real residual stream.

    Attributes (n positions, m = d_mlp):
        tokens: [n]; patterns: per layer [H, n, n]; s1, s2: per layer [n, 1]; sf: [n, 1]
        a, b, h: per layer [n, m] left branch, right branch (biases included) and product (replayed)
        h_real: per layer [n, m] `blocks.{l}.mlp.hook_post` of the real forward pass
        logits: [n, d_vocab] real logits
    """

    folded: Folded
    tokens: Tensor
    patterns: list[Tensor]
    s1: list[Tensor]
    s2: list[Optional[Tensor]]
    sf: Tensor
    a: list[Optional[Tensor]]
    b: list[Optional[Tensor]]
    h: list[Optional[Tensor]]
    h_real: list[Optional[Tensor]]
    logits: Tensor
    features: dict = field(default_factory=dict)  # {layer: FeatureLayer}: that block's neurons are replaced by SAE features
    qk: list = field(default_factory=list)  # softmax-free attention: per layer its QK view (pattern nodes), else []

    def mlp_width(self, layer: int) -> int:
        """Source nodes per position written by a block's MLP: d_mlp neurons, or d_sae features + the error node."""
        F = self.features.get(layer)
        return F.d_sae + 1 if F is not None else self.d_mlp

    def width(self, layer: int) -> int:
        """Source nodes per (block, position): the MLP's, then (bilinear attention) one per (head, key position)."""
        return self.mlp_width(layer) + (self.qk[layer].n_heads * self.n if self.qk else 0)

    @property
    def n(self) -> int:
        return self.tokens.shape[0]

    @property
    def n_layers(self) -> int:
        return len(self.folded.layers)

    @property
    def d_mlp(self) -> int:
        layers = self.folded.layers
        return layers[0].d_mlp if layers and layers[0].has_mlp else 0


def mlp_hook_names(model, basis_layers=()) -> tuple[str, ...]:
    if model.cfg.attn_only:
        return ()
    return tuple(f"blocks.{l}.mlp.hook_post" for l in range(model.cfg.n_layers)) + \
        tuple(f"blocks.{l}.hook_mlp_out" for l in basis_layers)


def prompt_run(run: FrozenRun, b: int, basis: Optional[dict] = None, model=None) -> PromptRun:
    """Slice prompt `b` out of a frozen run and replay the MLP branches from its real resid_pre."""
    f = run.folded
    bilinear = model is not None and getattr(model.cfg, "attention", "softmax") == "bilinear"
    if bilinear:  # A's rows do not sum to 1: the value bias stays in v, not in b_O (graphs/patterns.py)
        from hooked_bilinear.graphs.patterns import unfold_value_biases

        f = unfold_value_biases(model, f)
    a_s, b_s, h_s, real = [], [], [], []
    for l, L in enumerate(f.layers):
        if not L.has_mlp:
            a_s.append(None), b_s.append(None), h_s.append(None), real.append(None)
            continue
        x = run.resid[l][b]
        v = torch.einsum("nd,hde->hne", x / run.scale1[l][b], L.W_V)
        if bilinear:
            v = v + L.b_V[:, None]
        heads = torch.einsum("hne,hed->nd", run.patterns[l][b] @ v, L.W_O)
        mid = x + heads + L.b_O
        y = mid / run.scale2[l][b]
        left, right = y @ L.W_l + L.b_l, y @ L.W_r + L.b_r
        a_s.append(left), b_s.append(right), h_s.append(left * right)
        real.append(run.extra[f"blocks.{l}.mlp.hook_post"][b])
    feats = {}
    if basis:
        from hooked_bilinear.graphs.basis import fold_feature_layer

        for l, sae in basis.items():
            feats[l] = fold_feature_layer(sae, f.layers[l], h_s[l], run.extra[f"blocks.{l}.hook_mlp_out"][b])
    pr = PromptRun(
        folded=f, tokens=run.tokens[b], patterns=[p[b] for p in run.patterns], s1=[s[b] for s in run.scale1],
        s2=[None if s is None else s[b] for s in run.scale2], sf=run.scale_final[b], a=a_s, b=b_s, h=h_s,
        h_real=real, logits=run.logits[b], features=feats,
    )
    if bilinear:
        from hooked_bilinear.graphs.patterns import qk_views

        pr.qk = qk_views(model, f, [r[b] for r in run.resid[:-1]], pr.s1)
    return pr


def neuron_encoders(pr: PromptRun, layer: int, pos: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Half-gradient encoders [R, d] of neurons (layer, pos[r], idx[r]) and their own bias edges [R].

    e = ½ (b_k W_l''[:, k] + a_k W_r''[:, k]) / σ2[p];   own bias edge = ½ (b_l'_k b_k + a_k b_r'_k).
    """
    L = pr.folded.layers[layer]
    a, b = pr.a[layer][pos, idx], pr.b[layer][pos, idx]
    W_l, W_r = L.W_l[:, idx].T, L.W_r[:, idx].T  # [R, d]
    enc = 0.5 * (b[:, None] * W_l + a[:, None] * W_r) / pr.s2[layer][pos]
    own = 0.5 * (L.b_l[idx] * b + a * L.b_r[idx])
    return enc, own


def feature_encoders(pr: PromptRun, layer: int, pos: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Encoders [R, d] and own constants [R] of SAE features (layer, pos[r], idx[r]): Σ_k w_fk × neuron k's."""
    L, F = pr.folded.layers[layer], pr.features[layer]
    wf = F.w[:, idx].T                                       # [R, m]
    a, b = pr.a[layer][pos], pr.b[layer][pos]                # [R, m]
    enc = 0.5 * ((wf * b) @ L.W_l.T + (wf * a) @ L.W_r.T) / pr.s2[layer][pos]
    own = (wf * 0.5 * (L.b_l * b + a * L.b_r)).sum(-1) + F.c[idx]
    return enc, own


def value_back(pr: PromptRun, layer: int, T: Tensor) -> Tensor:
    """The transposed value path of block `layer`: T = G W_Oᵀ [..., H, n, dh] → [..., n, d] at its input.

    `Σ_h Σ_p A_h[p, q] T[h, p] W_V''_hᵀ / σ1[q]`, halved for softmax-free attention (the other half of
    each head term goes to its pattern node).
    """
    U = torch.einsum("hpq,...hpe->...hqe", pr.patterns[layer], T)
    back = torch.einsum("...hqe,hde->...qd", U, pr.folded.layers[layer].W_V) / pr.s1[layer]
    return 0.5 * back if pr.qk else back


def carry_back(pr: PromptRun, G: Tensor, top: int, stop: int) -> Tensor:
    """G [..., n, d] at block `top`'s resid_mid carried back through attention to block `stop`'s output."""
    for l in range(top, stop, -1):
        G = G + value_back(pr, l, torch.einsum("...pd,hed->...hpe", G, pr.folded.layers[l].W_O))
    return G


@dataclass
class RowEdges:
    """Dense edges into R rows from every source (zeros where a source cannot reach a row).

    tok, pos: [R, n]; const: [R, n_layers + 1, n] (layer n_layers = b_U'); neurons: per layer [R, n, width] (width = d_mlp, or d_sae + 1 for an SAE basis: features, then the error)
    (None for attention-only models).
    """

    tok: Tensor
    pos: Optional[Tensor]
    const: Tensor
    neurons: list[Optional[Tensor]]


def row_edges(pr: PromptRun, layer: Tensor, pos: Tensor, enc: Tensor, own: Tensor,
              pos2: Optional[Tensor] = None, enc2: Optional[Tensor] = None, at_pre: Optional[Tensor] = None) -> RowEdges:
    """Edges into rows given by (layer [R] — n_layers for logits —, pos [R], encoder [R, d], own constant [R]).

    Pattern rows (`at_pre`) read block `layer`'s input instead of its resid_mid, at two positions: `pos`
    with `enc` (the query side) and `pos2` with `enc2` (the key side).
    """
    f, n, nL = pr.folded, pr.n, pr.n_layers
    R, d = enc.shape
    rows = torch.arange(R, device=enc.device)
    at_pre = torch.zeros(R, dtype=torch.bool, device=enc.device) if at_pre is None else at_pre
    G = enc.new_zeros(R, n, d)
    const = enc.new_zeros(R, nL + 1, n)
    const[rows, layer, pos] += own
    at = layer == nL
    G[rows[at], pos[at]] += enc[at]
    neurons: list[Optional[Tensor]] = [None] * nL
    for l in reversed(range(nL)):
        L = f.layers[l]
        if L.has_mlp:
            # only rows above this block reach its neurons, and only at positions up to their own
            live = (layer > l).nonzero(as_tuple=True)[0]
            F = pr.features.get(l)
            E = enc.new_zeros(R, n, pr.mlp_width(l))
            if len(live):
                q = int(pos[live].max()) + 1
                Gl = G[live, :q]
                if F is None:
                    E[live, :q] = (Gl @ L.W_out.T) * pr.h[l][:q]
                else:  # SAE features, then the error node (the last column)
                    E[live, :q, :-1] = (Gl @ F.dec.T) * F.act[:q]
                    E[live, :q, -1] = (Gl * F.err[:q]).sum(-1)
            neurons[l] = E
            const[:, l] += G @ (L.b_out if F is None else F.bdec)
            at = (layer == l) & ~at_pre
            G[rows[at], pos[at]] += enc[at]
        const[:, l] += G @ L.b_O
        T = torch.einsum("rpd,hed->rhpe", G, L.W_O)
        if pr.qk:  # head term A[p,q] · (v_q W_O): half to the pattern node, half along the value path
            V, A = pr.qk[l], pr.patterns[l]
            E_pat = 0.5 * A[None] * (T @ V.v.transpose(1, 2)[None])  # [R, H, p, q], with the real v_q
            # the value path's half of the value bias: ½ Σ_h Σ_q A_h[p, q] β_h W_O_h, a constant written at p
            const[:, l] += 0.5 * torch.einsum("rhpe,hp,he->rp", T, A.sum(-1), V.b_V)
            E_pat = E_pat.permute(0, 2, 1, 3).reshape(R, n, -1)
            neurons[l] = E_pat if neurons[l] is None else torch.cat([neurons[l], E_pat], -1)
        G = G + value_back(pr, l, T)
        at = (layer == l) & at_pre
        if at.any():
            G[rows[at], pos[at]] += enc[at]
            G[rows[at], pos2[at]] += enc2[at]
    tok = (G * f.W_E[pr.tokens]).sum(-1)
    pos_e = (G * f.W_pos[:n]).sum(-1) if f.W_pos is not None else None
    return RowEdges(tok=tok, pos=pos_e, const=const, neurons=neurons)
