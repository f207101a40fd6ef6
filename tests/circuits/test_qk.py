"""QK expansion (spec graphs.md §2): Σ (query source × key source) pairs == the real cached attention score.

Every reference is read from a forward pass of the model (the cached `hook_attn_scores`, `hook_q`/`hook_k`)
or built from TransformerLens's own ActivationCache tools, never from circuits/qk.py.
"""

import pytest
import torch

from hooked_bilinear.circuits import ScoreDecomposition, Target, decompose

from ._models import folded_copy, make_model, tokens

NORMS = ["LN", "RMS", None, "LNPre", "RMSPre"]
POSITIONS = ["standard", "rotary", "none"]


@torch.no_grad()
def cached_scores(model, toks, layer, head):
    _, cache = model.run_with_cache(toks, names_filter=f"blocks.{layer}.attn.hook_attn_scores")
    return cache[f"blocks.{layer}.attn.hook_attn_scores"][:, head]  # [batch, q, k]


@pytest.mark.parametrize("pos", POSITIONS)
@pytest.mark.parametrize("norm", NORMS)
def test_score_pairs_sum_to_the_cached_score_float64(norm, pos):
    for n_layers, biases in ((1, True), (2, True), (3, False)):
        model = make_model(n_layers, norm, pos, biases=biases)
        toks = tokens()
        for layer in range(n_layers):
            real = cached_scores(model, toks, layer, 1)
            for level in (1, 2, "neurons"):
                d = decompose(model, toks, level=level, target=Target.score(layer, 1, query_pos=5))
                assert isinstance(d, ScoreDecomposition)
                assert d.terms.shape[-1] == 6 and d.key_pos == tuple(range(6))
                assert torch.allclose(d.total, real[:, 5, :6], rtol=0, atol=1e-10 * real.abs().max())
                c = d.check()
                assert c.max_rel_err <= 1e-10 and c.max_mass_rel_err <= 1e-12


def test_partial_rotary_and_custom_attn_scale():
    model = make_model(2, "RMS", "rotary", rotary_dim=2, attn_scale=1.7)
    toks = tokens()
    real = cached_scores(model, toks, 1, 0)
    d = decompose(model, toks, target=Target.score(1, 0, 4, key_pos=[0, 2, 4]))
    assert torch.allclose(d.total, real[:, 4, [0, 2, 4]], rtol=0, atol=1e-12)


@pytest.mark.parametrize("pos", ["standard", "rotary"])
@pytest.mark.parametrize("norm", ["LN", "RMS", None])
def test_float32_model(norm, pos):
    model = make_model(2, norm, pos, dtype=torch.float32)
    toks = tokens()
    d = decompose(model, toks, level=2, target=Target.score(1, 1, -1))
    assert d.check().max_rel_err <= 1e-5
    d64 = decompose(model, toks, target=Target.score(1, 1, -1), dtype=torch.float64)
    assert d64.terms.dtype == torch.float64 and d64.check().max_rel_err <= 1e-5


def test_attention_only_model_and_first_layer():
    model = make_model(2, "LN", "rotary", attn_only=True)
    toks = tokens()
    d = decompose(model, toks, target=Target.score(0, 0, 3, key_pos=1))
    # layer 0 reads only tok (no learned positions with rotary) and the biases
    assert d.query_sources == ["tok", "bQ"] and d.key_sources == ["tok", "bK"]
    assert float((d.total - cached_scores(model, toks, 0, 0)[:, 3, 1:2]).abs().max()) < 1e-12


