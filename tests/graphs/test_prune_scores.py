"""Pruning and scores against a dense re-implementation of circuit-tracer's formulas (spec graphs §1.3).

The reference builds the dense adjacency (rows = targets, columns = sources), normalises |A| by rows and
sums the Neumann series with a matrix inverse, w (I - Â)^-1 - w, instead of the library's edge sweeps.
"""

import numpy as np
import pandas as pd
import pytest
import torch

from hooked_bilinear.graphs import attribute
from hooked_bilinear.graphs.graph import AttributionGraph

from tests.circuits._models import make_model, tokens


@pytest.fixture(scope="module")
def graph():
    model = make_model(3, "LN", "rotary", d_mlp=6)
    return attribute(model, tokens(1, 6, seed=7)[0], max_nodes=40, edges_per_node=6)


def dense(graph):
    ids = graph.nodes["node_id"].tolist()
    ix = {n: i for i, n in enumerate(ids)}
    A = np.zeros((len(ids), len(ids)))
    for s, t, w in graph.edges[["source", "target", "weight"]].itertuples(index=False):
        A[ix[t], ix[s]] += w
    An = np.abs(A)
    An = An / np.maximum(An.sum(1, keepdims=True), 1e-10)
    w = np.zeros(len(ids))
    tg = graph.nodes["is_target"].to_numpy()
    w[tg] = graph.nodes["token_prob"].to_numpy()[tg]
    infl = w @ np.linalg.inv(np.eye(len(ids)) - An) - w
    return ids, An, w, infl


def test_influence_matches_the_neumann_series(graph):
    _, _, _, infl = dense(graph)
    np.testing.assert_allclose(graph.nodes["influence"].to_numpy(), infl, rtol=1e-9, atol=1e-12)


def test_prune_keeps_the_nodes_and_edges_the_dense_algorithm_keeps(graph):
    ids, An, w, infl = dense(graph)
    kind = graph.nodes["kind"].to_numpy()
    always = np.isin(kind, ["embedding", "logit"])
    s = np.sort(infl)[::-1]  # circuit-tracer thresholds over every node, then keeps embeddings and logits
    thr = s[min(np.searchsorted(np.cumsum(s) / s.sum(), 0.8), len(s) - 1)]
    node_mask = (infl >= thr) | always
    P = An * 0
    A = np.zeros_like(An)
    ix = {n: i for i, n in enumerate(ids)}
    for src, t, wt in graph.edges[["source", "target", "weight"]].itertuples(index=False):
        A[ix[t], ix[src]] += wt
    P = np.abs(A) * node_mask[:, None] * node_mask[None, :]
    Pn = P / np.maximum(P.sum(1, keepdims=True), 1e-10)
    pin = w @ np.linalg.inv(np.eye(len(ids)) - Pn) - w + w
    score = Pn * pin[:, None]
    flat = np.sort(score[score > 0])[::-1]
    ethr = flat[min(np.searchsorted(np.cumsum(flat) / flat.sum(), 0.98), len(flat) - 1)]
    edge_mask = (score >= ethr) & (score > 0)
    is_row = graph.nodes["is_row"].to_numpy() & ~always
    while True:
        before = node_mask.copy()
        edge_mask &= node_mask[:, None] & node_mask[None, :]
        node_mask &= always | edge_mask.any(0)
        node_mask &= ~is_row | edge_mask.any(1) | always
        if (node_mask == before).all():
            break
    pruned = graph.prune(0.8, 0.98)
    assert set(pruned.nodes["node_id"]) == {ids[i] for i in np.flatnonzero(node_mask)}
    kept = {(ids[j], ids[i]) for i, j in zip(*np.nonzero(edge_mask))}
    assert set(zip(pruned.edges["source"], pruned.edges["target"])) == kept
    assert len(pruned.nodes) < len(graph.nodes)


def test_pruned_graph_still_adds_up_and_reports_the_removed_mass(graph):
    pruned = graph.prune(0.5, 0.9)
    assert pruned.check().max_rel_err < 1e-10  # kept edges + pruned_in == activation
    pm = pruned.pruned_mass()
    sums = pruned.edges.groupby("target")["weight"].sum()
    for _, r in pm.iterrows():
        assert abs(r["kept"] - sums.get(r["node_id"], 0.0)) < 1e-12
        assert abs(r["kept"] + r["removed"] - r["activation"]) < 1e-10


def test_scores_are_one_without_error_nodes_and_drop_when_an_error_node_carries_mass(graph):
    rep, comp = graph.scores()
    assert rep == pytest.approx(1.0) and comp == pytest.approx(1.0)
    # Relabel the remainder nodes as circuit-tracer error nodes: the same formulas must now fall below 1.
    nodes = graph.nodes.copy()
    nodes.loc[nodes["kind"] == "remainder", "kind"] = "error"
    g = AttributionGraph(nodes, graph.edges, graph.meta)
    ids, An, w, infl = dense(g)
    err = nodes["kind"].to_numpy() == "error"
    tok = infl[nodes["kind"].to_numpy() == "embedding"].sum()
    want_rep = tok / (tok + infl[err].sum())
    out = infl + w
    want_comp = ((1 - An[:, err].sum(1)) * out).sum() / out.sum()
    rep, comp = g.scores()
    assert rep == pytest.approx(want_rep, rel=1e-9) and comp == pytest.approx(want_comp, rel=1e-9)
    assert rep < 0.999 and comp < 0.999


def test_bad_thresholds(graph):
    with pytest.raises(ValueError, match="node_threshold"):
        graph.prune(1.5)
