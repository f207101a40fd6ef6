"""Value biases in graphs of softmax-free bilinear attention (issue 14, docs/graphs.md "Value biases").

Every weight and bias is random (b_V, b_O, ln1.b, MLP biases, q/k biases). References: the cached
`hook_pattern`, `mlp.hook_post` and logits of the real forward pass, and autograd through the real model:

- a logit's edge from a pattern node (one block, MLP cut): ½ A ∂logit/∂A, with the real v = x W_V + b_V;
- the block's constants into a logit: ∂logit/∂b_O·b_O + ∂logit/∂b_out·b_out + ½ ∂logit/∂b_V·b_V (A fixed):
  the value bias is one more source of v, so the value path carries half of its write;
- a layer-1 pattern row from a layer-0 pattern node: ¼ · ½ A0 ∂A1/∂A0 (degree 4, then the head product).
"""

import pytest
import torch

from hooked_bilinear.graphs import attribute

from tests.circuits._models import make_model, tokens


def bv_model(n_layers=2, norm=None, pos="standard", dtype=torch.float64, seed=0):
    scale = 0.3 if norm in (None, "Scale") else None  # keeps the degree-2^L polynomial of a linear-norm model O(1)
    model = make_model(n_layers, norm, pos, attention="bilinear", dtype=dtype, seed=seed, scale=scale)
    for block in model.blocks:
        assert bool((block.attn.b_V != 0).all())
        if norm == "LN":
            assert bool((block.ln1.b != 0).all())
    return model


def _real_values(model, toks):
    with torch.no_grad():
        return model.run_with_cache(toks[None])


def _assert_rows_are_real(g, model, toks, tol):
    logits, cache = _real_values(model, toks)
    sums = g.edges.groupby("target")["weight"].sum()
    rows = g.nodes[g.nodes["is_row"]]
    kinds = set(rows["kind"])
    assert {"pattern", "logit"} <= kinds and (model.cfg.attn_only or "neuron" in kinds)
    for r in rows.itertuples():
        if r.kind == "pattern":
            want = cache[f"blocks.{r.layer}.attn.hook_pattern"][0, r.head, r.pos, r.key_pos]
        elif r.kind == "neuron":
            want = cache[f"blocks.{r.layer}.mlp.hook_post"][0, r.pos, r.index]
        else:
            want = logits[0, r.pos, r.index]
        scale = max(1.0, float(r.abs_mass))
        assert abs(sums[r.node_id] - float(want)) <= tol * scale, (r.node_id, sums[r.node_id], float(want))
    assert g.check().max_rel_err < tol


@pytest.mark.parametrize("n_layers, norm, pos", [(1, None, "standard"), (1, "LN", "rotary"), (2, None, "rotary"),
                                                 (2, "Scale", "standard"), (2, "LN", "standard"), (2, "RMS", "rotary")])
def test_rows_add_up_to_the_real_values_with_value_biases(n_layers, norm, pos):
    model = bv_model(n_layers, norm, pos)
    toks = tokens(1, 6, seed=2)[0]
    g = attribute(model, toks, targets=[3, 5], max_nodes=60, edges_per_node=8)
    _assert_rows_are_real(g, model, toks, 1e-10)


def test_float32_model_rows_add_up():
    model = bv_model(2, "LN", "rotary", dtype=torch.float32)
    toks = tokens(1, 6, seed=3)[0]
    g = attribute(model, toks, targets=[1, 4], max_nodes=40, edges_per_node=8)
    _assert_rows_are_real(g, model, toks, 1e-5)


def test_attention_only_model_with_value_biases():
    model = make_model(2, "Scale", "rotary", attention="bilinear", attn_only=True, scale=0.3)
    toks = tokens(1, 6, seed=4)[0]
    g = attribute(model, toks, targets=[2], max_nodes=40, edges_per_node=8)
    _assert_rows_are_real(g, model, toks, 1e-10)


def _leaf(saved):
    """A hook that makes its activation a leaf (fixed at its value, with a gradient): saved[hook name]."""
    def leaf(x, hook):
        saved[hook.name] = x.detach().requires_grad_(True)
        return saved[hook.name]

    return leaf


# MLPs are nodes: block 0's MLP output is a leaf (b_out has no grad of its own when mlp_bias=False)
CUT = ("blocks.0.mlp.hook_post", lambda x, hook: x.detach())
A0, OUT0 = "blocks.0.attn.hook_pattern", "blocks.0.hook_mlp_out"


