"""Results as DataFrames (labels, signatures, top-k, grouping) and figures."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from hooked_bilinear.circuits import Target, decompose
from hooked_bilinear.circuits.nodes import NodeTable

from ._models import make_model, tokens

COLUMNS = ["label", "signature", "tree", "kind", "layers", "heads", "degree", "positions", "contribution",
           "norm", "expandable"]


def test_labels_signatures_trees_and_degrees():
    T = NodeTable(n_layers=2, n_heads=4, has_pos=True, bO=[True] * 2, bout=[True] * 2, one=[True] * 2, has_mlp=True)
    tok = T.get("tok")
    h = T.get("head", 0, 3, (tok,))
    node = T.get("pair", 1, None, (tok, h))
    assert node.label == "mlp1(tok, head0.3(tok))"
    assert node.signature == "mlp1(·, head0.3(·))"
    assert node.tree == ("mlp", 1, ("tok",), ("head", 0, 3, ("tok",)))
    assert node.degree == 2 and not node.expandable
    assert T.get("pair", 1, None, (h, tok)) is node  # unordered: one node per pair
    sq = T.get("sq", 1, None, (T.get("head_c", 0, 1),))
    assert sq.label == "mlp1(head0.1, head0.1)" and sq.expandable and sq.degree is None
    assert T.get("sq", 0, None, (T.get("one", 0),)).label == "mlp0(1, 1)"


def test_frame_top_and_group():
    model = make_model(2, "LN")
    d = decompose(model, tokens(), level=2, target=Target.logit(3, pos=4))
    frame = d.to_frame()
    assert list(frame.columns) == COLUMNS and len(frame) == len(d)
    assert frame["positions"].iloc[0] == (4,)
    np.testing.assert_allclose(frame["contribution"].sum(), d.reference.mean().item(), rtol=1e-10)
    top = d.top(7)
    assert len(top) == 7
    mags = top["contribution"].abs().to_numpy()
    assert (np.diff(mags) <= 0).all() and mags[0] == frame["contribution"].abs().max()
    row = frame[frame["label"] == "mlp1(head0.1, head1.0)"].iloc[0]
    assert row["layers"] == (0, 1) and row["heads"] == ("0.1", "1.0") and row["kind"] == "mlp" and row["expandable"]
    groups = d.group("signature")
    assert groups["n_terms"].sum() == len(d)
    np.testing.assert_allclose(groups["contribution"].sum(), frame["contribution"].sum(), rtol=1e-10)
    assert groups.loc["mlp0(·, ·)", "n_terms"] == 3  # tok·tok, tok·pos, pos·pos
    by_kind = d.group("kind")
    assert set(by_kind.index) <= {"embed", "bias", "head", "mlp", "head total", "mlp total"}
    with pytest.raises(KeyError):
        d.group("nonsense")


def test_full_output_frame_sorts_by_norm():
    d = decompose(make_model(1, "RMS"), tokens(), level=1)
    frame = d.to_frame()
    assert frame["contribution"].isna().all()
    top = d.top(3)
    assert top["norm"].iloc[0] == frame["norm"].max()


def test_plots_return_figures():
    model = make_model(2, "LN")
    d = decompose(model, tokens(), level=2, target=5)
    fig = d.plot_top(6)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert len(ax.patches) == 6
    widths = sorted(abs(p.get_width()) for p in ax.patches)
    np.testing.assert_allclose(widths[-1], d.top(1)["contribution"].abs().iloc[0])
    heat = d.plot_pair_table(1)
    assert isinstance(heat, Figure)
    image = heat.axes[0].images[0].get_array()
    np.testing.assert_allclose(np.asarray(image), d.pair_table(1).to_numpy())
    assert isinstance(d.pair_table(1), pd.DataFrame)


def test_lazy_frame_marks_remainders_and_history():
    d = decompose(make_model(2, "LN"), tokens(), level="lazy", budget=6, target=2)
    frame = d.to_frame()
    assert frame["expandable"].any() and (~frame["expandable"]).any()
    assert not frame.loc[~frame["expandable"], "kind"].isin(["head total", "mlp total"]).any()
    hist = pd.DataFrame(d.history)
    assert list(hist["step"]) == list(range(6))
    assert {"label", "contribution", "n_children", "cancellation"} <= set(hist.columns)
    assert isinstance(d.plot_top(5), Figure)


def test_signatures_do_not_depend_on_which_leaf_came_first():
    T = NodeTable(n_layers=2, n_heads=1, has_pos=True, bO=[False] * 2, bout=[False] * 2, one=[False] * 2, has_mlp=True)
    tok, pos, head = T.get("tok"), T.get("pos"), T.get("head_c", 0, 0)
    m = lambda x, y: T.get("pair", 0, None, (x, y))  # noqa: E731
    a = T.get("pair", 1, None, (m(tok, T.get("head", 0, 0, (tok,))), m(pos, pos)))
    b = T.get("pair", 1, None, (m(pos, T.get("head", 0, 0, (pos,))), m(tok, tok)))
    assert a.label != b.label and a.signature == b.signature == "mlp1(mlp0(·, ·), mlp0(·, head0.0(·)))"
    assert m(head, tok).label == "mlp0(tok, head0.0)"  # arguments in residual-stream order