def test_each_pair_matches_transformer_lens_pieces():
    """With TL-processed weights, each query source's row of the table sums to q_a · k_real, where q_a is
    built from TL's stack_head_results / apply_ln_to_stack and k_real is the cached hook_k."""
    model = folded_copy(make_model(2, "LN", "standard"))
    toks = tokens()
    with torch.no_grad():
        _, cache = model.run_with_cache(toks)
    h, p = 1, 5
    scale = model.cfg.attn_scale
    heads, labels = cache.stack_head_results(layer=1, return_labels=True)
    sources = {"tok": cache["hook_embed"], "pos": cache["hook_pos_embed"], "bout0": model.blocks[0].mlp.b_out.expand_as(cache["hook_embed"]),
               "mlp0": cache["blocks.0.hook_mlp_out"] - model.blocks[0].mlp.b_out}
    sources.update({f"head0.{lab[-1]}": heads[i] for i, lab in enumerate(labels)})
    d = decompose(model, toks, target=Target.score(1, h, p))
    k_real = cache["blocks.1.attn.hook_k"][:, :p + 1, h]  # [b, k, e]
    q_real = cache["blocks.1.attn.hook_q"][:, p, h]  # [b, e]
    W_Q, W_K = model.W_Q[1, h], model.W_K[1, h]
    for name, c in sources.items():
        normed = cache.apply_ln_to_stack(c[None], layer=1)[0]  # frozen ln1 scale (weights folded)
        q_a = normed[:, p] @ W_Q
        i = d.query_sources.index(name)
        expected = torch.einsum("be,bke->bk", q_a, k_real) / scale
        assert torch.allclose(d.terms[i].sum(0), expected, atol=1e-12), name
        k_b = normed[:, :p + 1] @ W_K
        j = d.key_sources.index(name)
        expected = torch.einsum("be,bke->bk", q_real, k_b) / scale
        assert torch.allclose(d.terms[:, j].sum(0), expected, atol=1e-12), name
    # the tok × tok pair on its own, from TL pieces on both sides
    t = cache.apply_ln_to_stack(cache["hook_embed"][None], layer=1)[0]
    expected = torch.einsum("be,bke->bk", t[:, p] @ W_Q, t[:, :p + 1] @ W_K) / scale
    assert torch.allclose(d.terms[d.query_sources.index("tok"), d.key_sources.index("tok")], expected, atol=1e-12)
    # the bias pair: b_Q · b_K / scale at every key
    bb = d.terms[d.query_sources.index("bQ"), d.key_sources.index("bK")]
    assert torch.allclose(bb, (model.b_Q[1, h] @ model.b_K[1, h] / scale).expand_as(bb), atol=1e-14)


def test_neuron_sources_sum_to_their_mlp():
    model = make_model(2, "RMS", "standard")
    toks = tokens()
    t = Target.score(1, 0, 5)
    lvl1, neurons = decompose(model, toks, target=t), decompose(model, toks, level="neurons", target=t)
    m = [i for i, s in enumerate(neurons.query_sources) if s.startswith("mlp0.n")]
    assert len(m) == model.cfg.d_mlp
    i, j = lvl1.query_sources.index("mlp0"), lvl1.key_sources.index("tok")
    jn = neurons.key_sources.index("tok")
    assert torch.allclose(neurons.terms[m, jn].sum(0), lvl1.terms[i, j], atol=1e-12)


def test_tables_rows_and_groups_are_consistent():
    model = make_model(2, "LN", "rotary")
    toks = tokens()
    d = decompose(model, toks, target=Target.score(1, 1, 5))
    real_pattern = model.run_with_cache(toks)[1]["blocks.1.attn.hook_pattern"][:, 1, 5, :6]
    row = d.row()
    assert list(row.index) == list(range(6))
    assert torch.allclose(torch.tensor(row["pattern"].to_numpy()), real_pattern.mean(0), atol=1e-12)
    assert (row["score"] - row["sum_of_terms"]).abs().max() < 1e-12
    table = d.pair_table(key_pos=3)
    assert abs(table.to_numpy().sum() - row.loc[3, "score"]) < 1e-12
    assert table.shape == (len(d.query_sources), len(d.key_sources))
    frame = d.to_frame()
    assert len(frame) == len(d) and abs(frame["contribution"].sum() - row["score"].sum()) < 1e-10
    g = d.group("key_source")
    assert abs(g.sum(axis=0).to_numpy() - row["score"].to_numpy()).max() < 1e-12
    top = d.top(3, key_pos=3)
    assert (top["key_pos"] == 3).all() and abs(top["contribution"].iloc[0]) == table.abs().to_numpy().max()


def test_plots_return_figures():
    model = make_model(2, "LN", "standard")
    d = decompose(model, tokens(), target=Target.score(1, 0, 4))
    fig = d.plot_pair_table(key_pos=2)
    assert len(fig.axes) == 2  # heatmap + colorbar
    fig = d.plot_row(k=5)
    assert len(fig.axes) == 3 and len(fig.axes[1].get_yticks()) == 5
