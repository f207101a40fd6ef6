"""Every row of an attribution graph adds up to its value in the real forward pass (spec graphs §1).

Expected values come from the test's own forward pass (`run_with_cache`), never from the graph's
check(); tolerances: ≤ 1e-10 relative to the row's Σ|edges| in float64, ≤ 1e-5 in float32.
"""

import numpy as np
import pytest
import torch

from hooked_bilinear.circuits import Target
from hooked_bilinear.graphs import attribute

from tests.circuits._models import make_model, tokens

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def real_values(model, toks):
    """{node_id: real value} for every neuron (layer_index_pos) and every logit (n_layers+1_token_pos)."""
    with torch.no_grad():
        logits, cache = model.run_with_cache(toks[None])
    out = {}
    L = model.cfg.n_layers
    for l in range(L if not model.cfg.attn_only else 0):
        h = cache[f"blocks.{l}.mlp.hook_post"][0].double()
        for p in range(h.shape[0]):
            for k in range(h.shape[1]):
                out[f"{l}_{k}_{p}"] = float(h[p, k])
    lg = logits[0].double()
    for p in range(lg.shape[0]):
        for t in range(lg.shape[1]):
            out[f"{L + 1}_{t}_{p}"] = float(lg[p, t])
    return out


def assert_rows_add_up(graph, model, toks, tol):
    real = real_values(model, toks)
    rows = graph.nodes[graph.nodes["is_row"]]
    assert len(rows) > 0
    sums = graph.edges.groupby("target")["weight"].sum()
    mass = graph.edges["weight"].abs().groupby(graph.edges["target"]).sum()
    worst = 0.0
    for nid in rows["node_id"]:
        if nid not in real:  # logit differences / directions are checked in their own test
            continue
        err = abs(sums.get(nid, 0.0) - real[nid]) / max(mass.get(nid, 0.0), 1e-300)
        worst = max(worst, err)
    assert worst <= tol, f"worst row error {worst:.2e} > {tol:.0e}"
    return worst


@pytest.mark.parametrize("pos", ["standard", "rotary"])
@pytest.mark.parametrize("norm", ["LN", "RMS", None, "LNPre", "RMSPre"])
def test_float64_rows_add_up_every_norm(norm, pos):
    for n_layers in (1, 2, 3, 4):
        model = make_model(n_layers, norm, pos)
        toks = tokens(1, 6, seed=n_layers)[0]
        g = attribute(model, toks, max_nodes=20, edges_per_node=8, batch_size=7)
        assert_rows_add_up(g, model, toks, TOL[torch.float64])
        assert g.check().max_rel_err <= TOL[torch.float64]


@pytest.mark.parametrize("biases", [True, False])
@pytest.mark.parametrize("norm", ["LN", "RMS", None])
def test_float32_rows_add_up(norm, biases):
    for n_layers in (1, 2, 4):
        model = make_model(n_layers, norm, "rotary" if n_layers % 2 else "standard", biases=biases, dtype=torch.float32)
        toks = tokens(1, 7, seed=3)[0]
        g = attribute(model, toks, max_nodes=30, edges_per_node=10)
        assert_rows_add_up(g, model, toks, TOL[torch.float32])


def test_attention_only_model():
    model = make_model(2, "LN", "standard", attn_only=True)
    toks = tokens(1, 6)[0]
    g = attribute(model, toks, max_nodes=10)
    assert set(g.nodes["kind"]) <= {"embedding", "position", "constant", "logit", "remainder"}
    assert_rows_add_up(g, model, toks, TOL[torch.float64])


def test_batch_of_prompts_gives_one_exact_graph_each():
    model = make_model(2, "RMS", "rotary")
    toks = tokens(3, 6, seed=5)
    graphs = attribute(model, toks, max_nodes=12, edges_per_node=6)
    assert isinstance(graphs, list) and len(graphs) == 3
    for b, g in enumerate(graphs):
        assert g.meta["tokens"] == toks[b].tolist()
        assert_rows_add_up(g, model, toks[b], TOL[torch.float64])


