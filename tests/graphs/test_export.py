"""`to_circuit_tracer` writes files that circuit-tracer 0.5.0's own pydantic schema accepts, with its ids."""

from __future__ import annotations

import json
import math

import pytest

from hooked_bilinear.errors import InputError
from hooked_bilinear.graphs import to_circuit_tracer
from tests.graphs._fixtures import PrunableGraph, hand_graph, induction_graph



@pytest.fixture(scope="module")
def gm():
    """circuit-tracer's own schema (only this module of it is imported)."""
    return pytest.importorskip("circuit_tracer.frontend.graph_models",
                               reason="circuit-tracer not installed: pip install --no-deps circuit-tracer==0.5.0")


@pytest.fixture(scope="module")
def graph():
    return hand_graph()


def _write(graph, tmp_path, slug="g"):
    path = to_circuit_tracer(graph, tmp_path, slug)
    return json.loads(path.read_text()), json.loads((tmp_path / "graph-metadata.json").read_text())


def test_files_validate_against_circuit_tracer_schema(gm, graph, tmp_path):
    data, listing = _write(graph, tmp_path)
    model = gm.Model.model_validate(data)
    fields = set(gm.Node.model_fields)
    for record in data["nodes"]:  # every field written, none invented: nothing left to pydantic defaults
        assert set(record) == fields, record["node_id"]
    for link in data["links"]:
        gm.Link.model_validate(link)
    assert listing["graphs"] == [model.metadata.model_dump()]
    assert model.metadata.slug == "g" and model.metadata.scan == "hand-made"
    assert model.metadata.prompt_tokens == graph.meta["prompt_tokens"]


def test_nodes_are_circuit_tracer_constructors(gm, graph, tmp_path):
    data, _ = _write(graph, tmp_path)
    by_id = {n["node_id"]: n for n in data["nodes"]}
    frame = graph.nodes.set_index("node_id")
    n_layers = graph.meta["n_layers"]
    checked = set()
    for node_id, row in frame.iterrows():
        got = by_id[node_id]
        if row.kind == "neuron":
            want = gm.Node.feature_node(int(row.layer), int(row.pos), int(row["index"]),
                                        influence=got["influence"], activation=float(row.activation))
        elif row.kind == "embedding":
            want = gm.Node.token_node(int(row.pos), int(row["index"]), influence=got["influence"])
        elif row.kind == "logit":
            token = {11: " mat", 4: ' "quoted"'}[int(row["index"])]
            want = gm.Node.logit_node(pos=int(row.pos), vocab_idx=int(row["index"]), token=token, num_layers=n_layers,
                                      target_logit=True, token_prob=float(row.token_prob))
            assert got["activation"] == pytest.approx(row.activation)
        else:
            continue
        skip = {"clerp", "activation", "influence"} - ({"clerp"} if row.kind == "logit" else set())
        assert {k: v for k, v in got.items() if k not in skip} == \
            {k: v for k, v in want.model_dump().items() if k not in skip}, node_id
        checked.add(row.kind)
    assert checked == {"neuron", "embedding", "logit"}


def test_links_are_the_graph_edges(graph, tmp_path):
    data, _ = _write(graph, tmp_path)
    got = {(e["source"], e["target"]): e["weight"] for e in data["links"]}
    want = {(s, t): w for s, t, w in graph.edges.itertuples(index=False)}
    assert got == want
    # the exactness invariant survives the export: links into every row sum to its activation
    acts = {n["node_id"]: n["activation"] for n in data["nodes"]}
    for row in graph.nodes[graph.nodes["is_row"]].itertuples():
        total = sum(w for (s, t), w in got.items() if t == row.node_id)
        assert total == pytest.approx(acts[row.node_id], abs=1e-12)


def test_viewer_needs_unique_features_and_remainders_are_labelled(graph, tmp_path):
    data, _ = _write(graph, tmp_path)
    keys = [(n["layer"], n["feature"], n["ctx_idx"]) for n in data["nodes"]]
    assert len(keys) == len(set(keys))  # the frontend merges duplicates into one feature
    rest = [n for n in data["nodes"] if n["node_id"].startswith("R_")]
    assert rest and all(n["feature_type"] == "mlp reconstruction error" for n in rest)
    assert all(n["clerp"].startswith("exact remainder (not an error)") for n in rest)
    pos = dict(zip(graph.nodes["node_id"], graph.nodes["pos"]))
    for n in rest:  # drawn at the position of the row it feeds
        row_id = n["node_id"][2:].rsplit("_", 1)[0]
        assert n["ctx_idx"] == pos[row_id]
    kinds = {n["node_id"][0]: n for n in data["nodes"]}
    assert kinds["P"]["layer"] == "E" and kinds["C"]["layer"] == "E"  # leaves in the embedding row


def test_influence_is_circuit_tracers_cumulative_score(graph, tmp_path):
    data, _ = _write(graph, tmp_path)
    raw = {r.node_id: r.influence for r in graph.nodes.itertuples()
           if not math.isnan(r.influence)}  # circuit-tracer's cumulative score runs over every node
    total = sum(raw.values())
    for n in data["nodes"]:
        if n["node_id"] not in raw:
            assert n["influence"] is None
            continue
        mine = raw[n["node_id"]]
        assert n["influence"] == pytest.approx(sum(v for v in raw.values() if v >= mine) / total)


