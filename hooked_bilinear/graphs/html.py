"""A self-contained offline page of an attribution graph: plotly's bundled plotly.js inlined, no CDN.

Drawn by layer (y) × position (x) (see `layout.py`); one marker style per node kind; edges as lines
whose width grows with |weight|, green for positive and purple for negative (circuit-tracer's
colours); a hover card and, on click, a details panel per node: label, kind, activation, Σ of its
incoming edges against it, top sources. The page is written by `plotly.io.to_html`; the only
hand-written JavaScript is the glue below (an error trap, the details panel, and tagging each
rendered marker with its node id so a browser test can find it in the DOM).
"""

from __future__ import annotations

import html as _html
from pathlib import Path
from typing import Optional, Union

from hooked_bilinear.graphs.layout import node_layout, row_labels

MAX_NODES = 2000
MAX_EDGES = 5000
WIDTH_BINS = 6
KIND_STYLE = {  # kind: (marker symbol, colour)
    "logit": ("star", "#d62728"), "neuron": ("circle", "#f0a30a"), "feature": ("circle", "#1f77b4"),
    "pattern": ("triangle-up", "#17becf"), "error": ("x", "#7f7f7f"), "remainder": ("diamond", "#8c8c8c"),
    "constant": ("square-open", "#555555"), "embedding": ("square", "#2ca02c"),
    "position": ("square", "#98df8a"),
}
EDGE_COLOUR = {True: "27,120,55", False: "118,42,131"}  # PRGn ends: positive green, negative purple

_PRELUDE = """<div id="hb-errors" style="color:#b00;white-space:pre-wrap"></div>
<script>function hbError(message) {
  document.getElementById('hb-errors').textContent += 'script error: ' + message + '\\n';
  document.body.setAttribute('data-render-error', message); }
window.addEventListener('error', function (e) { hbError(e.message); });
window.addEventListener('unhandledrejection', function (e) { hbError(String(e.reason)); });</script>
<div id="hb-details" style="font:13px sans-serif;padding:8px;border-bottom:1px solid #ccc">
Hover a node for its card; click it to keep the card here.</div>
"""
_GLUE = """var gd = document.getElementById('{plot_id}'), n = 0;
gd.querySelectorAll('g.trace').forEach(function (g) {
  var trace = g.__data__ && g.__data__[0] && g.__data__[0].trace;
  if (!trace || !trace.customdata) return;
  g.querySelectorAll('path.point').forEach(function (p) {
    if (p.__data__ && trace.customdata[p.__data__.i] !== undefined) {
      p.setAttribute('data-node-id', trace.customdata[p.__data__.i]); n += 1; } }); });
gd.on('plotly_click', function (ev) {
  var pt = ev.points[0]; if (pt.customdata === undefined) return;
  document.getElementById('hb-details').innerHTML = pt.text; });
var wanted = decodeURIComponent((location.hash.match(/^#node=(.+)$/) || [])[1] || '');
gd.data.forEach(function (trace, c) {  // #node=<id> opens that node's card
  (trace.customdata || []).forEach(function (id, i) {
    if (id === wanted) { document.getElementById('hb-details').innerHTML = trace.text[i];
      Plotly.Fx.hover(gd, [{curveNumber: c, pointNumber: i}]); } }); });
document.body.setAttribute('data-rendered-nodes', n);
document.body.setAttribute('data-render-ok', n > 0 ? '1' : '0');"""


def to_html(graph, path: Union[str, Path], *, title: Optional[str] = None, prune: Optional[bool] = None,
            max_nodes: int = MAX_NODES, max_edges: int = MAX_EDGES) -> Path:
    """Write `graph` as one self-contained HTML file that renders with no network at all.

    Args:
        graph: an `AttributionGraph`.
        path: the `.html` file to write (folders are created).
        title: page title; defaults to the model, prompt and sizes.
        prune: draw `graph.prune()`; None prunes a graph with more than `max_nodes` nodes when it has a
            `prune` method and is not pruned yet (otherwise it draws what it gets).
        max_nodes: the size above which an unpruned graph is pruned (when `prune` is None).
        max_edges: draw only this many edges, the largest |weight| first (hover cards use all).

    Returns:
        The written path.

    Example:
        >>> to_html(graph, "graph.html")    # doctest: +SKIP
    """
    page = page_html(graph, title=title, prune=prune, max_nodes=max_nodes, max_edges=max_edges)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


def show(graph, *, height: int = 720, **kwargs) -> None:
    """Display the same page in a notebook (an iframe with the page as `srcdoc`; works offline)."""
    from IPython.display import HTML, display

    page = page_html(graph, **kwargs)
    display(HTML(f'<div><iframe srcdoc="{_html.escape(page, quote=True)}" style="width:100%;height:{int(height)}px;'
                 'border:0"></iframe></div>'))


