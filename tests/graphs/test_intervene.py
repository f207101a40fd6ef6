"""Interventions rerun the real model; under the graph's freeze a last-layer neuron's effect is its direct edge."""

import pytest
import torch

from hooked_bilinear.graphs import attribute

from tests.circuits._models import make_model, tokens


def test_intervention_matches_the_graph_and_a_hand_rerun():
    model = make_model(2, "RMS", "standard")
    toks = tokens(1, 6, seed=3)[0]
    g = attribute(model, toks, targets=[1, 4], max_nodes=20, edges_per_node=10_000)
    last = g.nodes[(g.nodes["kind"] == "neuron") & (g.nodes["layer"] == 1)].iloc[0]
    out = g.intervene([last["node_id"]], scale=0.0)
    # hand rerun: nothing frozen
    l, p, k = int(last["layer"]), int(last["pos"]), int(last["index"])

    def zero(h, hook):
        h = h.clone()
        h[:, p, k] = 0
        return h

    with torch.no_grad():
        real = model.run_with_hooks(toks[None], fwd_hooks=[(f"blocks.{l}.mlp.hook_post", zero)])[0, -1]
        base = model(toks[None])[0, -1]
    assert out["real"].tolist() == pytest.approx([float(real[1]), float(real[4])], abs=1e-12)
    assert out["before"].tolist() == pytest.approx([float(base[1]), float(base[4])], abs=1e-12)
    # the last layer's neurons feed the logits only directly: frozen rerun == graph's linear prediction
    assert out["frozen"].tolist() == pytest.approx(out["direct"].tolist(), abs=1e-10)


def test_setting_a_value():
    model = make_model(1, "LN", "standard")
    toks = tokens(1, 5, seed=1)[0]
    g = attribute(model, toks, targets=[2], max_nodes=10, edges_per_node=10_000)
    nid = g.nodes.loc[g.nodes["kind"] == "neuron", "node_id"].iloc[0]
    out = g.intervene([nid], value=3.0)
    assert out["frozen"].iloc[0] == pytest.approx(out["direct"].iloc[0], abs=1e-10)
    with pytest.raises(Exception, match="exactly one of"):
        g.intervene([nid], scale=1.0, value=2.0)
