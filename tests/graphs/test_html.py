"""The offline page: plotly.js inlined, nodes laid out by layer × position, edges and hover cards right."""

from __future__ import annotations

import re

import pytest

from hooked_bilinear.graphs import show, to_html
from hooked_bilinear.graphs.html import page_html
from hooked_bilinear.graphs.html_figure import EDGE_COLOUR, LINKS_PER_NODE, figure
from hooked_bilinear.graphs.layout import node_layout
from tests.graphs._fixtures import PrunableGraph, hand_graph

pytest.importorskip("plotly", reason="the offline viewer needs plotly (pip install plotly)")


@pytest.fixture(scope="module")
def graph():
    return hand_graph()


@pytest.fixture(scope="module")
def page(graph):
    return page_html(graph)


def test_page_is_self_contained(page):
    import plotly.offline

    assert plotly.offline.get_plotlyjs()[:2000] in page  # the bundled plotly.js, inlined
    assert not re.search(r"<script[^>]*\bsrc=", page) and "<link" not in page  # nothing fetched
    assert "Plotly.newPlot" in page and 'data-render-ok' in page


def test_every_node_is_drawn_once_in_its_row_and_position(graph):
    fig = figure(graph)
    points = {}
    for trace in fig.data:
        if trace.customdata is not None:
            points.update({nid: (x, y) for nid, x, y in zip(trace.customdata, trace.x, trace.y)})
    assert set(points) == set(graph.nodes["node_id"])
    columns = node_layout(graph).attrs["columns"]
    assert sorted(columns) == list(range(graph.nodes["pos"].max() + 1))
    edges = [columns[p] for p in sorted(columns)]
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(edges, edges[1:]))  # side by side, in order
    n_layers = graph.meta["n_layers"]
    feeds = dict(zip(graph.edges["source"], graph.edges["target"]))
    pos = dict(zip(graph.nodes["node_id"], graph.nodes["pos"]))
    for row in graph.nodes.itertuples():
        x, y = points[row.node_id]
        if row.kind == "logit" or row.layer >= n_layers:
            want = n_layers + 1
        elif row.kind in ("embedding", "position") or row.layer < 0:
            want = 0
        else:
            want = row.layer + 1
        assert abs(y - want) <= 0.35 + 1e-12, row.node_id
        left, right = columns[row.pos if row.pos >= 0 else pos[feeds[row.node_id]]]
        assert left < x < right, row.node_id
    assert len(set(points.values())) == len(points)  # no two nodes on the same spot


def test_a_crowded_position_gets_a_wider_column_and_wraps():
    import pandas as pd

    graph = hand_graph(n_layers=1, n_pos=3, per_cell=1)
    crowd = pd.DataFrame([dict(node_id=f"0_{k}_2", kind="neuron", layer=0, pos=2, index=k, activation=float(k),
                               label=f"mlp0 n{k} @2", influence=0.1, is_row=False, token_prob=0.0, is_target=False)
                          for k in range(100, 400)])
    graph.nodes = pd.concat([graph.nodes, crowd], ignore_index=True)
    nodes = node_layout(graph)
    columns = nodes.attrs["columns"]
    width = {p: b - a for p, (a, b) in columns.items()}
    assert width[2] > 3 * width[0]
    at2 = nodes[(nodes["pos"] == 2) & (nodes["y"].round() == 1)]
    assert at2["y"].nunique() > 1 and (at2["y"] - 1).abs().max() <= 0.35 + 1e-12  # wrapped onto lines
    scale = 1100 / max(b for _, b in columns.values())  # px per x unit, as the figure draws it
    xy = sorted(zip(at2["y"], at2["x"]))
    gaps = [(b[1] - a[1]) * scale for a, b in zip(xy, xy[1:]) if a[0] == b[0]]
    assert min(gaps) >= 10 - 1e-9


def test_edges_are_drawn_with_width_by_magnitude_and_colour_by_sign(graph):
    fig = figure(graph)
    where = {}
    for trace in fig.data:
        if trace.customdata is not None:
            where.update({(x, y): nid for nid, x, y in zip(trace.customdata, trace.x, trace.y)})
    weight = {(s, t): w for s, t, w in graph.edges.itertuples(index=False)}
    seen, widths = set(), []
    for trace in (t for t in fig.data if t.mode == "lines"):
        xs, ys = list(trace.x), list(trace.y)
        sign = "+" if EDGE_COLOUR[True] in trace.line.color else "-"
        for i in range(0, len(xs), 3):
            edge = (where[(xs[i], ys[i])], where[(xs[i + 1], ys[i + 1])])
            assert (weight[edge] > 0) == (sign == "+")
            seen.add(edge)
            widths.append((abs(weight[edge]), trace.line.width))
    assert seen == set(weight)
    widths.sort()
    assert all(a[1] <= b[1] for a, b in zip(widths, widths[1:]))  # never thinner for a larger |weight|
    assert widths[0][1] < widths[-1][1]


