"""The fixed-depth decompositions: level 1 (DLA), level 2 (per-MLP pair tables) and full enumeration."""

from __future__ import annotations

import torch
from torch import Tensor

from hooked_bilinear.circuits.counting import count_engine_paths
from hooked_bilinear.circuits.decomposition import PathDecomposition
from hooked_bilinear.circuits.engine import PathEngine
from hooked_bilinear.circuits.errors import TooLargeError, TooManyPathsError
from hooked_bilinear.circuits.nodes import Node


def _norms(V: Tensor) -> Tensor:
    """Residual norm over (positions, d_model) of each of [k, batch, pos, d], averaged over the batch."""
    return V.pow(2).sum((2, 3)).sqrt().mean(1)


def constant_terms(engine: PathEngine) -> tuple[list[Node], Tensor, Tensor]:
    """The unembedding bias b_U' as one term (at the logits); nothing at a residual point."""
    ro = engine.readout
    if ro.const is None:
        return [], ro.reference.new_zeros((0, *ro.reference.shape)), ro.reference.new_zeros(0)
    return [engine.table.get("bU")], ro.const[None], ro.reference.new_full((1,), float("nan"))


def _guard_full_output(engine: PathEngine, n_terms: int, max_elements: int) -> None:
    ro = engine.readout
    if ro.full:
        per_term = ro.reference.numel()
        if n_terms * per_term > max_elements:
            raise TooLargeError(
                f"{n_terms:,} terms × full output {tuple(ro.reference.shape)} = {n_terms * per_term:,} elements, above "
                f"max_elements={max_elements:,}; pass a target (e.g. target=Target.logit(token, pos=-1)) so each "
                "term is one number per sequence, or raise max_elements"
            )


def assemble(engine: PathEngine, groups: list[tuple[list[Node], Tensor]], level, history=None) -> PathDecomposition:
    """Build a PathDecomposition from (nodes, values at the target positions) groups plus b_U'."""
    ro = engine.readout
    nodes = [n for ns, _ in groups for n in ns]
    V = torch.cat([V for _, V in groups])
    values, norms = [ro.values(V)], [_norms(V)]
    c_nodes, c_vals, c_norms = constant_terms(engine)
    return PathDecomposition(
        nodes + c_nodes, torch.cat(values + [c_vals]), torch.cat(norms + [c_norms]), ro.reference,
        level=level, positions=ro.positions, description=ro.describe(), table=engine.table, history=history,
    )


def level1(engine: PathEngine, start: list[Node]) -> PathDecomposition:
    """tok, pos, every head, b_O', every MLP, b_out (and b_U'): TransformerLens's DLA, exact."""
    V = torch.stack([engine.value(x, "tgt") for x in start])
    return assemble(engine, [(start, V)], level=1)


def level2(engine: PathEngine, start: list[Node], max_elements: int) -> PathDecomposition:
    """Level 1 with every MLP replaced by its k(k+1)/2 unordered input pairs (spec §2.3 item 2)."""
    T = engine.table
    n_terms = sum(len(T.mlp_inputs(x.layer)) * (len(T.mlp_inputs(x.layer)) + 1) // 2 if x.kind == "mlp_c" else 1
                  for x in start)
    _guard_full_output(engine, n_terms, max_elements)
    groups, plain = [], []
    for x in start:
        if x.kind == "mlp_c":
            if plain:
                groups.append((plain, torch.stack([engine.value(p, "tgt") for p in plain])))
                plain = []
            groups.append(engine.children_values(x, "tgt"))
        else:
            plain.append(x)
    if plain:
        groups.append((plain, torch.stack([engine.value(p, "tgt") for p in plain])))
    return assemble(engine, groups, level=2)


def full_enumeration(engine: PathEngine, start: list[Node], upto: int, max_terms: int,
                     max_elements: int) -> PathDecomposition:
    """Every fully expanded path tree; the count is computed first and guarded by `max_terms`."""
    n_terms = count_engine_paths(engine.table, upto)
    if n_terms > max_terms:
        raise TooManyPathsError(n_terms, max_terms)
    _guard_full_output(engine, n_terms, max_elements)
    done: list[tuple[list[Node], Tensor]] = []
    leaf_trees = [x for x in start if not x.expandable]
    if leaf_trees:
        done.append((leaf_trees, torch.stack([engine.value(x, "tgt") for x in leaf_trees])))
    todo = [x for x in start if x.expandable]
    while todo:
        node = todo.pop()
        kids, V = engine.children_values(node, "tgt")
        keep = [i for i, c in enumerate(kids) if not c.expandable]
        if keep:
            done.append(([kids[i] for i in keep], V[keep]))
        todo += [c for c in kids if c.expandable]
    decomp = assemble(engine, done, level="full")
    return decomp
