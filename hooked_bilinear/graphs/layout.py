"""Where each node of an attribution graph is drawn, and what its hover card says (pure pandas).

Rows (y): 0 = embeddings and positions, `l + 1` = block l (its neurons, its constants, the
remainders of edges from layer l), `n_layers + 1` = logits and the `b_U` constant. Columns (x): the
token position, with the nodes of one (row, position) cell spread over ±0.4 around it, the largest
|activation| nearest the position's own tick.
"""

from __future__ import annotations

import html
import math

KIND_ORDER = ("logit", "neuron", "feature", "pattern", "error", "remainder", "constant", "embedding", "position")
CELL_WIDTH = 0.8


def node_layout(graph, top_sources: int = 5):
    """The nodes frame plus drawing columns.

    Args:
        graph: an `AttributionGraph` (`nodes`, `edges`, `meta`).
        top_sources: how many incoming edges each hover card lists (largest |weight| first).

    Returns:
        A copy of `graph.nodes` with `x`, `y` (floats), `n_in` (incoming edges), `sum_in`
        (Σ incoming weights), `abs_in` (Σ |incoming|), `err` (|sum_in - activation| for rows,
        NaN for leaves), `rel_err` (err / abs_in) and `hover` (HTML for the card).
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
    nodes["x"] = pos.astype(float) + _offsets(nodes, pos)

    grouped = edges.assign(abs=edges["weight"].abs()).groupby("target")
    stats = grouped.agg(n_in=("weight", "size"), sum_in=("weight", "sum"), abs_in=("abs", "sum"))
    nodes = nodes.join(stats, on="node_id")
    nodes["n_in"] = nodes["n_in"].fillna(0).astype(int)
    rows = nodes["n_in"] > 0
    if "is_row" in nodes.columns:
        rows &= nodes["is_row"].astype(bool)
    nodes["err"] = (nodes["sum_in"] - nodes["activation"]).abs().where(rows)
    nodes["rel_err"] = nodes["err"] / nodes["abs_in"].where(nodes["abs_in"] > 0)

    labels = dict(zip(nodes["node_id"], nodes["label"].astype(str)))
    ranked = edges.assign(abs=edges["weight"].abs()).sort_values("abs", ascending=False, kind="stable")
    top = {t: list(zip(g["source"], g["weight"])) for t, g in ranked.groupby("target", sort=False).head(top_sources)
           .groupby("target", sort=False)}
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


def _offsets(nodes, pos):
    """Spread the nodes of each (row, position) cell evenly over CELL_WIDTH, biggest first."""
    rank = nodes["kind"].map({k: i for i, k in enumerate(KIND_ORDER)}).fillna(len(KIND_ORDER))
    size = nodes["activation"].abs().fillna(0.0)
    order = nodes.assign(_pos=pos, _rank=rank, _size=-size).sort_values(["y", "_pos", "_rank", "_size"], kind="stable")
    offsets = [0.0] * len(nodes)
    for _, cell in order.groupby(["y", "_pos"], sort=False):
        n = len(cell)
        for i, idx in enumerate(cell.index):
            offsets[idx] = 0.0 if n == 1 else CELL_WIDTH * (i / (n - 1) - 0.5)
    return offsets


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
        lines.append(f"Σ incoming ({row.n_in} edges): {_fmt(row.sum_in)} vs activation: "
                     f"err {row.err:.2e}, rel {row.rel_err:.2e} ({verdict})")
    influence = getattr(row, "influence", float("nan"))
    if influence == influence:
        lines.append(f"influence: {float(influence):.4g}")
    if sources:
        lines.append("top sources:")
        lines += [f"&nbsp;&nbsp;{w:+.4g} &nbsp;{esc(labels.get(s, str(s)))}" for s, w in sources]
    return "<br>".join(lines)
