"""Full enumeration (counts, guard, degrees) and lazy best-first expansion (exact after every step)."""

import pytest
import torch

from hooked_bilinear.circuits import Target, TooManyPathsError, count_paths, decompose, expand_lazy
from hooked_bilinear.circuits.counting import count_engine_paths

from ._models import make_model, tokens


def test_count_formula_matches_the_spec_tables():
    # spec §2.3: pure model (1 token leaf, no biases, unordered pairs)
    pure = dict(n_leaves=1, bO=False, bout=False, one=False)
    assert [count_paths(1, h, **pure) for h in (1, 4, 8, 12)] == [5, 20, 54, 104]
    assert [count_paths(2, h, **pure) for h in (1, 4)] == [65, 5150]
    assert count_paths(3, 1, **pure) == 8645
    # tok + pos, bias leaves, ONE, ordered pairs
    assert [count_paths(1, h, ordered=True) for h in (1, 2, 4, 8, 12)] == [42, 72, 156, 420, 812]
    assert count_paths(2, 1, ordered=True) == 7482
    assert count_paths(3, 2, attn_only=True, n_leaves=1, bO=False) == 3 ** 3


@pytest.mark.parametrize("n_layers,norm,biases,pos", [(1, "LN", True, "standard"), (2, "RMS", True, "none"),
                                                      (2, None, False, "standard"), (3, "RMS", False, "none")])
def test_full_enumeration_count_degree_and_exactness(n_layers, norm, biases, pos):
    model = make_model(n_layers, norm, pos, biases=biases, n_heads=1)
    d = decompose(model, tokens(), level="full", target=Target.logit(2, pos=-1))
    paths = [n for n in d.nodes if n.kind != "bU"]
    assert len(paths) == count_engine_paths(d.table, n_layers)
    assert len({n.id for n in paths}) == len(paths)
    assert not any(n.expandable for n in paths)
    degrees = [n.degree for n in paths]
    assert max(degrees) == 2 ** n_layers  # deg(mlp(X, Y)) = deg X + deg Y, tok/pos have degree 1
    assert min(degrees) == (0 if biases else 1)
    assert d.check().max_rel_err < 1e-10
    if n_layers == 3 and not biases:
        assert len(paths) == 8645  # the spec's pure L=3, H=1 count


def test_full_enumeration_guard_points_to_lazy_mode():
    model = make_model(3, "LN")
    n = count_paths(3, 2)
    with pytest.raises(TooManyPathsError, match="level='lazy'") as err:
        decompose(model, tokens(), level="full", target=1, max_terms=10_000)
    assert err.value.n_terms == n > 10_000


def test_lazy_is_exact_after_every_step_with_cancellation_ratios():
    model = make_model(3, "LN")
    lazy = expand_lazy(model, tokens(batch=1), target=Target.logit_diff(3, 4))
    d0 = lazy.decomposition()
    scores = [(abs(float(v)), n.label) for n, v in zip(d0.nodes, d0.values[:, 0]) if n.expandable]
    assert lazy.best().label == max(scores)[1]  # best-first: the largest |contribution| aggregate
    for _ in range(40):
        rec = lazy.step()
        d = lazy.decomposition()
        assert d.check().max_rel_err < 1e-10
        assert rec["cancellation"] >= 1 - 1e-9  # Σ|children| >= |Σ children| = |parent|
    assert lazy.n_expanded == 40
    assert any(r["cancellation"] > 1.5 for r in lazy.history)  # children do cancel somewhere
    assert len(d.history) == 40 and d.level == "lazy"


def test_lazy_to_completion_equals_full_enumeration():
    model = make_model(1, "LN")
    toks = tokens(batch=1)
    full = decompose(model, toks, level="full", target=6)
    lazy = decompose(model, toks, level="lazy", target=6, budget=10_000)
    assert not any(n.expandable for n in lazy.nodes)
    a = dict(zip((n.label for n in full.nodes), full.values[:, 0].tolist()))
    b = dict(zip((n.label for n in lazy.nodes), lazy.values[:, 0].tolist()))
    assert a.keys() == b.keys()
    assert all(abs(a[k] - b[k]) < 1e-12 for k in a)


def test_lazy_budget_tol_and_frontier_cap():
    model = make_model(2, "RMS")
    toks = tokens()
    d = decompose(model, toks, level="lazy", budget=5)
    assert len(d.history) == 5
    assert d.reference.shape == (2,)  # default target: each sequence's top token at the last position
    top = model(toks)[:, -1].max(-1).values
    torch.testing.assert_close(d.reference, top)
    capped = decompose(model, toks, level="lazy", budget=1000, max_terms=40)
    assert len([n for n in capped.nodes if n.kind != "bU"]) <= 40
    loose = decompose(model, toks, level="lazy", budget=1000, tol=0.5)
    assert len(loose.history) < 1000
    rem = [abs(v) for n, v in zip(loose.nodes, loose.values.abs().sum(1).tolist()) if n.expandable]
    assert max(rem) <= 0.5 * loose.total.abs().sum().item() + 1e-12


def test_lazy_progress_bar_changes_nothing_but_stderr(capsys):
    model = make_model(2, "LN")
    quiet = decompose(model, tokens(), level="lazy", budget=7)
    shown = decompose(model, tokens(), level="lazy", budget=7, progress=True)
    err = capsys.readouterr().err
    assert "lazy expansion" in err and "7/7" in err
    assert [n.label for n in quiet.nodes] == [n.label for n in shown.nodes]
    assert torch.equal(quiet.values, shown.values)


def _rebuild(table, node):
    return table.get(node.kind, node.layer, node.head, tuple(_rebuild(table, a) for a in node.args))


@pytest.mark.parametrize("pos", [-1, (1, 4)])
def test_heads_over_mlps_contract_positions_first_and_match_direct_values(pos):
    """The fast path (Σ_s W[p,s] h[s], then W_out W_V W_O) equals each child's value computed directly."""
    from hooked_bilinear.circuits.decompose import make_engine

    model = make_model(3, "LN")
    fast, _ = make_engine(model, tokens(), Target.logit(2, pos=pos))
    slow, _ = make_engine(model, tokens(), Target.logit(2, pos=pos))
    T = fast.table
    sq0 = T.get("sq", 0, None, (T.get("head_c", 0, 1),))
    for node in [T.get("head", 2, 1, (T.get("head", 1, 0, (T.get("mlp_c", 0),)),)),
                 T.get("head", 1, 1, (T.get("mlp_c", 0),)),
                 T.get("head", 2, 0, (sq0,)),
                 T.get("head", 2, 0, (T.get("pair", 1, None, (T.get("mlp_c", 0), T.get("one", 1))),))]:
        kids, V = fast.children_values(node, "tgt")
        assert len(kids) == T.n_children(node) == len(T.children(node))
        want = torch.stack([slow.value(_rebuild(slow.table, c), "tgt") for c in kids])
        torch.testing.assert_close(V, want, rtol=1e-10, atol=1e-12)


def test_lazy_skips_expansions_above_the_caps():
    model = make_model(2, "LN")
    d = decompose(model, tokens(), level="lazy", target=3, budget=50)
    lazy = expand_lazy(model, tokens(), target=3).run(50, max_children=30)
    assert lazy.skipped and all(lazy.engine.table.n_children(n) > 30 for n in lazy.skipped)
    assert all(r["n_children"] <= 30 for r in lazy.history)
    assert lazy.decomposition().check().max_rel_err < 1e-10
    assert max(r["n_children"] for r in d.history) > 30
