"""Children of head nodes, contracting over source positions before any d_model-sized matrix.

A chain of frozen heads head(l_k,h_k, … head(l_1,h_1, Z)) is linear, so its value at the rows p is

    Σ_s W[p,s] · Z[s] · W_V1 W_O1 ⋯ W_Vk W_Ok,     W = Ã_k[p,:] Ã_{k-1} ⋯ Ã_1,   Ã = A diag(1/σ1)

(a composed "virtual attention" row). When Z is an MLP node, Z[s] = h[s] W_out with h the d_mlp-wide
product of the two branches, so the children of Z under the chain cost k·|p|·n·d_mlp (weighted sums of
branch products) plus k·|p|·d_mlp·d_model, instead of k·n·d_mlp·d_model for their values at every
position. This is the hot path of lazy expansion when a head reads an MLP.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from hooked_bilinear.circuits.nodes import Node

if TYPE_CHECKING:
    from hooked_bilinear.circuits.engine import PathEngine

MLP_KINDS = ("mlp_c", "sq", "pair")
_CHUNK_ELEMS = 2**24


def peel(node: Node) -> tuple[list[tuple[int, int]], Node]:
    """(chain of (layer, head), outermost first; the innermost non-head node)."""
    chain = []
    while node.kind == "head":
        chain.append((node.layer, node.head))
        node = node.args[0]
    if node.kind == "head_c":
        chain.append((node.layer, node.head))
    return chain, node


def source_weights(engine: "PathEngine", chain: list[tuple[int, int]], where: str) -> Tensor:
    """W [b, r, n]: the composed effective attention of the chain from its input to the rows `where`."""
    run = engine.run
    W = None
    for l, h in chain:
        At = run.patterns[l][:, h] / run.scale1[l].transpose(1, 2)  # divide by σ1 at the source
        W = engine._at(At, where, 1) if W is None else W @ At
    return W


def square_hidden(left: Tensor, right: Tensor, W: Tensor) -> Tensor:
    """Σ_s W[b,r,s] · h_ij[s] for sq(x_i) then pair(x_i, x_j), i<j (square_children order).

    left, right: [k, b, n, m] branch projections; returns [k(k+1)/2, b, r, m].
    """
    k, B, n, m = left.shape
    r = W.shape[1]
    iu, ju = torch.triu_indices(k, k, offset=1, device=left.device)
    out = left.new_empty((k * (k + 1) // 2, B, r, m))
    step = max(1, _CHUNK_ELEMS // max(1, k * k))
    for b in range(B):
        for p in range(r):
            lw = left[:, b] * W[b, p][None, :, None]  # [k, n, m]
            for m0 in range(0, m, step):
                m1 = min(m, m0 + step)
                P = torch.bmm(lw[..., m0:m1].permute(2, 0, 1), right[:, b, :, m0:m1].permute(2, 1, 0))  # [m, k, k]
                out[:k, b, p, m0:m1] = P.diagonal(dim1=1, dim2=2).T
                out[k:, b, p, m0:m1] = (P[:, iu, ju] + P[:, ju, iu]).T
    return out


def mlp_hidden_children(engine: "PathEngine", z: Node, W: Tensor) -> tuple[list[Node], Tensor]:
    """Children of an MLP node z and Σ_s W[b,r,s] h_child[s], [k, b, r, d_mlp]."""
    T, l = engine.table, z.layer
    if z.kind in ("mlp_c", "sq"):
        if z.kind == "mlp_c":
            xs = T.mlp_inputs(l)
            left, right = engine.lr_stack(xs, l, "all")
        else:
            xs, X = engine.children_values(z.args[0], "all")
            left, right = engine.project(l, X, "all")
        return T.square_children(l, xs), square_hidden(left, right, W)
    x, y = z.args
    grow, keep = (x, y) if x.expandable else (y, x)
    xs, X = engine.children_values(grow, "all")
    left, right = engine.project(l, X, "all")
    ly, ry = (t.expand(engine.run.batch, engine.run.n, -1) for t in engine.lr_of(keep, l, "all"))
    H = torch.einsum("brs,kbsm,bsm->kbrm", W, left, ry) + torch.einsum("brs,bsm,kbsm->kbrm", W, ly, right)
    return [T.get("pair", l, None, (c, keep)) for c in xs], H


def head_children(engine: "PathEngine", node: Node, where: str) -> tuple[list[Node], Tensor]:
    """Children of head_c / head nodes and their values at `where`, [k, b, n_where, d_model]."""
    T, f = engine.table, engine.run.folded
    chain, z = peel(node)
    if z.kind == "head_c":
        inner = T.parts_pre(z.layer)
        X, hidden = torch.stack([engine.value(c, "all") for c in inner]), False
    else:
        n, d = engine.run.n, f.W_E.shape[1]
        r = n if engine.rows(where) is None else len(engine.rows(where))
        hidden = z.kind in MLP_KINDS and r * (n + d) < n * d
        if not hidden:
            inner, X = engine.children_values(z, "all")
    if hidden:
        W = source_weights(engine, chain, where)
        inner, H = mlp_hidden_children(engine, z, W)
        M = f.layers[z.layer].W_out
        for l, h in reversed(chain):
            M = (M @ f.layers[l].W_V[h]) @ f.layers[l].W_O[h]
        V = H @ M
    elif len(chain) == 1:
        V = engine.head_apply(*chain[0], X, where)
    else:
        V = torch.einsum("brs,kbsd->kbrd", source_weights(engine, chain, where), X)
        for l, h in reversed(chain):
            V = (V @ f.layers[l].W_V[h]) @ f.layers[l].W_O[h]
    kids = inner
    for l, h in reversed(chain):
        kids = [T.get("head", l, h, (c,)) for c in kids]
    return kids, V
