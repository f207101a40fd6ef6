"""Where each node of an attribution graph is drawn, and what its hover card says (pure pandas).

Rows (y): 0 = embeddings and positions, `l + 1` = block l (its neurons, its constants, the
remainders of edges from layer l), `n_layers + 1` = logits and the `b_U` constant. Columns (x): one
per token position, as wide as its most crowded cell needs (circuit-tracer's polylinear x scale), at
least a fifth of the widest; when that still leaves less than MIN_SPACING_PX per node, the nodes of a
cell wrap onto up to MAX_LINES lines within ±0.35 of their row. In a cell, nodes go in KIND_ORDER,
then by |activation|, largest first.
"""

from __future__ import annotations

import html
import math

KIND_ORDER = ("logit", "embedding", "position", "neuron", "feature", "pattern", "constant", "error", "remainder")
PLOT_WIDTH_PX = 1100
MIN_SPACING_PX = 10
MAX_LINES = 8


def node_layout(graph, top_sources: int = 5):
    """The nodes frame plus drawing columns.

    Args:
        graph: an `AttributionGraph` (`nodes`, `edges`, `meta`).
        top_sources: how many incoming edges each hover card lists (largest |weight| first).

    Returns:
        A copy of `graph.nodes` with `x`, `y` (floats), `n_in` (incoming edges), `sum_in`
        (Σ incoming weights), `abs_in` (Σ |incoming|), `pruned` (the exact incoming mass pruning
        removed, `pruned_in`, 0 when unpruned; NaN for leaves), `err` (|sum_in + pruned -
        activation| for rows, NaN for leaves), `rel_err` (err over the row's Σ|edges|, `abs_mass`
        when known, as `graph.check()` computes it) and `hover` (HTML for the card).
        `attrs["columns"]` maps each position to its (left, right) x extent.
    """
    nodes = graph.nodes.copy().reset_index(drop=True)
    edges = graph.edges
    n_layers = int(graph.meta.get("n_layers", max(int(nodes["layer"].max()), 0)))
    nodes["y"] = [_row(kind, int(layer), n_layers) for kind, layer in zip(nodes["kind"], nodes["layer"])]
    pos = nodes["pos"].astype(int).copy()
    if (pos < 0).any():  # aggregates without a position: the position of the node they feed
        feeds = dict(zip(edges["source"], edges["target"]))
        at = dict(zip(nodes["node_id"], nodes["pos"]))
        pos[pos < 0] = [int(at.get(feeds.get(i), 0)) for i in nodes.loc[pos < 0, "node_id"]]
    nodes["x"], nodes["y"], columns = _place(nodes, pos)

    grouped = edges.assign(abs=edges["weight"].abs()).groupby("target")
    stats = grouped.agg(n_in=("weight", "size"), sum_in=("weight", "sum"), abs_in=("abs", "sum"))
    nodes = nodes.join(stats, on="node_id")
    nodes["n_in"] = nodes["n_in"].fillna(0).astype(int)
    rows = nodes["n_in"] > 0
    if "is_row" in nodes.columns:
        rows &= nodes["is_row"].astype(bool)
    pruned = nodes["pruned_in"].fillna(0.0) if "pruned_in" in nodes.columns else 0.0 * nodes["n_in"]
    nodes["pruned"] = pruned.where(rows)
    nodes["err"] = (nodes["sum_in"] + pruned - nodes["activation"]).abs().where(rows)
    mass = nodes["abs_in"]
    if "abs_mass" in nodes.columns:  # the row's Σ|edges| before truncation, as graph.check() divides by
        mass = nodes["abs_mass"].where(nodes["abs_mass"].notna(), mass)
    nodes["rel_err"] = nodes["err"] / mass.where(mass > 0)

    nodes.attrs["columns"] = columns
    labels = dict(zip(nodes["node_id"], nodes["label"].astype(str)))
    ranked = edges.assign(abs=edges["weight"].abs()).sort_values("abs", ascending=False, kind="stable")
    ranked = ranked[ranked.groupby("target", sort=False).cumcount() < top_sources]
    top: dict = {}
    for t, s, w in zip(ranked["target"], ranked["source"], ranked["weight"]):
        top.setdefault(t, []).append((s, w))
    nodes["hover"] = [_card(row, top.get(row.node_id, []), labels) for row in nodes.itertuples(index=False)]
    return nodes