def test_drawn_edges_are_capped_at_the_largest(graph):
    fig = figure(graph, max_edges=10)
    drawn = sum(len(t.x) // 3 for t in fig.data if t.mode == "lines")
    assert drawn == 10
    assert "10 of 270 edges drawn" in fig.layout.title.text


def test_clicked_node_links_are_its_largest_edges_in_and_out(graph):
    fig = figure(graph)
    links = fig.layout.meta["links"]
    where = {}
    for trace in fig.data:
        if trace.customdata is not None:
            where.update({nid: (x, y) for nid, x, y in zip(trace.customdata, trace.x, trace.y)})
    edges = graph.edges.assign(abs=graph.edges["weight"].abs())
    for node_id in graph.nodes["node_id"]:
        want = []
        for end in ("target", "source"):
            mine = edges[edges[end] == node_id].sort_values("abs", ascending=False, kind="stable")
            want += [[*where[s], *where[t], 1 if w > 0 else -1]
                     for s, t, w in zip(mine["source"], mine["target"], mine["weight"])][:LINKS_PER_NODE]
        assert sorted(map(tuple, links.get(node_id, []))) == sorted(map(tuple, want)), node_id


def test_hover_card_reports_exactness_and_top_sources(graph):
    nodes = node_layout(graph).set_index("node_id")
    edges = graph.edges
    row = graph.nodes[graph.nodes["kind"] == "neuron"].iloc[3]
    incoming = edges[edges["target"] == row.node_id]
    card = nodes.loc[row.node_id, "hover"]
    assert f"Σ incoming ({len(incoming)} edges)" in card and "(exact)" in card
    assert nodes.loc[row.node_id, "err"] == pytest.approx(abs(incoming["weight"].sum() - row.activation), abs=1e-15)
    labels = dict(zip(graph.nodes["node_id"], graph.nodes["label"]))
    top = incoming.reindex(incoming["weight"].abs().sort_values(ascending=False).index).head(5)
    listed = card.split("top sources:")[1]
    for source in top["source"]:
        assert labels[source].replace("'", "&#x27;") in listed
    assert listed.count("<br>") == 5
    leaf = nodes.loc[graph.nodes.loc[graph.nodes["kind"] == "embedding", "node_id"].iloc[0], "hover"]
    assert "leaf: no incoming edges" in leaf


def test_a_broken_row_is_flagged(graph):
    broken = hand_graph()
    target = broken.nodes.index[broken.nodes["kind"] == "neuron"][0]
    broken.nodes.loc[target, "activation"] += 0.5
    nodes = node_layout(broken).set_index("node_id")
    assert "(NOT exact)" in nodes.loc[broken.nodes.loc[target, "node_id"], "hover"]
    assert nodes["err"].max() == pytest.approx(0.5)


def test_large_graphs_are_pruned_small_ones_drawn_as_they_are(tmp_path):
    graph = hand_graph(cls=PrunableGraph)
    to_html(graph, tmp_path / "small.html")
    assert graph.calls == []
    to_html(graph, tmp_path / "big.html", max_nodes=10)
    assert len(graph.calls) == 1
    big = (tmp_path / "big.html").read_text()
    pruned_away = graph.nodes.loc[graph.nodes["influence"] < 0.5, "node_id"]
    assert not any(f'"{nid}"' in big for nid in pruned_away if not nid.startswith(("E_", "3_")))


def test_show_displays_the_page_in_an_iframe(graph, monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    show(graph, height=500)
    (obj,) = shown
    assert obj.data.startswith("<div><iframe srcdoc=") and "height:500px" in obj.data
    assert "Plotly.newPlot" in obj.data and "<script" not in obj.data  # the page is escaped inside srcdoc


def test_cards_agree_with_check_on_a_pruned_real_graph():
    from tests.graphs._fixtures import induction_graph

    pruned = induction_graph(32).prune(0.8, 0.98)
    nodes = node_layout(pruned)
    check = pruned.check()
    assert nodes["rel_err"].max() == pytest.approx(check.max_rel_err, rel=1e-9)
    assert nodes.loc[nodes["rel_err"].idxmax(), "node_id"] == check.worst_node
    assert (nodes["pruned"].fillna(0) != 0).any()  # pruning removed mass, and the cards add it back
    assert not nodes["hover"].str.contains("NOT exact").any()


def test_bad_arguments_are_clear_errors_and_write_nothing(graph, tmp_path):
    from hooked_bilinear.errors import InputError

    for kwargs, message in [({"max_edges": 0}, "max_edges=0"), ({"max_nodes": -3}, "max_nodes=-3"),
                            ({"prune": True}, "no prune method")]:
        with pytest.raises(InputError, match=message):
            to_html(graph, tmp_path / "x.html", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_page_title_is_plain_text(page):
    title = page.split("<title>", 1)[1].split("</title>", 1)[0]
    assert "hand-made" in title and "<" not in title and "frozen:" in title
