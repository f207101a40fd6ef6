"""A self-contained offline page of an attribution graph: plotly's bundled plotly.js inlined, no CDN.

Drawn by layer (y) × position (x) (`layout.py`, `html_figure.py`): one marker style per node kind
(the legend toggles kinds and edge signs), edges as lines whose width grows with |weight|, green for
positive and purple for negative (circuit-tracer's colours), and a hover card per node: label, kind,
activation, Σ of its incoming edges against it, top sources. Clicking a node keeps its card above
the plot and draws its largest edges in and out (double-click clears); `page.html#node=<id>` opens
with that node selected. The page is written by `plotly.io.to_html`; the only hand-written
JavaScript is the glue below (an error trap, the selection, and tagging each rendered marker with
its node id so that a browser test finds the rendered graph in the DOM).
"""

from __future__ import annotations

import html as _html
import re
from pathlib import Path
from typing import Optional, Union

from hooked_bilinear.errors import InputError
from hooked_bilinear.graphs.html_figure import MAX_EDGES, figure

MAX_NODES = 2000

_PRELUDE = """<div id="hb-errors" style="color:#b00;white-space:pre-wrap"></div>
<script>function hbError(message) {
  document.getElementById('hb-errors').textContent += 'script error: ' + message + '\\n';
  document.body.setAttribute('data-render-error', message); }
window.addEventListener('error', function (e) { hbError(e.message); });
window.addEventListener('unhandledrejection', function (e) { hbError(String(e.reason)); });</script>
<div id="hb-details" style="font:13px sans-serif;padding:8px;border-bottom:1px solid #ccc">
Hover a node for its card; click it to keep the card here.</div>
"""
_GLUE = """var gd = document.getElementById('{plot_id}'), n = 0, links = gd.layout.meta.links;
gd.querySelectorAll('g.trace').forEach(function (g) {
  var trace = g.__data__ && g.__data__[0] && g.__data__[0].trace;
  if (!trace || !trace.customdata) return;
  g.querySelectorAll('path.point').forEach(function (p) {
    if (p.__data__ && trace.customdata[p.__data__.i] !== undefined) {
      p.setAttribute('data-node-id', trace.customdata[p.__data__.i]); n += 1; } }); });
var last = gd.data.length;  // the two traces of the selected node's edges: +, -
function select(id, text) {
  document.getElementById('hb-details').innerHTML = text || 'Hover a node for its card; click it to keep it here.';
  var xs = [[], []], ys = [[], []];
  (links[id] || []).forEach(function (l) { var k = l[4] > 0 ? 0 : 1;
    xs[k].push(l[0], l[2], null); ys[k].push(l[1], l[3], null); });
  Plotly.restyle(gd, {x: xs, y: ys}, [last - 2, last - 1]);
  document.body.setAttribute('data-selected', id || ''); }
gd.on('plotly_click', function (ev) {
  var pt = ev.points[0]; if (typeof pt.customdata === 'string') select(pt.customdata, pt.text); });
gd.on('plotly_doubleclick', function () { select('', ''); });
var wanted = decodeURIComponent((location.hash.match(/^#node=(.+)$/) || [])[1] || '');
gd.data.forEach(function (trace, c) {  // #node=<id> selects that node
  (trace.customdata || []).forEach(function (id, i) {
    if (id === wanted) { select(id, trace.text[i]); Plotly.Fx.hover(gd, [{curveNumber: c, pointNumber: i}]); } });
});
document.body.setAttribute('data-rendered-nodes', n);
document.body.setAttribute('data-render-ok', n > 0 ? '1' : '0');"""

def to_html(graph, path: Union[str, Path], *, title: Optional[str] = None, prune: Optional[bool] = None,
            max_nodes: int = MAX_NODES, max_edges: int = MAX_EDGES, why: int = 0) -> Path:
    """Write `graph` as one self-contained HTML file that renders with no network at all.

    Args:
        graph: an `AttributionGraph`.
        path: the `.html` file to write (folders are created).
        title: page title; defaults to the model, prompt and sizes.
        prune: draw `graph.prune()`; None prunes a graph with more than `max_nodes` nodes when it has a
            `prune` method and is not pruned yet (otherwise it draws what it gets).
        max_nodes: the size above which an unpruned graph is pruned (when `prune` is None).
        max_edges: draw only this many edges, the largest |weight| first (hover cards use all).
        why: when > 0, each hover card also says which head carried the node's input from other positions
            and, on a softmax model, the top `why` query × key source pairs of its score (`graphs.why`).

    Returns:
        The written path.

    Example:
        >>> to_html(graph, "graph.html")    # doctest: +SKIP
    """
    page = page_html(graph, title=title, prune=prune, max_nodes=max_nodes, max_edges=max_edges, why=why)
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
              max_edges: int = MAX_EDGES, why: int = 0) -> str:
    """The page as a string (see `to_html`)."""
    for name, value in (("max_nodes", max_nodes), ("max_edges", max_edges)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InputError(f"{name}={value!r}: expected a positive int")
    try:
        import plotly.io as pio
    except ImportError as e:
        raise ImportError("the offline viewer needs plotly: pip install plotly (or the `viewer` extra)") from e

    drawn = _maybe_pruned(graph, prune, max_nodes)
    if why:
        from hooked_bilinear.graphs.why import with_why

        drawn = with_why(drawn, why)
    fig = figure(drawn, title=title, max_edges=max_edges)
    page = pio.to_html(fig, include_plotlyjs=True, full_html=True, div_id="hb-graph", post_script=_GLUE,
                       config={"displaylogo": False, "responsive": True})
    plain = re.sub(r"<[^>]+>", " ", fig.layout.title.text or "attribution graph")
    head = f"<head><title>{_html.escape(' '.join(plain.split()), quote=False)}</title>"
    return page.replace("<head>", head, 1).replace("<body>", "<body>" + _PRELUDE, 1)


def _maybe_pruned(graph, prune: Optional[bool], max_nodes: int):
    can_prune = callable(getattr(graph, "prune", None))
    if prune is None:
        prune = can_prune and not graph.meta.get("pruned", False) and len(graph.nodes) > max_nodes
    if not prune:
        return graph
    if not can_prune:
        raise InputError(f"prune=True but a {type(graph).__name__} has no prune method: pass prune=False")
    result = graph.prune()
    return result[0] if isinstance(result, tuple) else result