def page_html(graph, *, title: Optional[str] = None, prune: Optional[bool] = None, max_nodes: int = MAX_NODES,
              max_edges: int = MAX_EDGES) -> str:
    """The page as a string (see `to_html`)."""
    import plotly.io as pio

    drawn = _maybe_pruned(graph, prune, max_nodes)
    fig = figure(drawn, title=title, max_edges=max_edges)
    page = pio.to_html(fig, include_plotlyjs=True, full_html=True, div_id="hb-graph", post_script=_GLUE,
                       config={"displaylogo": False, "responsive": True})
    head = f"<head><title>{_html.escape(fig.layout.title.text or 'attribution graph')}</title>"
    return page.replace("<head>", head, 1).replace("<body>", "<body>" + _PRELUDE, 1)


def figure(graph, *, title: Optional[str] = None, max_edges: int = MAX_EDGES):
    """The plotly `Figure` of the graph: edge traces (binned by width and sign), then one trace per kind."""
    import plotly.graph_objects as go

    nodes = node_layout(graph)
    n_layers = int(graph.meta.get("n_layers", 0))
    fig = go.Figure()
    drawn = _edge_traces(fig, nodes, graph.edges, max_edges)
    for kind, group in nodes.groupby("kind", sort=False):
        symbol, colour = KIND_STYLE.get(kind, ("circle-open", "#000000"))
        fig.add_trace(go.Scatter(
            x=group["x"], y=group["y"], mode="markers", name=f"{kind} ({len(group)})",
            marker=dict(symbol=symbol, color=colour, size=11, line=dict(width=0.8, color="#222")),
            customdata=group["node_id"].astype(str).tolist(), text=group["hover"].tolist(),
            hovertemplate="%{text}<extra></extra>"))
    worst = nodes["rel_err"].max()
    meta = graph.meta
    default = (f"{meta.get('model_name', '?')}: {str(meta.get('prompt', ''))[:80]!r} · {len(nodes)} nodes, "
               f"{drawn} of {len(graph.edges)} edges drawn · worst row rel. err "
               + ("n/a" if worst != worst else f"{worst:.1e}")
               + (f"<br><sup>frozen: {_html.escape(str(meta['frozen']))}</sup>" if meta.get("frozen") else ""))
    tokens = [str(t) for t in meta.get("prompt_tokens", [])]
    n_pos = max(len(tokens), int(nodes["pos"].max()) + 1 if len(nodes) else 0)
    ticks = row_labels(n_layers)
    fig.update_layout(
        title=dict(text=title or default, font=dict(size=14)), template="plotly_white", hovermode="closest",
        height=max(480, 110 * (n_layers + 2) + 160), margin=dict(l=60, r=20, t=80, b=90),
        xaxis=dict(tickvals=list(range(n_pos)), ticktext=[f"{p}: {tokens[p]!r}" if p < len(tokens) else str(p)
                                                         for p in range(n_pos)], tickangle=-45, zeroline=False,
                   range=[-0.6, n_pos - 0.4]),
        yaxis=dict(tickvals=list(ticks), ticktext=list(ticks.values()), zeroline=False, range=[-0.5, n_layers + 1.5]),
        legend=dict(orientation="h", y=-0.25))
    return fig


def _edge_traces(fig, nodes, edges, max_edges: int) -> int:
    import plotly.graph_objects as go

    where = dict(zip(nodes["node_id"], zip(nodes["x"], nodes["y"])))
    edges = edges[edges["source"].isin(where) & edges["target"].isin(where) & (edges["weight"] != 0)]
    edges = edges.assign(abs=edges["weight"].abs()).nlargest(max_edges, "abs") if len(edges) > max_edges else \
        edges.assign(abs=edges["weight"].abs())
    if not len(edges):
        return 0
    top = float(edges["abs"].max())
    bins = ((edges["abs"] / top) ** 0.5 * (WIDTH_BINS - 1e-9)).astype(int)  # sqrt, like circuit-tracer's widths
    for (b, positive), group in edges.groupby([bins, edges["weight"] > 0]):
        xs, ys = [], []
        for s, t in zip(group["source"], group["target"]):
            (x0, y0), (x1, y1) = where[s], where[t]
            xs += [x0, x1, None]
            ys += [y0, y1, None]
        alpha = 0.25 + 0.6 * (b + 1) / WIDTH_BINS
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False,
                                 line=dict(width=0.4 + 4.0 * (b + 1) / WIDTH_BINS,
                                           color=f"rgba({EDGE_COLOUR[bool(positive)]},{alpha:.2f})")))
    return len(edges)


def _maybe_pruned(graph, prune: Optional[bool], max_nodes: int):
    can_prune = callable(getattr(graph, "prune", None))
    if prune is None:
        prune = can_prune and not graph.meta.get("pruned", False) and len(graph.nodes) > max_nodes
    if not prune:
        return graph
    result = graph.prune()
    return result[0] if isinstance(result, tuple) else result

