"""The plotly figure of an attribution graph (layout in `layout.py`, the page around it in `html.py`).

Traces, in drawing order: the edges, binned by width (sqrt of |weight| / max, like circuit-tracer's
widths) and sign (green +, purple −), one legend entry per sign; one marker trace per node kind;
two empty traces that the page fills with the clicked node's edges.
"""

from __future__ import annotations

import html
from typing import Optional

from hooked_bilinear.graphs.layout import PLOT_WIDTH_PX, node_layout, row_labels

MAX_EDGES = 2000
WIDTH_BINS = 6
LINKS_PER_NODE = 12
KIND_STYLE = {  # kind: (marker symbol, colour)
    "logit": ("star", "#d62728"), "neuron": ("circle", "#f0a30a"), "feature": ("circle", "#1f77b4"),
    "pattern": ("triangle-up", "#17becf"), "error": ("x", "#7f7f7f"), "remainder": ("diamond", "#8c8c8c"),
    "constant": ("square-open", "#555555"), "embedding": ("square", "#2ca02c"),
    "position": ("square", "#98df8a"),
}
EDGE_COLOUR = {True: "27,120,55", False: "118,42,131"}  # PRGn ends: positive green, negative purple


def figure(graph, *, title: Optional[str] = None, max_edges: int = MAX_EDGES):
    """The plotly `Figure`; `fig.layout.meta["links"]` holds each node's largest edges as segments.

    Args:
        graph: an `AttributionGraph`.
        title: the figure title; defaults to model, prompt, sizes, the worst row error and what was frozen.
        max_edges: draw only this many edges, the largest |weight| first.
    """
    import plotly.graph_objects as go

    nodes = node_layout(graph)
    where = dict(zip(nodes["node_id"], zip(nodes["x"], nodes["y"])))
    edges = graph.edges[graph.edges["source"].isin(where) & graph.edges["target"].isin(where)]
    edges = edges.assign(abs=edges["weight"].abs())
    edges = edges[edges["abs"] > 0]
    shown = edges.nlargest(max_edges, "abs") if len(edges) > max_edges else edges
    fig = go.Figure()
    _edge_traces(fig, shown, where)
    columns = nodes.attrs["columns"]
    slots = max(right for _, right in columns.values())
    size = max(4.0, min(11.0, 0.8 * PLOT_WIDTH_PX / slots))  # the layout leaves ≥ MIN_SPACING_PX per node
    for kind, group in nodes.groupby("kind", sort=False):
        symbol, colour = KIND_STYLE.get(kind, ("circle-open", "#000000"))
        fig.add_trace(go.Scatter(
            x=group["x"], y=group["y"], mode="markers", name=f"{kind} ({len(group)})",
            marker=dict(symbol=symbol, color=colour, size=size, line=dict(width=0.6, color="#222")),
            customdata=group["node_id"].astype(str).tolist(), text=group["hover"].tolist(),
            hovertemplate="%{text}<extra></extra>"))
    for positive in (True, False):  # filled by the page with the clicked node's edges
        fig.add_trace(go.Scatter(x=[], y=[], mode="lines", hoverinfo="skip", showlegend=False,
                                 name="selected +" if positive else "selected -",
                                 line=dict(width=2.5, color=f"rgba({EDGE_COLOUR[positive]},0.95)")))
    fig.update_layout(**_layout(graph, nodes, title, len(shown), len(graph.edges), columns),
                      meta={"links": _links(edges, where)})
    return fig


def _edge_traces(fig, edges, where: dict) -> None:
    import plotly.graph_objects as go

    if not len(edges):
        return
    top = float(edges["abs"].max())
    bins = ((edges["abs"] / top) ** 0.5 * (WIDTH_BINS - 1e-9)).astype(int)
    legend = set()
    for (b, positive), group in edges.groupby([bins, edges["weight"] > 0]):
        xs, ys = [], []
        for s, t in zip(group["source"], group["target"]):
            (x0, y0), (x1, y1) = where[s], where[t]
            xs += [x0, x1, None]
            ys += [y0, y1, None]
        name = "positive edges" if positive else "negative edges"
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="lines", hoverinfo="skip", name=name, legendgroup=name,
            showlegend=name not in legend,
            line=dict(width=0.3 + 3.7 * (b + 1) / WIDTH_BINS,
                      color=f"rgba({EDGE_COLOUR[bool(positive)]},{0.12 + 0.6 * (b + 1) / WIDTH_BINS:.2f})")))
        legend.add(name)


def _links(edges, where: dict) -> dict:
    """{node id: [[x0, y0, x1, y1, sign], ...]}: its LINKS_PER_NODE largest incoming and outgoing edges."""
    ranked = edges.sort_values("abs", ascending=False, kind="stable")
    links: dict = {}
    for end in ("target", "source"):
        top = ranked[ranked.groupby(end, sort=False).cumcount() < LINKS_PER_NODE]
        for node_id, s, t, w in zip(top[end], top["source"], top["target"], top["weight"]):
            links.setdefault(str(node_id), []).append([*where[s], *where[t], 1 if w > 0 else -1])
    return links


def _layout(graph, nodes, title, n_shown: int, n_edges: int, columns: dict) -> dict:
    meta = graph.meta
    n_layers = int(meta.get("n_layers", 0))
    worst = nodes["rel_err"].max()
    default = (f"{meta.get('model_name', '?')}: {str(meta.get('prompt', ''))[:80]!r} · {len(nodes)} nodes, "
               f"{n_shown} of {n_edges} edges drawn · worst row rel. err "
               + ("n/a" if worst != worst else f"{worst:.1e}")
               + (f"<br><sup>frozen: {html.escape(str(meta['frozen']))}</sup>" if meta.get("frozen") else ""))
    tokens = [str(t) for t in meta.get("prompt_tokens", [])]
    ticks = row_labels(n_layers)
    return dict(
        title=dict(text=title or default, font=dict(size=14)), template="plotly_white", hovermode="closest",
        height=max(480, 110 * (n_layers + 2) + 160), margin=dict(l=60, r=20, t=80, b=90),
        xaxis=dict(tickvals=[(a + b) / 2 for a, b in columns.values()], tickangle=-45, zeroline=False,
                   showgrid=False, range=[0, max(b for _, b in columns.values())],
                   ticktext=[f"{p}: {tokens[p]!r}" if p < len(tokens) else str(p) for p in columns]),
        yaxis=dict(tickvals=list(ticks), ticktext=list(ticks.values()), zeroline=False,
                   range=[-0.5, n_layers + 1.5]),
        legend=dict(orientation="h", y=-0.25),
        shapes=[dict(type="line", layer="below", x0=b, x1=b, y0=-0.5, y1=n_layers + 1.5,
                     line=dict(color="#e6e6e6", width=1)) for _, b in list(columns.values())[:-1]])
