"""Path-tree nodes for models with softmax-free bilinear attention, where nothing is frozen (graphs.md §3).

Every component is a multilinear map of slot arguments, each slot a node whose value feeds it:

    pair   mlp_l(x, y)           = ((x̃ W_l'' [+ b_l]) ⊙ (ỹ W_r'' [+ b_r])) W_out          (ordered slots)
    pat    A_lh(a, b, c, d)[p,q]  = mask · (q1(a)_p · k1(b)_q) (q2(c)_p · k2(d)_q) / attn_scale   (degree 4)
    head   head_lh(P, e)[p]      = Σ_q P[p,q] v(e)_q W_O[h]                              (P a pattern node)

A slot holds a residual-stream node, the constant `one` (the slot's bias, e.g. b_Q1 + b_ln W_Q1) or
`R` = the whole normalised input of the block plus that bias (an exact remainder). Expanding a node
replaces one slot argument by its children — `R` by the parts of the residual stream (and `one`), a
nested node by its own children — so the children sum exactly to the parent (multilinearity).

Aggregates: `head{l}.{h}` = head(A(R,R,R,R), R) and `mlp{l}` = mlp(R', R'). Leaves: tok, pos, bO, bout,
one, bU. The `kind` strings reuse "head" and "pair" so `PathDecomposition` frames classify terms.
"""

from __future__ import annotations

from typing import Optional

from hooked_bilinear.circuits.nodes import LEAVES, leaf_label  # shared with the frozen path nodes

HEAD_SLOTS = ("q1", "k1", "q2", "k2")


class UNode:
    """One interned node of the unfrozen grammar; create them with `UNodeTable.get`."""

    __slots__ = ("id", "kind", "layer", "head", "args", "where", "expandable", "degree", "_label", "_sig", "_tree")

    def __init__(self, id: int, kind: str, layer: Optional[int], head: Optional[int], args: tuple, where: str):
        self.id, self.kind, self.layer, self.head, self.args, self.where = id, kind, layer, head, args, where
        self._label = self._sig = self._tree = None
        if kind == "R":
            self.expandable, self.degree = True, None
        elif kind in LEAVES:
            self.expandable, self.degree = False, (1 if kind in ("tok", "pos") else 0)
        else:
            self.expandable = any(a.expandable for a in args)
            degs = [a.degree for a in args]
            self.degree = None if None in degs else sum(degs)

    def __repr__(self) -> str:
        return f"UNode({self.label})"

    @property
    def is_aggregate(self) -> bool:
        """True for head{l}.{h} / mlp{l} / A{l}.{h}: every slot still the whole input R."""
        return self.kind in ("head", "pair", "pat") and all(
            a.kind == "R" or (a.kind == "pat" and a.is_aggregate) for a in self.args)

    @property
    def label(self) -> str:
        """E.g. `head1.0(A[tok, tok, pos, head0.1], v=tok)`, `mlp0(tok, x)`; `x` = the whole block input."""
        if self._label is None:
            self._label = self._render(lambda a: a.label, True)
        return self._label

    @property
    def signature(self) -> str:
        """The tree shape with token/position leaves erased to `·`."""
        if self._sig is None:
            self._sig = self._render(lambda a: a.signature, False)
        return self._sig

    def _render(self, sub, names: bool) -> str:
        k, l = self.kind, self.layer
        if k in LEAVES:
            return leaf_label(k, l, names)
        if k == "R":
            return "x"
        if self.is_aggregate:
            return {"head": f"head{l}.{self.head}", "pair": f"mlp{l}", "pat": f"A{l}.{self.head}"}[k]
        if k == "pat":
            return "A[" + ", ".join(sub(a) for a in self.args) + "]"
        if k == "head":
            return f"head{l}.{self.head}({sub(self.args[0])}, v={sub(self.args[1])})"
        return f"mlp{l}({sub(self.args[0])}, {sub(self.args[1])})"

    @property
    def tree(self) -> tuple:
        if self._tree is None:
            k = self.kind
            if k in ("tok", "pos", "bU", "R"):
                t = (k,) if k != "R" else ("R", self.layer, self.where)
            elif k in ("bO", "bout", "one"):
                t = (k, self.layer)
            elif k == "pat":
                t = ("pattern", self.layer, self.head, *(a.tree for a in self.args))
            elif k == "head":
                t = ("head", self.layer, self.head, self.args[0].tree, self.args[1].tree)
            else:
                t = ("mlp", self.layer, self.args[0].tree, self.args[1].tree)
            self._tree = t
        return self._tree

    def components(self) -> list[tuple[str, int, Optional[int]]]:
        out = []
        if self.kind == "head":
            out.append(("head", self.layer, self.head))
        elif self.kind == "pair":
            out.append(("mlp", self.layer, None))
        for a in self.args:
            out += a.components()
        return out


