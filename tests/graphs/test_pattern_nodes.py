"""Softmax-free bilinear attention in graphs: pattern entries are nodes, nothing is frozen (spec graphs §3).

References: the cached `hook_pattern` and logits of the real forward pass, and autograd through the real
model: a pattern row's edge from a token is ¼ ∂A/∂embed · embed (degree 4), and a logit's edge from a
token at another position (one bilinear block) is half the value path, ½ ∂logit/∂embed with A fixed.
"""

import pytest
import torch

from hooked_bilinear import HookedBilinearConfig, HookedBilinearTransformer
from hooked_bilinear.graphs import attribute

from tests.circuits._models import tokens


def bilinear_model(n_layers=2, pos="standard", norm=None, seed=0):
    cfg = HookedBilinearConfig(n_layers=n_layers, d_model=8, n_heads=2, d_head=4, d_mlp=6, d_vocab=11, n_ctx=8,
                               attention="bilinear", normalization_type=norm, positional_embedding_type=pos,
                               dtype=torch.float64, seed=seed)
    model = HookedBilinearTransformer(cfg).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.b_V.zero_()
            for name in ("b_Q1", "b_K1", "b_Q2", "b_K2"):
                getattr(block.attn, name).normal_(0, 0.2, generator=torch.Generator().manual_seed(seed + 1))
    return model


@pytest.mark.parametrize("pos", ["standard", "rotary"])
@pytest.mark.parametrize("norm", [None, "Scale", "RMS"])
def test_pattern_rows_and_logits_add_up_to_the_real_values(norm, pos):
    model = bilinear_model(2, pos, norm)
    toks = tokens(1, 6, seed=2)[0]
    g = attribute(model, toks, targets=[3, 5], max_nodes=40, edges_per_node=8)
    with torch.no_grad():
        logits, cache = model.run_with_cache(toks[None])
    sums = g.edges.groupby("target")["weight"].sum()
    pats = g.nodes[(g.nodes["kind"] == "pattern") & g.nodes["is_row"]]
    assert len(pats) > 5
    for r in pats.itertuples():
        want = float(cache[f"blocks.{r.layer}.attn.hook_pattern"][0, r.head, r.pos, r.key_pos])
        assert sums[r.node_id] == pytest.approx(want, abs=1e-10)
    for r in g.targets.itertuples():
        assert sums[r.node_id] == pytest.approx(float(logits[0, r.pos, r.index]), abs=1e-10)
    assert g.check().max_rel_err < 1e-10
    assert ("nothing" in g.meta["frozen"]) == (norm != "RMS")


def test_edges_equal_autograd_with_nothing_frozen():
    model = bilinear_model(1, "standard", None, seed=3)
    toks = tokens(1, 5, seed=4)[0]
    g = attribute(model, toks, targets=[2], max_nodes=200, edges_per_node=10_000)
    w = {(s, t): v for s, t, v in g.edges[["source", "target", "weight"]].itertuples(index=False)}
    saved = {}

    def leaf(x, hook):
        saved["embed"] = x.detach().requires_grad_(True)
        return saved["embed"]

    with torch.no_grad():
        _, cache = model.run_with_cache(toks[None], names_filter=lambda n: n.endswith("hook_pattern"))
    # pattern rows: ¼ ∂A/∂embed · embed (the position embedding is a separate source)
    def keep(x, hook):
        saved["A"] = x
        return x

    for r in g.nodes[(g.nodes["kind"] == "pattern") & g.nodes["is_row"]].itertuples():
        with torch.enable_grad(), model.hooks(fwd_hooks=[("hook_embed", leaf), ("blocks.0.attn.hook_pattern", keep)]):
            model(toks[None])
            (gr,) = torch.autograd.grad(saved["A"][0, r.head, r.pos, r.key_pos], saved["embed"])
        e = (0.25 * gr * saved["embed"]).sum(-1)[0].detach()
        for q in range(len(toks)):
            assert w.get((f"E_{int(toks[q])}_{q}", r.node_id), 0.0) == pytest.approx(float(e[q]), abs=1e-10)
    # the logit's edges from tokens at other positions: half of the value path with A fixed (MLPs cut)
    fixed = {k: v.detach() for k, v in cache.items()}
    cut = ("blocks.0.mlp.hook_post", lambda x, hook: x.detach())  # MLPs are nodes
    with torch.enable_grad(), model.hooks(fwd_hooks=[("hook_embed", leaf), cut] +
                                          [(k, (lambda v: lambda x, hook: v)(v)) for k, v in fixed.items()]):
        logit = model(toks[None])[0, -1, 2]
        (gl,) = torch.autograd.grad(logit, saved["embed"])
    e = (0.5 * gl * saved["embed"]).sum(-1)[0].detach()
    target = g.targets["node_id"].iloc[0]
    for q in range(len(toks) - 1):
        assert w.get((f"E_{int(toks[q])}_{q}", target), 0.0) == pytest.approx(float(e[q]), abs=1e-10)


def test_head_loadings_split_the_halved_value_path_exactly_and_io_keeps_pattern_columns(tmp_path):
    model = bilinear_model(2, "rotary", "Scale", seed=5)
    toks = tokens(1, 6, seed=6)[0]
    g = attribute(model, toks, targets=[4], max_nodes=30, edges_per_node=10_000)
    hl = g.head_loadings(g.targets["node_id"].iloc[0])
    s = hl.groupby(["source", "layer"]).agg(total=("loading", "sum"), w=("weight", "first"))
    assert len(s) > 0 and (s["total"] - s["w"]).abs().max() < 1e-10
    from hooked_bilinear.graphs import AttributionGraph

    h = AttributionGraph.load(g.save(tmp_path / "g.safetensors"))
    pats = h.nodes[h.nodes["kind"] == "pattern"]
    assert len(pats) and (pats["head"] >= 0).all() and (pats["key_pos"] <= pats["pos"]).all()
