"""Path-tree nodes (spec §2.3 grammar) and the expansion rules that relate them.

Every node's value is a [batch, pos, d_model] contribution to the residual stream:

    leaves      tok | pos | bO_l | bout_l | bU (the unembedding bias, a logit-space constant)
    one_l       the constant-1 coordinate appended to MLP l's normed input (only inside MLP pairs)
    head_c      comp(h_l.h): the head's whole output (aggregate)         mlp_c   comp(m_l) (aggregate)
    head        head(l,h,X) = A^{l,h} (X/σ1) W_V'' W_O                     linear in X
    sq          mlp(l,X,X)  = ((X̃ W_l') ⊙ (X̃ W_r')) W_out                 B(X,X)
    pair        mlp(l,X,Y)  = B(X,Y) + B(Y,X) = 2 B_sym(X,Y), unordered     (spec §1.3, §7.1)

Expansion (children always sum exactly to the parent, given frozen A and σ):
    head_c(l,h) → head(l,h,c), c ∈ parts(resid_pre l)
    mlp_c(l)    → sq(c) ∪ pair(c,c') (c<c'), c ∈ parts(resid_mid l) ∪ {one_l}     (the level-2 table)
    head(l,h,X) → head(l,h,x),  x ∈ children(X)
    sq(l,X)     → sq(x) ∪ pair(x,x') (x<x'),  x ∈ children(X)
    pair(l,X,Y) → pair(x,Y) over children of X (or of Y once X is a leaf tree)
"""

from __future__ import annotations

from typing import Optional

LEAVES = ("tok", "pos", "bO", "bout", "one", "bU")


def leaf_label(kind: str, layer: Optional[int], names: bool) -> str:
    """A leaf's label; without `names`, token and position leaves are erased to `·` (signatures)."""
    if not names and kind in ("tok", "pos"):
        return "·"
    return {"tok": "tok", "pos": "pos", "bO": f"bO{layer}", "bout": f"bout{layer}", "one": "1", "bU": "bU"}[kind]
AGGREGATES = ("head_c", "mlp_c")
_RANK = {
    "tok": lambda l, h: (-1, 0, 0), "pos": lambda l, h: (-1, 1, 0), "bU": lambda l, h: (1 << 30, 0, 0),
    "head_c": lambda l, h: (l, 0, h), "head": lambda l, h: (l, 0, h), "bO": lambda l, h: (l, 1, 0),
    "one": lambda l, h: (l, 2, 0), "mlp_c": lambda l, h: (l, 3, 0), "sq": lambda l, h: (l, 3, 0),
    "pair": lambda l, h: (l, 3, 0), "bout": lambda l, h: (l, 4, 0),
}


class Node:
    """One interned path-tree node; create them with `NodeTable.get`."""

    __slots__ = ("id", "kind", "layer", "head", "args", "expandable", "degree", "key", "shape_key", "_label", "_sig", "_tree")

    def __init__(self, id: int, kind: str, layer: Optional[int], head: Optional[int], args: tuple["Node", ...]):
        self.id, self.kind, self.layer, self.head, self.args = id, kind, layer, head, args
        self._label = self._sig = self._tree = None
        # residual-stream order (tok, pos, heads, bO, ONE, mlp, bout per layer), then the arguments':
        # orders the two arguments of an unordered pair the same way however the pair was reached
        self.key = (_RANK[kind](layer, head), *(a.key for a in args))
        rank = (-1, 0, 0) if kind in ("tok", "pos") else self.key[0]
        self.shape_key = (rank, *sorted(a.shape_key for a in args))  # the same with leaves erased
        if kind in AGGREGATES:
            self.expandable, self.degree = True, None
        elif kind in LEAVES:
            self.expandable, self.degree = False, (1 if kind in ("tok", "pos") else 0)
        else:
            self.expandable = any(a.expandable for a in args)
            degs = [a.degree for a in args]
            if kind == "sq":
                degs = degs * 2
            self.degree = None if None in degs else sum(degs)

    def __repr__(self) -> str:
        return f"Node({self.label})"

    # ------------------------------------------------------------------ readable forms
    @property
    def label(self) -> str:
        """E.g. `mlp1(tok, head0.3(tok))`; aggregates read `head0.3`, `mlp1` (exact remainders)."""
        if self._label is None:
            self._label = self._render(lambda a: a.label, leaf_names=True)
        return self._label

    @property
    def signature(self) -> str:
        """The tree shape with leaf identities erased, e.g. `mlp1(·, head0.3(·))` (spec §2.3 item 4)."""
        if self._sig is None:
            self._sig = self._render(lambda a: a.signature, leaf_names=False)
        return self._sig

    def _render(self, sub, leaf_names: bool) -> str:
        k, l = self.kind, self.layer
        if k in LEAVES:
            return leaf_label(k, l, leaf_names)
        if k == "head_c":
            return f"head{l}.{self.head}"
        if k == "mlp_c":
            return f"mlp{l}"
        if k == "head":
            return f"head{l}.{self.head}({sub(self.args[0])})"
        a, b = (self.args[0], self.args[0]) if k == "sq" else self.args
        if not leaf_names and b.shape_key < a.shape_key:
            a, b = b, a  # one signature per shape, however the leaves ordered the pair
        return f"mlp{l}({sub(a)}, {sub(b)})"

    @property
    def tree(self) -> tuple:
        """Nested tuple form, e.g. ('mlp', 1, ('tok',), ('head', 0, 3, ('tok',)))."""
        if self._tree is None:
            k = self.kind
            if k in ("tok", "pos", "bU"):
                t = (k,)
            elif k in ("bO", "bout", "one", "mlp_c"):
                t = (k, self.layer)
            elif k == "head_c":
                t = (k, self.layer, self.head)
            elif k == "head":
                t = ("head", self.layer, self.head, self.args[0].tree)
            else:
                x = self.args[0].tree
                t = ("mlp", self.layer, x, x if k == "sq" else self.args[1].tree)
            self._tree = t
        return self._tree

    def components(self) -> list[tuple[str, int, Optional[int]]]:
        """Every (kind, layer, head) of heads and MLPs on the tree (with repeats)."""
        out = []
        if self.kind in ("head", "head_c"):
            out.append(("head", self.layer, self.head))
        elif self.kind in ("sq", "pair", "mlp_c"):
            out.append(("mlp", self.layer, None))
        for a in self.args:
            out += a.components()
        return out