class UNodeTable:
    """Interns nodes and knows the grammar: the parts of each block's input and every node's children."""

    def __init__(self, n_layers: int, n_heads: int, has_pos: bool, has_mlp: bool, bO: list[bool],
                 bout: list[bool], one_attn: list[bool], one_mlp: list[bool]):
        self.n_layers, self.n_heads, self.has_pos, self.has_mlp = n_layers, n_heads, has_pos, has_mlp
        self.has_bO, self.has_bout, self.one_attn, self.one_mlp = bO, bout, one_attn, one_mlp
        self._table: dict[tuple, UNode] = {}
        self.nodes: list[UNode] = []

    def get(self, kind: str, layer: Optional[int] = None, head: Optional[int] = None, args: tuple = (),
            where: str = "") -> UNode:
        key = (kind, layer, head, tuple(a.id for a in args), where)
        node = self._table.get(key)
        if node is None:
            node = UNode(len(self.nodes), kind, layer, head, args, where)
            self._table[key] = node
            self.nodes.append(node)
        return node

    # ------------------------------------------------------------------ aggregates and residual parts
    def head_c(self, l: int, h: int) -> UNode:
        R = self.get("R", l, where="attn")
        return self.get("head", l, h, (self.get("pat", l, h, (R, R, R, R)), R))

    def mlp_c(self, l: int) -> UNode:
        R = self.get("R", l, where="mlp")
        return self.get("pair", l, None, (R, R))

    def parts_pre(self, l: int) -> list[UNode]:
        """Top-level components of the residual stream entering block l (l = n_layers: the final one)."""
        parts = [self.get("tok")] + ([self.get("pos")] if self.has_pos else [])
        for lp in range(l):
            parts += self._attn_parts(lp)
            if self.has_mlp:
                parts.append(self.mlp_c(lp))
                if self.has_bout[lp]:
                    parts.append(self.get("bout", lp))
        return parts

    def _attn_parts(self, l: int) -> list[UNode]:
        parts = [self.head_c(l, h) for h in range(self.n_heads)]
        return parts + ([self.get("bO", l)] if self.has_bO[l] else [])

    def r_children(self, R: UNode) -> list[UNode]:
        """The parts of block R.layer's attention ("attn") or MLP ("mlp") input, plus its constant."""
        l = R.layer
        if R.where == "attn":
            return self.parts_pre(l) + ([self.get("one", l, where="attn")] if self.one_attn[l] else [])
        parts = self.parts_pre(l) + self._attn_parts(l)
        return parts + ([self.get("one", l, where="mlp")] if self.one_mlp[l] else [])

    # ------------------------------------------------------------------ expansion
    def _slot_order(self, node: UNode) -> Optional[int]:
        """Which argument to expand: the first whole-input `R` slot (value before pattern for heads),
        else the first expandable argument."""
        args = node.args
        order = (1, 0) if node.kind == "head" else range(len(args))
        for i in order:
            a = args[i]
            if a.kind == "R" or (a.kind == "pat" and any(s.kind == "R" for s in a.args)):
                return i
        for i in order:
            if args[i].expandable:
                return i
        return None

    def children(self, node: UNode) -> list[UNode]:
        """Exact expansion: one argument replaced by each of its children."""
        if node.kind == "R":
            return self.r_children(node)
        i = self._slot_order(node) if node.kind in ("head", "pair", "pat") else None
        if i is None:
            raise ValueError(f"{node.label} is a leaf tree and cannot be expanded")
        out = []
        for c in self.children(node.args[i]):
            args = node.args[:i] + (c,) + node.args[i + 1:]
            out.append(self.get(node.kind, node.layer, node.head, args))
        return out

    def n_children(self, node: UNode) -> int:
        if not node.expandable:
            return 0
        if node.kind == "R":
            return len(self.r_children(node))
        return self.n_children(node.args[self._slot_order(node)])

    def mlp_inputs(self, l: int):
        raise KeyError("pair tables need the frozen-pattern grammar; bilinear-attention terms are ordered slots "
                       "(use to_frame() / group('signature'))")
