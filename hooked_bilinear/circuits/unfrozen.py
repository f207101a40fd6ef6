"""Exact expansion of a model with softmax-free bilinear attention, with no frozen pattern (graphs.md §3).

The pattern `A = mask·(q1·k1)(q2·k2)/attn_scale` is itself a polynomial, so it is expanded like any
other component (grammar: `unfrozen_nodes.py`). With norms that are linear (`None`, `"Scale"`) nothing
at all is frozen and the terms sum to the logits of the real forward pass; with LN/RMS norms only the
norm scales σ are frozen. Entry point: `decompose(model, ...)` dispatches here when
`model.cfg.attention == "bilinear"`; levels 1, 2 and "lazy" (the path engine's `LazyExpansion`
runs unchanged on `UnfrozenEngine`, which has the same `value` / `children_values` interface).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from hooked_bilinear.circuits.frozen import FrozenRun, _centers, _fold_rows, _norm_params
from hooked_bilinear.circuits.qk import rotate
from hooked_bilinear.circuits.target import Readout
from hooked_bilinear.circuits.unfrozen_nodes import HEAD_SLOTS, UNode, UNodeTable

SLOT_WEIGHTS = {"q1": "Q1", "k1": "K1", "q2": "Q2", "k2": "K2", "v": "V"}
LINEAR_NORMS = (None, "Scale")


def frozen_quantities(model) -> str:
    """What the expansion of this bilinear-attention model freezes, for descriptions and checks."""
    if model.cfg.normalization_type in LINEAR_NORMS:
        return "nothing frozen: bilinear attention and linear norms, an exact polynomial of the embeddings"
    return f"patterns expanded, {model.cfg.normalization_type} norm scales frozen"


class UnfrozenEngine:
    """Node values `[batch, pos, d_model]` (patterns `[batch, pos, pos]`) of one forward pass, memoised."""

    def __init__(self, model, run: FrozenRun, readout: Readout):
        self.model, self.run, self.readout = model, run, readout
        cfg, f = model.cfg, run.folded
        dtype, dev = f.W_E.dtype, f.W_E.device
        self.attn = []  # per layer: {slot: (W'' [H,d,e], b'' [H,e])}, W_O, b_O
        one_attn, bO = [], []
        for block in model.blocks:
            w, b = _norm_params(block.ln1, cfg.d_model, dtype, dev)
            center = _centers(block.ln1)
            slots = {}
            for slot, name in SLOT_WEIGHTS.items():
                W = getattr(block.attn, f"W_{name}").detach().to(dtype)
                bias = getattr(block.attn, f"b_{name}").detach().to(dtype) + torch.einsum("d,hde->he", b, W)
                slots[slot] = (_fold_rows(W, w, center), bias)
            self.attn.append((slots, block.attn.W_O.detach().to(dtype), block.attn.b_O.detach().to(dtype)))
            one_attn.append(any(bool((bb != 0).any()) for _, bb in slots.values()))
            bO.append(bool((block.attn.b_O != 0).any()))
        has_mlp = not cfg.attn_only
        nz = lambda t: t is not None and bool((t != 0).any())  # noqa: E731
        self.table = UNodeTable(
            n_layers=cfg.n_layers, n_heads=cfg.n_heads, has_pos=f.W_pos is not None, has_mlp=has_mlp, bO=bO,
            bout=[has_mlp and nz(L.b_out) for L in f.layers], one_attn=one_attn,
            one_mlp=[has_mlp and (nz(L.b_l) or nz(L.b_r)) for L in f.layers],
        )
        self.idx = torch.tensor(readout.positions, device=dev)
        n = run.n
        self.mask = torch.ones(n, n, dtype=torch.bool, device=dev).tril()
        self.positions = torch.arange(n, device=dev)
        self._memo: dict[int, Tensor] = {}
        self._proj: dict[tuple, Tensor] = {}
        self._resid_mid: dict[int, Tensor] = {}
        self.n_computed = 0

    # ------------------------------------------------------------------ slot projections
    def _slot_input(self, node: UNode, l: int, where: str) -> Tensor:
        """The normalised value of a residual node read by block l's attention or MLP, [b, n, d]."""
        run = self.run
        sigma = run.scale1[l] if where == "attn" else run.scale2[l]
        if node.kind == "R":
            x = run.resid[l] if where == "attn" else self.resid_mid(l)
        else:
            x = self.value(node, "all")
        return x / sigma

    def resid_mid(self, l: int) -> Tensor:
        if l not in self._resid_mid:
            parts = self.table._attn_parts(l)
            self._resid_mid[l] = self.run.resid[l] + sum(self.value(x, "all") for x in parts)
        return self._resid_mid[l]

    def head_proj(self, node: UNode, l: int, h: int, slot: str) -> Tensor:
        """Slot `slot` of head (l, h) applied to `node`, rotated for q/k slots: [b, n, d_head]."""
        key = (node.id, l, h, slot)
        if key not in self._proj:
            W, b = self.attn[l][0][slot]
            if node.kind == "one":
                out = b[h].expand(self.run.batch, self.run.n, -1)
            else:
                out = self._slot_input(node, l, "attn") @ W[h] + (b[h] if node.kind == "R" else 0)
            if slot != "v":
                out = rotate(self.model, out, self.positions)
            self._proj[key] = out
        return self._proj[key]

    def mlp_proj(self, node: UNode, l: int, side: int) -> Tensor:
        """Left (side 0) or right (1) branch of MLP l applied to `node`, [b, n, d_mlp]."""
        key = (node.id, l, None, side)
        if key not in self._proj:
            L = self.run.folded.layers[l]
            bias = L.b_l if side == 0 else L.b_r
            if node.kind == "one":
                out = bias.expand(self.run.batch, self.run.n, -1)
            else:
                W = L.W_l if side == 0 else L.W_r
                out = self._slot_input(node, l, "mlp") @ W + (bias if node.kind == "R" else 0)
            self._proj[key] = out
        return self._proj[key]

    def pattern(self, node: UNode) -> Tensor:
        """A(a, b, c, d) of head (l, h), [b, n, n] (0 above the diagonal)."""
        if node.id not in self._memo:
            l, h = node.layer, node.head
            q1, k1, q2, k2 = (self.head_proj(a, l, h, s) for a, s in zip(node.args, HEAD_SLOTS))
            s = (q1 @ k1.transpose(-1, -2)) * (q2 @ k2.transpose(-1, -2)) / self.model.cfg.attn_scale
            self._memo[node.id] = s * self.mask
        return self._memo[node.id]

    # ------------------------------------------------------------------ node values (the engine interface)
    def value(self, node: UNode, where: str = "all") -> Tensor:
        v = self._memo.get(node.id)
        if v is None:
            v = self._compute(node)
            self._memo[node.id] = v
            self.n_computed += 1
        return v if where == "all" else v.index_select(1, self.idx)

    def _compute(self, node: UNode) -> Tensor:
        k, l, run = node.kind, node.layer, self.run
        f, b, n = run.folded, run.batch, run.n
        if k == "tok":
            return f.W_E[run.tokens]
        if k == "pos":
            return f.W_pos[:n].expand(b, n, -1)
        if k == "bO":
            return self.attn[l][2].expand(b, n, -1)
        if k == "bout":
            return f.layers[l].b_out.expand(b, n, -1)
        if k == "head":
            P, e = node.args
            return (self.pattern(P) @ self.head_proj(e, l, node.head, "v")) @ self.attn[l][1][node.head]
        if k == "pair":
            x, y = node.args
            return (self.mlp_proj(x, l, 0) * self.mlp_proj(y, l, 1)) @ f.layers[l].W_out
        raise ValueError(f"{node.label} has no residual-stream value")

    def children_values(self, node: UNode, where: str = "tgt") -> tuple[list[UNode], Tensor]:
        kids = self.table.children(node)
        return kids, torch.stack([self.value(c, where) for c in kids])

    def memo_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in list(self._memo.values()) + list(self._proj.values()))