class NodeTable:
    """Interns nodes so equal trees are one object (memoisation by id); knows the model's structure."""

    def __init__(self, n_layers: int, n_heads: int, has_pos: bool, bO: list[bool], bout: list[bool],
                 one: list[bool], has_mlp: bool):
        self.n_layers, self.n_heads, self.has_mlp = n_layers, n_heads, has_mlp
        self.has_pos, self.has_bO, self.has_bout, self.has_one = has_pos, bO, bout, one
        self._table: dict[tuple, Node] = {}
        self.nodes: list[Node] = []

    def get(self, kind: str, layer: Optional[int] = None, head: Optional[int] = None, args: tuple = ()) -> Node:
        if kind == "pair" and args[1].key < args[0].key:
            args = (args[1], args[0])  # unordered: one canonical node per pair
        key = (kind, layer, head, tuple(a.id for a in args))
        node = self._table.get(key)
        if node is None:
            node = Node(len(self.nodes), kind, layer, head, args)
            self._table[key] = node
            self.nodes.append(node)
        return node

    # ------------------------------------------------------------------ the grammar
    def parts_pre(self, l: int) -> list[Node]:
        """Top-level components of the residual stream entering layer l (TL decompose_resid + heads)."""
        parts = [self.get("tok")] + ([self.get("pos")] if self.has_pos else [])
        for lp in range(l):
            parts += self._attn_parts(lp)
            if self.has_mlp:
                parts.append(self.get("mlp_c", lp))
                if self.has_bout[lp]:
                    parts.append(self.get("bout", lp))
        return parts

    def _attn_parts(self, l: int) -> list[Node]:
        parts = [self.get("head_c", l, h) for h in range(self.n_heads)]
        return parts + ([self.get("bO", l)] if self.has_bO[l] else [])

    def mlp_inputs(self, l: int) -> list[Node]:
        """The K components feeding MLP l: parts of resid_mid(l), then ONE if the MLP has biases."""
        parts = self.parts_pre(l) + self._attn_parts(l)
        return parts + ([self.get("one", l)] if self.has_one[l] else [])

    def square_children(self, kind_layer: int, xs: list[Node]) -> list[Node]:
        """sq(x) for each x then pair(x_i, x_j) for i < j: the unordered expansion of B(Σx, Σx)."""
        out = [self.get("sq", kind_layer, None, (x,)) for x in xs]
        for i, x in enumerate(xs):
            out += [self.get("pair", kind_layer, None, (x, y)) for y in xs[i + 1:]]
        return out

    def n_children(self, node: Node) -> int:
        """len(children(node)), without creating any node."""
        k = node.kind
        if k == "head_c":
            return len(self.parts_pre(node.layer))
        if k == "mlp_c":
            n = len(self.mlp_inputs(node.layer))
            return n * (n + 1) // 2
        if k == "head":
            return self.n_children(node.args[0])
        if k == "sq":
            n = self.n_children(node.args[0])
            return n * (n + 1) // 2
        if k == "pair":
            x, y = node.args
            return self.n_children(x if x.expandable else y)
        return 0

    def children(self, node: Node) -> list[Node]:
        """The exact expansion of `node` (see the module docstring)."""
        k, l = node.kind, node.layer
        if k == "head_c":
            return [self.get("head", l, node.head, (c,)) for c in self.parts_pre(l)]
        if k == "mlp_c":
            return self.square_children(l, self.mlp_inputs(l))
        if k == "head":
            return [self.get("head", l, node.head, (c,)) for c in self.children(node.args[0])]
        if k == "sq":
            return self.square_children(l, self.children(node.args[0]))
        if k == "pair":
            x, y = node.args
            if x.expandable:
                return [self.get("pair", l, None, (c, y)) for c in self.children(x)]
            return [self.get("pair", l, None, (x, c)) for c in self.children(y)]
        raise ValueError(f"{node.label} is a leaf tree and cannot be expanded")