def row_labels(n_layers: int) -> dict:
    """Tick text of each row: {0: "Emb", 1: "L0", ..., n_layers + 1: "Lgt"}."""
    return {0: "Emb", **{l + 1: f"L{l}" for l in range(n_layers)}, n_layers + 1: "Lgt"}


def _row(kind: str, layer: int, n_layers: int) -> int:
    if kind == "logit" or layer >= n_layers:
        return n_layers + 1
    if kind in ("embedding", "position") or layer < 0:
        return 0
    return layer + 1


def _place(nodes, pos):
    """x, y of every node and the x extent of each position's column (see the module docstring)."""
    rank = nodes["kind"].map({k: i for i, k in enumerate(KIND_ORDER)}).fillna(len(KIND_ORDER))
    order = nodes.assign(_pos=pos, _rank=rank, _size=-nodes["activation"].abs().fillna(0.0))
    order = order.sort_values(["y", "_pos", "_rank", "_size"], kind="stable")
    cells = order.groupby(["y", "_pos"], sort=False)
    n_pos = int(pos.max()) + 1 if len(pos) else 1
    crowd = [0] * n_pos
    for (_, p), cell in cells:
        crowd[p] = max(crowd[p], len(cell))
    for lines in range(1, MAX_LINES + 1):  # the fewest lines giving every node MIN_SPACING_PX
        floor = max(1.0, 0.2 * max(crowd) / lines)
        width = [max(math.ceil(c / lines), floor) for c in crowd]
        if PLOT_WIDTH_PX / sum(width) >= MIN_SPACING_PX:
            break
    left = [sum(width[:p]) for p in range(n_pos)]
    x, y = nodes["y"].astype(float).copy(), nodes["y"].astype(float).copy()
    for (row, p), cell in cells:
        n = len(cell)
        n_lines = min(lines, math.ceil(n / width[p]))
        per_line = math.ceil(n / n_lines)
        gap = 0.0 if n_lines == 1 else 0.7 / (n_lines - 1)
        for i, idx in enumerate(cell.index):
            line, slot = divmod(i, per_line)
            x[idx] = left[p] + (slot + 0.5) * width[p] / per_line
            y[idx] = row + (line - (n_lines - 1) / 2) * gap
    return x, y, {p: (left[p], left[p] + width[p]) for p in range(n_pos)}


def _fmt(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):+.5g}"


def _card(row, sources: list, labels: dict) -> str:
    esc = html.escape
    lines = [f"<b>{esc(str(row.label))}</b>",
             f"{esc(str(row.node_id))} · {esc(str(row.kind))} · layer {row.layer} · pos {row.pos}",
             f"activation: {_fmt(row.activation)}"]
    if row.n_in == 0:
        lines.append("leaf: no incoming edges")
    elif math.isnan(row.err):
        lines.append(f"Σ incoming ({row.n_in} edges): {_fmt(row.sum_in)}")
    else:
        verdict = "exact" if row.rel_err <= 1e-5 or row.err <= 1e-9 else "NOT exact"
        extra = f" + pruned mass {_fmt(row.pruned)}" if row.pruned else ""
        lines.append(f"Σ incoming ({row.n_in} edges): {_fmt(row.sum_in)}{extra} vs activation: "
                     f"err {row.err:.2e}, rel {row.rel_err:.2e} ({verdict})")
    influence = getattr(row, "influence", float("nan"))
    if influence == influence:
        lines.append(f"influence: {float(influence):.4g}")
    why = getattr(row, "why", "")
    if isinstance(why, str) and why:
        lines.append(f"attention: {esc(why)}")
    if sources:
        lines.append("top sources:")
        lines += [f"&nbsp;&nbsp;{w:+.4g} &nbsp;{esc(labels.get(s, str(s)))}" for s, w in sources]
    return "<br>".join(lines)