def test_metadata_appends_and_replaces_by_slug(graph, tmp_path):
    to_circuit_tracer(graph, tmp_path, "first")
    to_circuit_tracer(graph, tmp_path, "second")
    to_circuit_tracer(graph, tmp_path, "first", scan="again")
    listing = json.loads((tmp_path / "graph-metadata.json").read_text())
    assert [g["slug"] for g in listing["graphs"]] == ["second", "first"]  # create_graph_files' order
    assert listing["graphs"][1]["scan"] == "again"
    assert {p.name for p in tmp_path.iterdir()} == {"first.json", "second.json", "graph-metadata.json"}


def test_prunes_like_create_graph_files(tmp_path):
    graph = hand_graph(cls=PrunableGraph)
    data, listing = _write(graph, tmp_path)
    assert graph.calls == [(0.8, 0.98)]
    assert listing["graphs"][0]["node_threshold"] == 0.8
    kept = set(graph.nodes.loc[(graph.nodes["influence"] >= 0.5) | graph.nodes["kind"].isin(["embedding", "logit"]),
                               "node_id"])
    assert {n["node_id"] for n in data["nodes"]} <= kept
    assert {n["node_id"] for n in data["nodes"]} >= set(graph.nodes.loc[graph.nodes["kind"] == "logit", "node_id"])
    unpruned = to_circuit_tracer(graph, tmp_path, "all", prune=False)
    assert len(json.loads(unpruned.read_text())["nodes"]) == len(graph.nodes)
    assert json.loads((tmp_path / "graph-metadata.json").read_text())["graphs"][-1]["node_threshold"] is None


@pytest.mark.parametrize("slug", ["", "../up", "a/b", "has space", None])
def test_bad_slug_writes_nothing(graph, tmp_path, slug):
    with pytest.raises(InputError, match="slug"):
        to_circuit_tracer(graph, tmp_path, slug)
    assert list(tmp_path.iterdir()) == []


def test_bad_folders_and_values_write_nothing(graph, tmp_path):
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(InputError, match="is a file"):
        to_circuit_tracer(graph, afile, "g")
    (tmp_path / "graph-metadata.json").write_text("{not json")
    with pytest.raises(InputError, match="graph-metadata.json"):
        to_circuit_tracer(graph, tmp_path, "g")
    assert not (tmp_path / "g.json").exists()
    bad = hand_graph()
    bad.edges.loc[3, "weight"] = float("nan")
    with pytest.raises(InputError, match="finite"):
        to_circuit_tracer(bad, tmp_path / "new", "g")
    assert not (tmp_path / "new").exists()
    with pytest.raises(InputError, match="node_threshold=1.5"):
        to_circuit_tracer(hand_graph(cls=PrunableGraph), tmp_path / "new", "g", node_threshold=1.5)
    assert not (tmp_path / "new").exists()
    bad.meta.pop("prompt_tokens")
    with pytest.raises(InputError, match="prompt_tokens"):
        to_circuit_tracer(bad, tmp_path / "new", "g")


def test_a_real_graph_exports_pruned_and_valid(gm, tmp_path):
    graph = induction_graph(32)
    pruned = graph.prune(0.8, 0.98)
    data, listing = _write(graph, tmp_path)
    gm.Model.model_validate(data)
    assert listing["graphs"][0]["node_threshold"] == 0.8
    assert data["metadata"]["prompt_tokens"] == graph.meta["prompt_tokens"]
    ids = {n["node_id"] for n in data["nodes"]}
    assert ids <= set(pruned.nodes["node_id"])
    assert set(pruned.targets["node_id"]) <= ids
    want = {(s, t): w for s, t, w in pruned.edges.itertuples(index=False) if s in ids and t in ids}
    assert {(e["source"], e["target"]): e["weight"] for e in data["links"]} == want
    frame = pruned.nodes.set_index("node_id")
    for n in data["nodes"]:
        row = frame.loc[n["node_id"]]
        if row.kind == "neuron":
            ref = gm.Node.feature_node(int(row.layer), int(row.pos), int(row["index"]), activation=float(row.activation))
            assert {k: n[k] for k in ("node_id", "feature", "layer", "ctx_idx", "feature_type", "jsNodeId")} == \
                {k: getattr(ref, k) for k in ("node_id", "feature", "layer", "ctx_idx", "feature_type", "jsNodeId")}
        if row.kind == "logit":
            assert n["clerp"].startswith('Output "') and f"(p={row.token_prob:.3f})" in n["clerp"]
    keys = [(n["layer"], n["feature"], n["ctx_idx"]) for n in data["nodes"]]
    assert len(keys) == len(set(keys))
    scores = [n["influence"] for n in data["nodes"] if n["influence"] is not None]
    assert scores and all(0 < s <= 1 for s in scores)
    # the viewer's slider at node_threshold hides influence > 0.8 (embeddings and logits are always shown):
    # of the prunable nodes, all but the one crossing 0.8 stay shown
    prunable = [n["influence"] for n in data["nodes"] if n["influence"] is not None
                and n["feature_type"] not in ("embedding", "logit")]
    assert sum(s > 0.8 for s in prunable) <= 1