@pytest.mark.parametrize("pos", ["standard", "rotary"])
def test_pattern_and_constant_edges_into_a_logit_equal_autograd(pos):
    model = bv_model(1, None, pos, seed=3)
    toks = tokens(1, 5, seed=4)[0]
    n, t = len(toks), 2
    g = attribute(model, toks, targets=[t], max_nodes=300, edges_per_node=10_000)
    w = {(s, r): v for s, r, v in g.edges[["source", "target", "weight"]].itertuples(index=False)}
    logit_id = g.targets["node_id"].iloc[0]
    saved = {}
    attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
    with torch.enable_grad(), model.hooks(fwd_hooks=[(A0, _leaf(saved)), CUT, (OUT0, _leaf(saved))]):
        logit = model(toks[None])[0, -1, t]
        A = saved[A0]
        gA, gbO, gbV, gout = torch.autograd.grad(logit, [A, attn.b_O, attn.b_V, saved[OUT0]])
    gbout = gout[0].sum(0)  # b_out is written at every position: ∂/∂b_out = Σ_p ∂/∂mlp_out[p]
    e_pat = (0.5 * A * gA)[0].detach()
    assert float(e_pat.abs().max()) > 1e-5  # far above the tolerance
    for h in range(model.cfg.n_heads):
        for q in range(n):
            got = w.get((f"A_0_{h}_{n - 1}_{q}", logit_id), 0.0)
            assert got == pytest.approx(float(e_pat[h, n - 1, q]), abs=1e-10)
    half_bV = 0.5 * float((gbV * attn.b_V.detach()).sum())
    assert abs(half_bV) > 1e-5  # the value-bias term matters (tolerance 1e-10)
    want = float((gbO * attn.b_O.detach()).sum() + (gbout * mlp.b_out).sum()) + half_bV
    assert w.get((f"C_0_{n - 1}", logit_id), 0.0) == pytest.approx(want, abs=1e-10)
    for q in range(n - 1):  # constants at other positions do not reach the last one in one block
        assert w.get((f"C_0_{q}", logit_id), 0.0) == 0.0


def test_layer1_pattern_row_edges_from_layer0_equal_autograd():
    model = bv_model(2, None, "rotary", seed=5)
    toks = tokens(1, 5, seed=6)[0]
    n = len(toks)
    g = attribute(model, toks, targets=[4], max_nodes=400, edges_per_node=10_000)
    w = {(s, r): v for s, r, v in g.edges[["source", "target", "weight"]].itertuples(index=False)}
    rows = g.nodes[(g.nodes["kind"] == "pattern") & g.nodes["is_row"] & (g.nodes["layer"] == 1)]
    assert len(rows) >= 3
    with torch.no_grad():
        _, cache = model.run_with_cache(toks[None], names_filter=lambda k: k.endswith("hook_pattern"))
    attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
    for r in rows.head(4).itertuples():
        saved, kept = {}, {}

        def keep(x, hook):
            kept["A1"] = x
            return x

        hooks = [(A0, _leaf(saved)), CUT, (OUT0, _leaf(saved)), ("blocks.1.attn.hook_pattern", keep)]
        with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
            model(toks[None])
            a1 = kept["A1"][0, r.head, r.pos, r.key_pos]
            gA, gbO, gbV, gout = torch.autograd.grad(a1, [saved[A0], attn.b_O, attn.b_V, saved[OUT0]])
        gbout = gout[0].sum(0)
        real = float(cache["blocks.1.attn.hook_pattern"][0, r.head, r.pos, r.key_pos])
        assert float(a1.detach()) == pytest.approx(real, abs=1e-12)
        e = (0.125 * saved[A0] * gA)[0].detach()  # ¼ (degree 4) of the pattern node's half of its head term
        for h in range(model.cfg.n_heads):
            for p in range(n):
                for q in range(p + 1):
                    got = w.get((f"A_0_{h}_{p}_{q}", r.node_id), 0.0)
                    assert got == pytest.approx(float(e[h, p, q]), abs=1e-10)
        consts = (gbO * attn.b_O.detach()).sum() + (gbout * mlp.b_out).sum() + 0.5 * (gbV * attn.b_V.detach()).sum()
        want = 0.25 * float(consts)  # ¼: degree 4; the value bias' write at half (the value path's share)
        got = sum(w.get((f"C_0_{q}", r.node_id), 0.0) for q in range(n))
        assert got == pytest.approx(want, abs=1e-10)


