"""Influence, pruning and scores: circuit-tracer's formulas (`graph.py` there) as pure functions of a graph.

With A the adjacency (rows = targets, columns = sources) and Â = |A| with rows normalised to sum to 1,
the influence of every node on the logit nodes is `w (Â + Â² + …)` (w = the logit weights). Pruning
keeps the fewest nodes reaching `node_threshold` of the influence, then the fewest edges reaching
`edge_threshold` of the edge influence, and drops nodes left without outgoing (or, for rows, incoming)
edges; embeddings and logits are always kept. The edge list is a DAG, so the series is a sweep per layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALWAYS_KEPT = ("embedding", "logit")


@dataclass(frozen=True)
class _Index:
    n: int
    src: np.ndarray
    tgt: np.ndarray
    w: np.ndarray


def _index(graph) -> _Index:
    """Every edge as node positions (source, target) and |weight|."""
    pos = {nid: i for i, nid in enumerate(graph.nodes["node_id"])}
    src = graph.edges["source"].map(pos).to_numpy()
    tgt = graph.edges["target"].map(pos).to_numpy()
    return _Index(len(pos), src, tgt, np.abs(graph.edges["weight"].to_numpy(dtype=np.float64)))


def _restrict(ix: _Index, node_mask: np.ndarray) -> tuple[_Index, np.ndarray]:
    """The edges between kept nodes, and where they sit among all edges."""
    keep = np.flatnonzero(node_mask[ix.src] & node_mask[ix.tgt])
    return _Index(ix.n, ix.src[keep], ix.tgt[keep], ix.w[keep]), keep


def _normalised(ix: _Index) -> np.ndarray:
    row = np.bincount(ix.tgt, weights=ix.w, minlength=ix.n)
    return ix.w / np.maximum(row[ix.tgt], 1e-10)


def logit_weights(graph) -> np.ndarray:
    """circuit-tracer's weights: the targets' probabilities (uniform when they are not token logits)."""
    nodes = graph.nodes
    w = np.zeros(len(nodes))
    tgt = nodes["is_target"].to_numpy(dtype=bool)
    p = nodes["token_prob"].to_numpy(dtype=np.float64)
    w[tgt] = p[tgt] if (p[tgt] > 0).all() and graph.meta.get("default_targets", True) else 1.0 / max(1, tgt.sum())
    return w


def _influence(ix: _Index, a: np.ndarray, lw: np.ndarray, max_iter: int = 1000) -> np.ndarray:
    cur = np.bincount(ix.src, weights=lw[ix.tgt] * a, minlength=ix.n)
    total = cur.copy()
    for _ in range(max_iter):
        if not cur.any():
            return total
        cur = np.bincount(ix.src, weights=cur[ix.tgt] * a, minlength=ix.n)
        total += cur
    raise RuntimeError(f"influence did not converge in {max_iter} iterations (the graph has a cycle)")


def node_influence(graph) -> np.ndarray:
    """Influence of every node on the targets, `w (Â + Â² + …)` (the targets themselves get 0)."""
    ix = _index(graph)
    return _influence(ix, _normalised(ix), logit_weights(graph))


def _threshold(scores: np.ndarray, frac: float) -> float:
    s = np.sort(scores)[::-1]
    if s.sum() <= 0:
        return np.inf
    cum = np.cumsum(s) / s.sum()
    return s[min(int(np.searchsorted(cum, frac)), len(s) - 1)]


def prune_masks(graph, node_threshold: float = 0.8, edge_threshold: float = 0.98):
    """(node mask, edge mask) of circuit-tracer's pruning (see the module docstring)."""
    for name, v in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {v}")
    nodes = graph.nodes
    kind = nodes["kind"].to_numpy()
    always = np.isin(kind, ALWAYS_KEPT)
    is_row = nodes["is_row"].to_numpy(dtype=bool) & ~always
    lw = logit_weights(graph)
    full = _index(graph)
    infl = _influence(full, _normalised(full), lw)
    node_mask = (infl >= _threshold(infl, node_threshold)) | always  # over every node, as circuit-tracer
    ix, alive = _restrict(full, node_mask)
    a = _normalised(ix)
    score = a * (_influence(ix, a, lw) + lw)[ix.tgt]
    keep_e = score >= _threshold(score, edge_threshold)
    src_all, tgt_all = full.src, full.tgt
    edge_mask = np.zeros(len(graph.edges), dtype=bool)
    edge_mask[alive[keep_e]] = True
    while True:
        before = node_mask.copy()
        edge_mask &= node_mask[src_all] & node_mask[tgt_all]
        has_out = np.bincount(src_all[edge_mask], minlength=len(nodes)) > 0
        has_in = np.bincount(tgt_all[edge_mask], minlength=len(nodes)) > 0
        node_mask &= always | has_out
        node_mask &= ~is_row | has_in | always
        if (node_mask == before).all():
            break
    return node_mask, edge_mask


def scores(graph) -> tuple[float, float]:
    """(replacement, completeness) by circuit-tracer's formulas; error nodes are those of kind "error"."""
    nodes = graph.nodes
    kind = nodes["kind"].to_numpy()
    ix = _index(graph)
    a = _normalised(ix)
    lw = logit_weights(graph)
    infl = _influence(ix, a, lw)
    err = kind == "error"
    tok = infl[kind == "embedding"].sum()
    replacement = tok / (tok + infl[err].sum()) if tok + infl[err].sum() > 0 else 1.0
    err_frac = np.bincount(ix.tgt, weights=a * err[ix.src], minlength=ix.n)
    out = infl + lw
    completeness = float(((1 - err_frac) * out).sum() / out.sum())
    return float(replacement), completeness