def test_edges_equal_autograd_under_the_freeze():
    """Every edge into a row equals ½ ∂h/∂c · c (neurons) or ∂logit/∂c · c (logits), by autograd on the real model."""
    from ._reference import frozen_edges

    model = make_model(3, "LN", "rotary", d_mlp=5)
    toks = tokens(1, 5, seed=2)[0]
    big = 10_000  # keep every edge: no remainders
    g = attribute(model, toks, targets=[3, 7], max_nodes=25, edges_per_node=big)
    assert not (g.nodes["kind"] == "remainder").any()
    w = {(s, t): v for s, t, v in g.edges[["source", "target", "weight"]].itertuples(index=False)}
    checked = 0
    for _, row in g.nodes[g.nodes["is_row"]].iterrows():
        spec = ("logit", int(row["pos"]), int(row["index"])) if row["kind"] == "logit" else \
            ("neuron", int(row["layer"]), int(row["pos"]), int(row["index"]))
        tok_e, neuron_e, value = frozen_edges(model, toks, spec)
        assert abs(float(value) - row["activation"]) < 1e-10
        for q in range(len(toks)):
            got = w.get((f"E_{int(toks[q])}_{q}", row["node_id"]), 0.0)
            assert abs(got - float(tok_e[q])) < 1e-10, (row["node_id"], q)
        for l, E in enumerate(neuron_e):
            for q, k in zip(*np.nonzero(E.numpy())):
                got = w.get((f"{l}_{k}_{q}", row["node_id"]), 0.0)
                assert abs(got - float(E[q, k])) < 1e-10, (row["node_id"], l, q, k)
                checked += 1
    assert checked > 100


def test_logit_difference_and_direction_targets():
    model = make_model(2, "LN", "standard")
    toks = tokens(1, 6, seed=4)[0]
    with torch.no_grad():
        logits = model(toks[None])[0].double()
    u = torch.randn(model.cfg.d_vocab, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    g = attribute(model, toks, targets=[Target.logit_diff(2, 5, pos=3), Target.direction(u, pos=-1)], max_nodes=10)
    t = g.targets.set_index("pos")
    assert abs(t.loc[3, "activation"] - float(logits[3, 2] - logits[3, 5])) < 1e-10
    assert abs(t.loc[5, "activation"] - float(logits[5] @ u)) < 1e-10
    sums = g.edges.groupby("target")["weight"].sum()
    for nid, act in zip(t["node_id"], t["activation"]):
        assert abs(sums[nid] - act) < 1e-10


def test_default_targets_follow_circuit_tracer():
    """Top tokens at the last position until cumulative probability ≥ 0.95, at most 10."""
    model = make_model(1, "LN", "standard", d_vocab=40, scale=1.5)
    toks = tokens(1, 6, seed=0, d_vocab=40)[0]
    with torch.no_grad():
        probs = torch.softmax(model(toks[None])[0, -1].double(), -1)
    order = probs.argsort(descending=True).tolist()
    want, cum = [], 0.0
    for t in order:
        want.append(t)
        cum += float(probs[t])
        if cum >= 0.95 or len(want) == 10:
            break
    g = attribute(model, toks, max_nodes=4)
    assert g.targets["index"].tolist() == want
    assert np.allclose(g.targets["token_prob"], probs[want].numpy())


def test_a_list_of_strings_gives_one_unpadded_graph_each():
    from hooked_bilinear import HookedBilinearTransformer

    model = HookedBilinearTransformer.from_pretrained("tiny-lm")
    texts = ["import os", "def f(x):\n    return"]
    graphs = attribute(model, texts, max_nodes=4)
    for text, g in zip(texts, graphs):
        toks = model.to_tokens(text)[0]
        assert g.meta["tokens"] == toks.tolist()          # no padding in either graph
        assert_rows_add_up(g, model, toks, TOL[torch.float32])
