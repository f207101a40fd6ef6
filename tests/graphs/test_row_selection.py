"""Rows are chosen by influence on the targets, as circuit-tracer does (spec graphs §1.3).

After the logit rows, the first batch of neuron rows must be the neurons with the largest
Σ_t w_t |e(j→t)| / Σ_s |e(s→t)| — computed here from autograd edges on the real model, not the library.
"""

import torch

from hooked_bilinear.graphs import attribute

from tests.circuits._models import make_model, tokens
from ._reference import frozen_edges


def test_first_neuron_rows_are_the_most_influential():
    model = make_model(2, "LN", "rotary", biases=False, d_mlp=6)  # sources: tokens and neurons only
    toks = tokens(1, 6, seed=11)[0]
    targets = [2, 7]
    infl = {}
    for t in targets:
        tok_e, neuron_e, _ = frozen_edges(model, toks, ("logit", 5, t))
        mass = tok_e.abs().sum() + sum(E.abs().sum() for E in neuron_e)
        for l, E in enumerate(neuron_e):
            for q in range(E.shape[0]):
                for k in range(E.shape[1]):
                    infl[(l, q, k)] = infl.get((l, q, k), 0.0) + 0.5 * float(E[q, k].abs() / mass)
    want = sorted(infl, key=infl.get, reverse=True)[:5]
    g = attribute(model, toks, targets=targets, max_nodes=5, batch_size=5, edges_per_node=3)
    rows = g.nodes[g.nodes["is_row"] & (g.nodes["kind"] == "neuron")]
    got = {(int(r.layer), int(r.pos), int(r.index)) for r in rows.itertuples()}
    assert got == set(want)
    assert g.meta["sweeps"] == 2  # one for the logits, one for the neurons


def test_all_neurons_as_rows_when_the_budget_allows():
    model = make_model(2, "RMS", "standard", d_mlp=4)
    toks = tokens(1, 4, seed=1)[0]
    g = attribute(model, toks, targets=[3], max_nodes=10_000, batch_size=8)
    rows = g.nodes[g.nodes["is_row"] & (g.nodes["kind"] == "neuron")]
    # every neuron that can influence the logit at the last position is explained: layer 1 at the last
    # position only (MLPs act per position), layer 0 at every position
    reach = {(1, 3, k) for k in range(4)} | {(0, q, k) for q in range(4) for k in range(4)}
    assert {(int(r.layer), int(r.pos), int(r.index)) for r in rows.itertuples()} <= reach
    assert len(rows) >= 16
    assert g.check().max_rel_err < 1e-10
