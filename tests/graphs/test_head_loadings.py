"""Head loadings: loading[l, h] = edge − the same edge with head (l, h)'s frozen pattern zeroed (autograd reference)."""

import pytest
import torch

from hooked_bilinear.graphs import attribute

from tests.circuits._models import make_model, tokens
from ._reference import frozen_edges


def test_loadings_equal_knocking_out_each_head():
    model = make_model(3, "LN", "rotary", d_mlp=5)
    toks = tokens(1, 6, seed=9)[0]
    g = attribute(model, toks, targets=[4], max_nodes=15, edges_per_node=10_000)
    logit = g.targets["node_id"].iloc[0]
    hl = g.head_loadings(logit)
    assert set(hl["source"]) and (hl["source"].map(g.nodes.set_index("node_id")["pos"]) != 5).all()
    # per (edge, block) the loadings plus the skip term sum to the edge
    s = hl.groupby(["source", "layer"]).agg(total=("loading", "sum"), w=("weight", "first"))
    assert (s["total"] - s["w"]).abs().max() < 1e-10
    # independent: knock the head out in the real model under the freeze
    tok_edges = {}
    for l in range(3):
        for h in range(2):
            e, _, _ = frozen_edges(model, toks, ("logit", 5, 4), zero_head=(l, h))
            tok_edges[(l, h)] = e
    full, _, _ = frozen_edges(model, toks, ("logit", 5, 4))
    checked = 0
    for q in range(5):
        sid = f"E_{int(toks[q])}_{q}"
        rows = hl[hl["source"] == sid]
        if rows.empty:
            continue
        for (l, h), e in tok_edges.items():
            got = rows[(rows["layer"] == l) & (rows["head"] == h)]["loading"].item()
            assert got == pytest.approx(float(full[q] - e[q]), abs=1e-10)
            checked += 1
    assert checked >= 6


def test_one_edge_and_errors():
    model = make_model(2, "RMS", "standard")
    toks = tokens(1, 5, seed=2)[0]
    g = attribute(model, toks, targets=[1], max_nodes=10, edges_per_node=10_000)
    logit = g.targets["node_id"].iloc[0]
    src = f"E_{int(toks[0])}_0"
    one = g.head_loadings(src, logit)
    assert set(one["layer"]) == {0, 1} and len(one) == 2 * (2 + 1)
    with pytest.raises(Exception, match="no edge"):
        g.head_loadings("E_0_99", logit)


def test_the_reported_pattern_entry_carries_most_of_the_loading_and_why_is_its_score():
    """Brute force: zero each entry A[p', q'] of the head under the freeze; the largest drop is the reported one."""
    from hooked_bilinear.circuits import Target, decompose

    model = make_model(2, "LN", "standard")
    toks = tokens(1, 5, seed=6)[0]
    g = attribute(model, toks, targets=[3], max_nodes=10, edges_per_node=10_000)
    logit = g.targets["node_id"].iloc[0]
    hl = g.head_loadings(logit, qk=2)
    r = hl[(hl["head"] >= 0) & (hl["source"] == f"E_{int(toks[1])}_1")].sort_values("loading", key=abs).iloc[-1]
    l, h = int(r["layer"]), int(r["head"])
    full, _, _ = frozen_edges(model, toks, ("logit", 4, 3))
    drops = {}
    for p in range(5):
        for q in range(p + 1):
            e, _, _ = frozen_edges(model, toks, ("logit", 4, 3), zero_head=(l, h, p, q))
            drops[(p, q)] = abs(float(full[1] - e[1]))
    assert max(drops, key=drops.get) == (int(r["query_pos"]), int(r["key_pos"]))
    want = decompose(model, toks, target=Target.score(l, h, int(r["query_pos"]), int(r["key_pos"])), level=1).top(2)
    assert all(lab in r["why"] for lab in want["label"])