def test_head_loadings_split_constant_edges_with_value_biases(tmp_path):
    from hooked_bilinear.graphs import AttributionGraph

    model = bv_model(2, "Scale", "rotary", seed=7)
    toks = tokens(1, 6, seed=8)[0]
    g = attribute(model, toks, targets=[4], max_nodes=30, edges_per_node=10_000)
    hl = g.head_loadings(g.targets["node_id"].iloc[0])
    s = hl.groupby(["source", "layer"]).agg(total=("loading", "sum"), w=("weight", "first"))
    assert len(s) > 0 and (s["total"] - s["w"]).abs().max() < 1e-10
    consts = [src for src in s.index.get_level_values(0) if src.startswith("C_0_")]
    assert consts  # block 0's constants at earlier positions, value-bias write included, reach the logit via block 1
    # a loaded graph re-freezes with the model and keeps the value-bias terms
    h = AttributionGraph.load(g.save(tmp_path / "g.safetensors"))
    h._model = model
    again = h.head_loadings(g.targets["node_id"].iloc[0])
    assert (again["loading"] - hl["loading"]).abs().max() < 1e-12


def test_error_upstream_and_sae_rows_with_value_biases():
    from hooked_bilinear.features import SAE, SAEConfig

    model = bv_model(2, "LN", "standard", seed=9)
    sae = SAE(SAEConfig(d_in=8, d_sae=12, hook_name="blocks.0.hook_mlp_out", architecture="relu",
                        dtype=torch.float64), seed=1)
    with torch.no_grad():
        sae.b_enc.copy_(0.1 * torch.randn(12, dtype=torch.float64, generator=torch.Generator().manual_seed(2)))
    toks = tokens(1, 5, seed=10)[0]
    g = attribute(model, toks, targets=[3], basis=sae, max_nodes=60, edges_per_node=10_000)
    with torch.no_grad():
        logits, cache = model.run_with_cache(toks[None])
        acts = sae.encode(cache["blocks.0.hook_mlp_out"][0])
    sums = g.edges.groupby("target")["weight"].sum()
    feats = g.nodes[(g.nodes["kind"] == "feature") & g.nodes["is_row"]]
    assert len(feats) > 0
    for r in feats.itertuples():
        assert sums[r.node_id] == pytest.approx(float(acts[r.pos, r.index]), abs=1e-10)
    logit_id = g.targets["node_id"].iloc[0]
    assert sums[logit_id] == pytest.approx(float(logits[0, -1, 3]), abs=1e-10)
    w = dict(zip(zip(g.edges["source"], g.edges["target"]), g.edges["weight"]))
    errs = [e for e in g.nodes.loc[g.nodes["kind"] == "error", "node_id"] if (e, logit_id) in w]
    assert errs
    for err in errs:
        frame, edge = g.error_upstream(err, logit_id)
        assert edge == pytest.approx(w[(err, logit_id)], abs=1e-12)
        assert frame["weight"].sum() == pytest.approx(edge, abs=1e-10)


def test_intervening_on_a_last_layer_neuron_matches_its_edge():
    model = bv_model(2, None, "standard", seed=11)
    toks = tokens(1, 6, seed=12)[0]
    g = attribute(model, toks, targets=[1, 4], max_nodes=30, edges_per_node=10_000)
    last = g.nodes[(g.nodes["kind"] == "neuron") & (g.nodes["layer"] == 1)].iloc[0]
    out = g.intervene([last["node_id"]], scale=0.0)
    p, k = int(last["pos"]), int(last["index"])

    def zero(h, hook):
        h = h.clone()
        h[:, p, k] = 0
        return h

    with torch.no_grad():
        real = model.run_with_hooks(toks[None], fwd_hooks=[("blocks.1.mlp.hook_post", zero)])[0, -1]
    assert out["real"].tolist() == pytest.approx([float(real[1]), float(real[4])], abs=1e-12)
    # a last-layer neuron reaches the logits only directly (no norm): real == frozen == the graph's prediction
    assert out["direct"].tolist() == pytest.approx(out["real"].tolist(), abs=1e-10)
    assert out["frozen"].tolist() == pytest.approx(out["direct"].tolist(), abs=1e-10)
