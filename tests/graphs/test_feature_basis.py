"""Graphs in an SAE basis (spec graphs §1.2): features replace a block's neurons, the error is an explicit node.

References: the SAE's own `encode` of the real `hook_mlp_out`, the real logits, and autograd through the
real model under the freeze (patterns and σ fixed, MLP outputs cut) for individual edges.
"""

import pytest
import torch

from hooked_bilinear import InputError
from hooked_bilinear.features import SAE, SAEConfig
from hooked_bilinear.graphs import attribute

from tests.circuits._models import make_model, tokens


def _sae(model, layer, arch="relu", seed=0, **kw):
    cfg = SAEConfig(d_in=model.cfg.d_model, d_sae=12, hook_name=f"blocks.{layer}.hook_mlp_out", architecture=arch,
                    dtype=torch.float64, **kw)
    sae = SAE(cfg, seed=seed)
    with torch.no_grad():  # biases that matter, and half the features active
        sae.b_enc.copy_(0.1 * torch.randn(12, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)))
        sae.b_dec.copy_(0.1 * torch.randn(model.cfg.d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1)))
    return sae


@pytest.mark.parametrize("arch, kw", [("relu", {}), ("topk", {"k": 4}), ("topk", {"k": 3, "normalize": 2.0})])
def test_feature_rows_and_logits_add_up_to_the_real_values(arch, kw):
    model = make_model(2, "LN", "rotary")
    sae = _sae(model, 0, arch, **kw)
    toks = tokens(1, 6, seed=3)[0]
    g = attribute(model, toks, targets=[2, 5], basis=sae, max_nodes=30, edges_per_node=5)
    with torch.no_grad():
        logits, cache = model.run_with_cache(toks[None])
        acts = sae.encode(cache["blocks.0.hook_mlp_out"][0])
    sums = g.edges.groupby("target")["weight"].sum()
    feats = g.nodes[(g.nodes["kind"] == "feature") & g.nodes["is_row"]]
    assert len(feats) > 0 and not (g.nodes[g.nodes["kind"] == "neuron"]["layer"] == 0).any()
    for r in feats.itertuples():
        assert sums[r.node_id] == pytest.approx(float(acts[r.pos, r.index]), abs=1e-10)
        assert r.activation == pytest.approx(float(acts[r.pos, r.index]), abs=1e-12)
    for r in g.targets.itertuples():
        assert sums[r.node_id] == pytest.approx(float(logits[0, r.pos, r.index]), abs=1e-10)
    assert g.check().max_rel_err < 1e-10
    assert (g.nodes["kind"] == "error").any()


def test_feature_and_error_edges_equal_autograd():
    model = make_model(2, "RMS", "standard")
    sae = _sae(model, 0, "relu", seed=4)
    toks = tokens(1, 5, seed=1)[0]
    g = attribute(model, toks, targets=[3], basis=sae, max_nodes=200, edges_per_node=10_000)
    names = lambda n: n.endswith("hook_pattern") or n.endswith("hook_scale")  # noqa: E731
    with torch.no_grad():
        _, cache = model.run_with_cache(toks[None], names_filter=names)
    saved = {}

    def freeze(x, hook):
        return cache[hook.name].clone()

    def leaf(x, hook):
        saved["orig." + hook.name] = x
        saved[hook.name] = x.detach().requires_grad_(True)
        return saved[hook.name]

    hooks = [(n, freeze) for n in cache.keys()] + [("hook_embed", leaf), ("blocks.0.hook_mlp_out", leaf),
                                                   ("blocks.1.mlp.hook_post", leaf)]
    w = {(s, t): v for s, t, v in g.edges[["source", "target", "weight"]].itertuples(index=False)}
    with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
        logits = model(toks[None])
        mlp_out = saved["orig.blocks.0.hook_mlp_out"][0]          # grad flows back to the embeddings
        pre = (mlp_out - sae.b_dec) @ sae.W_enc + sae.b_enc
        # a feature row's edges from the tokens: ½ ∂act/∂embed · embed
        for r in g.nodes[(g.nodes["kind"] == "feature") & g.nodes["is_row"]].itertuples():
            (gr,) = torch.autograd.grad(pre[int(r.pos), int(r.index)], saved["hook_embed"], retain_graph=True)
            e = 0.5 * (gr * saved["hook_embed"]).sum(-1)[0].detach()
            for q in range(len(toks)):
                assert w.get((f"E_{int(toks[q])}_{q}", r.node_id), 0.0) == pytest.approx(float(e[q]), abs=1e-10)
        # the logit's edges from features and from the error: ∂logit/∂mlp_out · write
        (gl,) = torch.autograd.grad(logits[0, -1, 3], saved["blocks.0.hook_mlp_out"], retain_graph=True)
        # the error's upstream: ε(sources) with the active set fixed; its edge g·ε[q] splits by ½ ∂/∂c · c
        mask = (torch.relu(pre) > 0).detach()
        eps = mlp_out - (torch.where(mask, pre, torch.zeros_like(pre)) @ sae.W_dec + sae.b_dec)
        q_err = 4
        (ge,) = torch.autograd.grad(gl[0, q_err].detach() @ eps[q_err], saved["hook_embed"])
        up_tok = (0.5 * (ge * saved["hook_embed"]).sum(-1)[0]).detach()
    logit = g.targets["node_id"].iloc[0]
    acts = torch.relu(pre.detach())
    err = mlp_out.detach() - (acts @ sae.W_dec + sae.b_dec)
    for q in range(len(toks)):
        assert w.get((f"X_0_{q}", logit), 0.0) == pytest.approx(float(gl[0, q] @ err[q]), abs=1e-10)
        for f in range(12):
            want = float(acts[q, f] * (gl[0, q] @ sae.W_dec[f]))
            assert w.get((f"0_{f}_{q}", logit), 0.0) == pytest.approx(want, abs=1e-10)

    frame, edge = g.error_upstream(f"X_0_{q_err}", logit)
    assert edge == pytest.approx(w[(f"X_0_{q_err}", logit)], abs=1e-12)
    assert frame["weight"].sum() == pytest.approx(edge, abs=1e-10)
    got = dict(zip(frame["source"], frame["weight"]))
    for q in range(len(toks)):
        assert got.get(f"E_{int(toks[q])}_{q}", 0.0) == pytest.approx(float(up_tok[q]), abs=1e-10)


def test_bad_bases():
    model = make_model(2, "LN", "standard")
    with pytest.raises(InputError, match="hook_mlp_out"):
        attribute(model, tokens(1, 5)[0], basis=SAE(SAEConfig(d_in=8, d_sae=4, hook_name="blocks.0.hook_resid_pre",
                                                               architecture="relu"), seed=0))
    with pytest.raises(InputError, match="d_in=4"):
        attribute(model, tokens(1, 5)[0], basis=SAE(SAEConfig(d_in=4, d_sae=4, hook_name="blocks.0.hook_mlp_out",
                                                               architecture="relu"), seed=0))
    with pytest.raises(InputError, match="two SAEs"):
        attribute(model, tokens(1, 5)[0], basis=[_sae(model, 1), _sae(model, 1)])
