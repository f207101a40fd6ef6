"""Saving and loading graphs (safetensors + JSON, no pickle), and bad input: clear errors, nothing changed."""

import copy

import numpy as np
import pytest
import torch

from hooked_bilinear import HookedBilinearConfig, HookedBilinearTransformer, InputError, NotBilinearError
from hooked_bilinear.circuits import Target
from hooked_bilinear.graphs import AttributionGraph, GraphFormatError, attribute

from tests.circuits._models import make_model, tokens


@pytest.fixture(scope="module")
def model():
    return make_model(2, "LN", "standard")


def test_save_load_roundtrip(model, tmp_path):
    g = attribute(model, tokens(1, 6)[0], max_nodes=10).prune(0.9, 0.99)
    path = g.save(tmp_path / "g.safetensors")
    h = AttributionGraph.load(path)
    assert h.meta == g.meta
    for c in g.nodes.columns:
        a, b = g.nodes[c].to_numpy(), h.nodes[c].to_numpy()
        if a.dtype.kind == "f":
            np.testing.assert_array_equal(a, b)
        else:
            assert list(map(str, a)) == list(map(str, b)), c
    assert g.edges.equals(h.edges)
    assert h.check().max_rel_err == g.check().max_rel_err


def test_corrupt_and_foreign_files(model, tmp_path):
    g = attribute(model, tokens(1, 6)[0], max_nodes=5)
    path = g.save(tmp_path / "g.safetensors")
    raw = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(GraphFormatError, match="not a readable safetensors"):
        AttributionGraph.load(tmp_path / "trunc.safetensors")
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"), metadata={"format": "something"})
    with pytest.raises(GraphFormatError, match="not an attribution graph"):
        AttributionGraph.load(tmp_path / "other.safetensors")
    with pytest.raises(GraphFormatError, match="no graph file"):
        AttributionGraph.load(tmp_path / "missing.safetensors")


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, sum(len(hp.fwd_hooks) for hp in model.hook_dict.values())


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_nodes=0), "max_nodes must be a positive int"),
    (dict(max_nodes=-3), "max_nodes must be a positive int"),
    (dict(edges_per_node=0), "edges_per_node"),
    (dict(batch_size=True), "batch_size"),
    (dict(targets=[11]), r"target token 11 must be an int in \[0, d_vocab=11\)"),
    (dict(targets=["cat"]), "neither a token id nor a Target"),
    (dict(targets=[Target.logit(2, pos=6)]), "target position 6 is out of range"),
    (dict(targets=[Target.next_token()]), "not a graph target"),
    (dict(targets=[]), "non-empty"),
    (dict(dtype=torch.int64), "floating torch.dtype"),
])
def test_bad_arguments_raise_and_change_nothing(model, kwargs, match):
    before, hooks = state(model)
    with pytest.raises(InputError, match=match):
        attribute(model, tokens(1, 6)[0], **kwargs)
    after, hooks_after = state(model)
    assert hooks_after == hooks == 0
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bad_prompts(model):
    with pytest.raises(InputError, match="n_ctx"):
        attribute(model, torch.zeros(9, dtype=torch.long))
    with pytest.raises(InputError, match="out of range"):
        attribute(model, torch.tensor([1, 2, 99]))


def test_gated_model_is_refused():
    cfg = HookedBilinearConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, d_mlp=6, d_vocab=11, n_ctx=8, gate="silu")
    with pytest.raises(NotBilinearError, match="gate='silu'"):
        attribute(HookedBilinearTransformer(cfg), torch.tensor([1, 2, 3]))


def test_unknown_node_ids(model):
    g = attribute(model, tokens(1, 6)[0], max_nodes=5)
    with pytest.raises(InputError, match="no node 'nope'"):
        g.incoming("nope")
    with pytest.raises(InputError, match="no node"):
        g.intervene(["nope"], scale=0.0)
    emb = g.nodes.loc[g.nodes["kind"] == "embedding", "node_id"].iloc[0]
    with pytest.raises(InputError, match="only neurons"):
        g.intervene([emb], scale=0.0)


def test_bilinear_attention_graphs_take_value_biases():
    cfg = HookedBilinearConfig(n_layers=2, d_model=8, n_heads=2, d_head=4, d_mlp=6, d_vocab=11, n_ctx=8,
                               attention="bilinear", normalization_type=None, dtype=torch.float64, seed=0)
    model = HookedBilinearTransformer(cfg).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.b_V.zero_()
    toks = tokens(1, 6)[0]
    g = attribute(model, toks, targets=[2], max_nodes=10)
    with torch.no_grad():
        logit = float(model(toks[None])[0, -1, 2])
    assert g.edges.groupby("target")["weight"].sum()[g.targets["node_id"].iloc[0]] == pytest.approx(logit, abs=1e-10)
    with torch.no_grad():  # no longer refused: Σ_q A[p, q] b_V W_O is a term of the graph (test_value_biases.py)
        model.blocks[1].attn.b_V.fill_(0.1)
        logit = float(model(toks[None])[0, -1, 2])
    g = attribute(model, toks, targets=[2], max_nodes=10)
    assert g.edges.groupby("target")["weight"].sum()[g.targets["node_id"].iloc[0]] == pytest.approx(logit, abs=1e-10)
