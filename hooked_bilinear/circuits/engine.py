"""Values of path-tree nodes under frozen patterns and norm scales, batched over siblings and memoised.

A node's value is needed at two position sets: "tgt" (the target's destination positions, enough to
score a frontier node, since MLPs act per position) and "all" (every position, needed whenever the node
sits under a head, which mixes positions). Children of one node are computed in one batched contraction.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from hooked_bilinear.circuits.frozen import FrozenRun
from hooked_bilinear.circuits.heads import head_children
from hooked_bilinear.circuits.nodes import Node, NodeTable
from hooked_bilinear.circuits.target import Readout

_CHUNK_ELEMS = 2**24  # elements per temporary [rows, batch, pos, d_mlp] block in pair tables


class PathEngine:
    """Computes node values `[batch, pos, d_model]` for one frozen run; see `children_values`."""

    def __init__(self, run: FrozenRun, readout: Readout):
        self.run, self.readout = run, readout
        f = run.folded
        nz = lambda t: t is not None and bool((t != 0).any())  # noqa: E731
        has_mlp = bool(f.layers) and f.layers[0].has_mlp
        self.table = NodeTable(
            n_layers=run.n_layers, n_heads=run.n_heads, has_pos=f.W_pos is not None,
            bO=[nz(L.b_O) for L in f.layers], bout=[has_mlp and nz(L.b_out) for L in f.layers],
            one=[has_mlp and (nz(L.b_l) or nz(L.b_r)) for L in f.layers], has_mlp=has_mlp,
        )
        self.idx = torch.tensor(readout.positions, device=run.tokens.device)
        self.tgt_is_all = readout.positions == list(range(run.n))
        self._memo: dict[str, dict[int, Tensor]] = {"all": {}, "tgt": {}}
        self._lr: dict[tuple[int, int, str], tuple[Tensor, Tensor]] = {}
        self._kids: dict[tuple[int, str], tuple[list[Node], Tensor]] = {}
        self.n_computed = 0  # node values computed (a cost counter for benchmarks)
        self._level1()

    # ------------------------------------------------------------------ level 1 (a frozen replay of the forward pass)
    def _level1(self) -> None:
        run, f, T = self.run, self.run.folded, self.table
        b, n = run.batch, run.n
        bcast = lambda v: v.expand(b, n, v.shape[-1])  # noqa: E731
        memo = self._memo["all"]
        tok = f.W_E[run.tokens]
        memo[T.get("tok").id] = tok
        resid = tok
        if f.W_pos is not None:
            memo[T.get("pos").id] = bcast(f.W_pos[:n])
            resid = resid + f.W_pos[:n]
        for l, L in enumerate(f.layers):
            heads = self.head_apply_all(l, resid)  # [H, b, n, d]
            for h in range(run.n_heads):
                memo[T.get("head_c", l, h).id] = heads[h]
            resid = resid + heads.sum(0) + L.b_O
            if T.has_bO[l]:
                memo[T.get("bO", l).id] = bcast(L.b_O)
            if L.has_mlp:
                left, right = self.project(l, resid[None], "all")
                out = ((left + L.b_l) * (right + L.b_r))[0] @ L.W_out
                memo[T.get("mlp_c", l).id] = out
                resid = resid + out + L.b_out
                if T.has_bout[l]:
                    memo[T.get("bout", l).id] = bcast(L.b_out)

    # ------------------------------------------------------------------ primitive maps
    def rows(self, where: str) -> Optional[Tensor]:
        return None if where == "all" or self.tgt_is_all else self.idx

    def _at(self, t: Tensor, where: str, axis: int) -> Tensor:
        r = self.rows(where)
        return t if r is None else t.index_select(axis, r)

    def head_apply_all(self, l: int, X: Tensor) -> Tensor:
        """All heads of layer l on one input [b, n, d] -> [H, b, n, d]."""
        L = self.run.folded.layers[l]
        v = torch.einsum("bnd,hde->hbne", X / self.run.scale1[l], L.W_V)
        z = self.run.patterns[l].transpose(0, 1) @ v
        return torch.einsum("hbne,hed->hbnd", z, L.W_O)

    def head_apply(self, l: int, h: int, X: Tensor, where: str) -> Tensor:
        """head(l,h,·) on a stack [k, b, n, d] (all positions) -> [k, b, n_where, d]."""
        L = self.run.folded.layers[l]
        v = (X / self.run.scale1[l]) @ L.W_V[h]
        A = self._at(self.run.patterns[l][:, h], where, 1)  # [b, n_where, n]
        return (A @ v) @ L.W_O[h]

    def project(self, l: int, X: Tensor, where: str) -> tuple[Tensor, Tensor]:
        """(X/σ2) W_l'', (X/σ2) W_r'' for a stack [k, b, n_where, d] (no biases)."""
        L = self.run.folded.layers[l]
        Y = X / self._at(self.run.scale2[l], where, 1)
        return Y @ L.W_l, Y @ L.W_r

    def lr_of(self, node: Node, l: int, where: str) -> tuple[Tensor, Tensor]:
        """Left/right projections of one argument of MLP l, [b, n_where, d_mlp]; ONE gives (b_l', b_r') [1, 1, d_mlp]."""
        key = (node.id, l, where)
        if key not in self._lr:
            if node.kind == "one":
                L = self.run.folded.layers[l]
                self._lr[key] = (L.b_l.expand(1, 1, -1), L.b_r.expand(1, 1, -1))
            else:
                left, right = self.project(l, self.value(node, where)[None], where)
                self._lr[key] = (left[0], right[0])
        return self._lr[key]

    def lr_stack(self, nodes: list[Node], l: int, where: str) -> tuple[Tensor, Tensor]:
        """Projections of several MLP arguments, [k, b, n_where, d_mlp] each (ONE rows = biases)."""
        real = [x for x in nodes if x.kind != "one"]
        left, right = self.project(l, torch.stack([self.value(x, where) for x in real]), where)
        if len(real) == len(nodes):
            return left, right
        L = self.run.folded.layers[l]
        shape = left.shape[1:]
        i = [x.kind for x in nodes].index("one")
        left = torch.cat([left[:i], L.b_l.expand(1, *shape), left[i:]])
        right = torch.cat([right[:i], L.b_r.expand(1, *shape), right[i:]])
        return left, right

    def square_values(self, l: int, left: Tensor, right: Tensor) -> Tensor:
        """Values of sq(x_i) then pair(x_i, x_j), i<j (NodeTable.square_children order), [k(k+1)/2, b, n_w, d]."""
        W_out = self.run.folded.layers[l].W_out
        k = left.shape[0]
        out = left.new_empty((k * (k + 1) // 2, *left.shape[1:-1], W_out.shape[1]))
        out[:k] = (left * right) @ W_out
        per_row = max(1, _CHUNK_ELEMS // max(1, left[0].numel()))
        pos = k
        for i in range(k - 1):
            for j0 in range(i + 1, k, per_row):
                j1 = min(k, j0 + per_row)
                z = left[i] * right[j0:j1] + left[j0:j1] * right[i]
                out[pos:pos + j1 - j0] = z @ W_out
                pos += j1 - j0
        return out

    # ------------------------------------------------------------------ node values
    def value(self, node: Node, where: str) -> Tensor:
        """Value of `node` at the positions `where` ("all" or "tgt"), [b, n_where, d_model]."""
        if where == "tgt" and self.tgt_is_all:
            where = "all"
        memo = self._memo[where]
        v = memo.get(node.id)
        if v is not None:
            return v
        if where == "tgt" and node.id in self._memo["all"]:  # level-1 values always live here
            return self._memo["all"][node.id].index_select(1, self.idx)
        k, l = node.kind, node.layer
        if k == "head":
            v = self.head_apply(l, node.head, self.value(node.args[0], "all")[None], where)[0]
        elif k == "sq":
            left, right = self.lr_of(node.args[0], l, where)
            v = (left * right) @ self.run.folded.layers[l].W_out
        elif k == "pair":
            (lx, rx), (ly, ry) = (self.lr_of(a, l, where) for a in node.args)
            v = (lx * ry + ly * rx) @ self.run.folded.layers[l].W_out
        else:
            raise ValueError(f"{node.label} has no residual-stream value")
        n_where = self.run.n if where == "all" else len(self.idx)
        v = v.expand(self.run.batch, n_where, v.shape[-1])  # sq(ONE) is a per-position constant
        memo[node.id] = v
        self.n_computed += 1
        return v

    def children_values(self, node: Node, where: str = "tgt") -> tuple[list[Node], Tensor]:
        """The children of `node` and their values, one batched contraction: ([k nodes], [k, b, n_where, d])."""
        if where == "tgt" and self.tgt_is_all:
            where = "all"
        hit = self._kids.get((node.id, where))
        if hit is None and where == "tgt" and (node.id, "all") in self._kids:
            kids, V = self._kids[(node.id, "all")]
            hit = kids, V.index_select(2, self.idx)
        if hit is not None:
            return hit
        T, k, l = self.table, node.kind, node.layer
        if k in ("head_c", "head"):
            kids, V = head_children(self, node, where)
        elif k in ("mlp_c", "sq"):
            if k == "mlp_c":
                xs = T.mlp_inputs(l)
                left, right = self.lr_stack(xs, l, where)
            else:
                xs, X = self.children_values(node.args[0], where)
                left, right = self.project(l, X, where)
            kids = T.square_children(l, xs)
            V = self.square_values(l, left, right)
        elif k == "pair":
            x, y = node.args
            grow, keep = (x, y) if x.expandable else (y, x)
            xs, X = self.children_values(grow, where)
            left, right = self.project(l, X, where)
            ly, ry = self.lr_of(keep, l, where)
            V = (left * ry + ly * right) @ self.run.folded.layers[l].W_out
            kids = [T.get("pair", l, None, (c, keep)) for c in xs]
        else:
            raise ValueError(f"{node.label} is a leaf tree and cannot be expanded")
        memo = self._memo[where]
        for c, v in zip(kids, V.unbind(0)):
            if c.id not in memo:
                memo[c.id] = v
        self.n_computed += len(kids)
        self._kids[(node.id, where)] = kids, V
        return kids, V

    def memo_bytes(self) -> int:
        """Bytes held by memoised values and projections (shared storage counted once)."""
        seen, total = set(), 0
        tensors = [t for m in self._memo.values() for t in m.values()]
        tensors += [t for pair in self._lr.values() for t in pair]
        for t in tensors:
            s = t.untyped_storage()
            if s.data_ptr() not in seen:
                seen.add(s.data_ptr())
                total += s.nbytes()
        return total
