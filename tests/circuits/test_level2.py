"""Level 2: per-MLP unordered pair tables (spec §2.3 item 2, §1.3, §5 items 9 and 11)."""

import numpy as np
import pytest
import torch

from hooked_bilinear.circuits import Target, TooLargeError, decompose
from hooked_bilinear.circuits.frozen import fold_weights

from ._models import make_model, tokens


@pytest.mark.parametrize("biases", [True, False])
def test_pair_counts_and_tables_sum_to_each_mlp(biases):
    model = make_model(3, "LN", biases=biases)
    toks = tokens()
    target = Target.logit(5, pos=-2)
    l1 = decompose(model, toks, level=1, target=target)
    l2 = decompose(model, toks, level=2, target=target)
    mlp1 = {n.label: v for n, v in zip(l1.nodes, l1.values)}
    for l in range(3):
        inputs = l2.table.mlp_inputs(l)
        k = len(inputs)
        # tok, pos, (2 heads, bO, mlp, bout) per earlier layer, 2 heads and bO of this layer, ONE;
        # zero biases add no leaves
        assert k == 2 + (5 if biases else 3) * l + 2 + (2 if biases else 0)
        assert (inputs[-1].kind == "one") == biases
        pairs = [n for n in l2.nodes if n.kind in ("sq", "pair") and n.layer == l]
        assert len(pairs) == k * (k + 1) // 2
        table = l2.pair_table(l).to_numpy()
        assert np.allclose(table, table.T)
        torch.testing.assert_close(torch.tensor(np.triu(table).sum(), dtype=torch.float64),
                                   mlp1[f"mlp{l}"].mean(), rtol=1e-10, atol=1e-12)
    assert l2.check().max_rel_err < 1e-10


def test_unordered_pairs_equal_symmetrised_ordered_pairs():
    """pair(T,T') = B(T,T') + B(T',T); ordered terms differ from half of it (the antisymmetric part)."""
    model = make_model(1, "RMS")
    toks = tokens(batch=1)
    d = decompose(model, toks, level=2, at=1)  # full residual output: each term is [1, n, d_model]
    vals = {n.label: v for n, v in zip(d.nodes, d.values)}
    f = fold_weights(model)
    _, cache = model.run_with_cache(toks)
    s2 = cache["blocks.0.ln2.hook_scale"]
    W_l, W_r = f.layers[0].W_l, f.layers[0].W_r

    def B(x, y):  # ordered bilinear map on residual contributions (bias-free pair of non-ONE inputs)
        return ((x / s2 @ W_l) * (y / s2 @ W_r)) @ f.layers[0].W_out

    tok, head = vals["tok"], vals["head0.1"]
    torch.testing.assert_close(vals["mlp0(tok, head0.1)"], B(tok, head) + B(head, tok))
    torch.testing.assert_close(vals["mlp0(tok, tok)"], B(tok, tok))
    assert (B(tok, head) - 0.5 * vals["mlp0(tok, head0.1)"]).abs().max() > 1e-3
    # Σ over all ordered pairs of the (non-ONE) inputs == Σ over unordered pairs
    names = ["tok", "pos", "head0.0", "head0.1", "bO0"]
    ordered = sum(B(vals[a], vals[b]) for a in names for b in names)
    unordered = sum(v for k, v in vals.items() if k.startswith("mlp0(") and ", 1)" not in k and "(1," not in k)
    torch.testing.assert_close(ordered, unordered)


def test_pair_table_labels_and_missing_terms():
    model = make_model(2, "LN")
    d2 = decompose(model, tokens(), level=2, target=3)
    table = d2.pair_table(1)
    assert list(table.index)[:3] == ["tok", "pos", "head0.0"]
    assert table.index[-1] == "1"  # ONE: the MLP bias row
    d1 = decompose(model, tokens(), level=1, target=3)
    with pytest.raises(KeyError, match="level=2"):
        d1.pair_table(1)


def test_full_output_level2_is_guarded():
    model = make_model(3, "LN")
    with pytest.raises(TooLargeError, match="pass a target"):
        decompose(model, tokens(), level=2, max_elements=1000)
    d = decompose(model, tokens(), level=2)  # default limit is ample for tiny models
    assert d.values.shape[1:] == (2, 6, 11)