def level2_unfrozen(engine: UnfrozenEngine, start: list[UNode]) -> list[tuple[list[UNode], Tensor]]:
    """Each MLP as its ordered input pairs, each head split by the source of its values (the pattern an
    exact remainder `A{l}.{h}`, expandable by "lazy")."""
    T = engine.table
    groups, plain = [], []
    for x in start:
        if x.kind == "pair":
            kids = [g for c in T.children(x) for g in T.children(c)]
        elif x.kind == "head":
            kids = T.children(x)
        else:
            plain.append(x)
            continue
        groups.append((kids, torch.stack([engine.value(c, "tgt") for c in kids])))
    if plain:
        groups.append((plain, torch.stack([engine.value(c, "tgt") for c in plain])))
    return groups


def unfrozen_setup(model, tokens, level, target, at, dtype):
    """Validate, run the model once and build the engine and the level-1 terms (shared by every level)."""
    from hooked_bilinear.circuits.decompose import parse_at
    from hooked_bilinear.circuits.frozen import check_bilinear, freeze, to_tokens
    from hooked_bilinear.circuits.target import Target, as_target, target_positions
    from hooked_bilinear.errors import InputError
    from hooked_bilinear.model.validation import check_tokens

    if level not in (1, 2, "lazy"):
        raise InputError(f"a bilinear-attention model is decomposed at level 1, 2 or 'lazy', got {level!r} "
                         "(full enumeration has K^5 terms per head; use level='lazy')")
    check_bilinear(model)
    tokens = check_tokens(to_tokens(model, tokens), model.cfg)
    at_layer = parse_at(at, model.cfg.n_layers)
    target = as_target(target)
    n = tokens.shape[1]
    if target is None and level == "lazy":
        if at_layer is not None:
            raise InputError("lazy expansion at a residual point needs target=Target.direction(u, pos)")
        with torch.no_grad():
            target = Target.logit(model(tokens)[:, -1].argmax(-1))
    positions = target_positions(target, n) if target is not None else list(range(n))
    with torch.no_grad():
        run = freeze(model, tokens, dtype=dtype)
        engine = UnfrozenEngine(model, run, Readout(run, target, at_layer, positions))
    return engine, engine.table.parts_pre(model.cfg.n_layers if at_layer is None else at_layer)


def decompose_unfrozen(model, tokens, *, level, target, at, budget: int, max_terms: int, tol: float,
                       dtype: Optional[torch.dtype], progress: bool):
    """`decompose` for bilinear-attention models; same arguments and result type (see its docstring)."""
    from hooked_bilinear.circuits.lazy import LazyExpansion
    from hooked_bilinear.circuits.levels import assemble

    engine, start = unfrozen_setup(model, tokens, level, target, at, dtype)
    with torch.no_grad():
        if level == 1:
            decomp = assemble(engine, [(start, torch.stack([engine.value(x, "tgt") for x in start]))], level=1)
        elif level == 2:
            decomp = assemble(engine, level2_unfrozen(engine, start), level=2)
        else:
            decomp = LazyExpansion(engine, start, description=describe(engine, model)).run(
                budget, max_terms=max_terms, tol=tol, progress=progress).decomposition()
    decomp.description = describe(engine, model)
    return decomp


def describe(engine: UnfrozenEngine, model) -> str:
    return f"{engine.readout.describe()} ({frozen_quantities(model)})"
