"""`hooked-bilinear graph MODEL INPUT`: prints the check and top nodes, writes the viewers' files."""

from __future__ import annotations

import importlib
import importlib.util
import json

import pytest
import torch

import hooked_bilinear.graphs as graphs
from hooked_bilinear import HookedBilinearConfig, HookedBilinearTransformer, bundled_models
from hooked_bilinear.circuits import Target
from hooked_bilinear.cli import main
from hooked_bilinear.graphs.command import default_slug, parse_targets
from tests.graphs._fixtures import hand_graph


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    cfg = HookedBilinearConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=12, n_ctx=8,
                               seed=0, model_name="cli-graph")
    path = tmp_path_factory.mktemp("model")
    HookedBilinearTransformer(cfg).save_pretrained(path)
    return path


def test_command_writes_files_with_a_stand_in_builder(model_dir, tmp_path, capsys, monkeypatch):
    calls = []

    def fake_attribute(model, tokens, targets=None, **kwargs):
        calls.append((tokens.tolist(), targets, kwargs))
        return hand_graph()

    monkeypatch.setattr(graphs, "attribute", fake_attribute, raising=False)
    out = tmp_path / "out"
    argv = ["graph", str(model_dir), "1 2 3", "--target", "5", "--target", "5-3", "--max-nodes", "7", "--out",
            str(out), "--slug", "s", "--html", "--top", "4"]
    assert main(argv) == 0
    (tokens, targets, kwargs), = calls
    assert tokens == [[1, 2, 3]] and kwargs == {"max_nodes": 7}
    assert targets == [5, Target.logit_diff(5, 3)]
    text = capsys.readouterr().out
    assert "worst row error" in text and "top 4 nodes by influence" in text
    best = hand_graph().nodes.query("kind != 'logit'").nlargest(4, "influence")["label"]
    assert all(label in text for label in best)
    assert json.loads((out / "s.json").read_text())["metadata"]["slug"] == "s"
    assert [g["slug"] for g in json.loads((out / "graph-metadata.json").read_text())["graphs"]] == ["s"]
    assert "Plotly.newPlot" in (out / "s.html").read_text()


@pytest.mark.skipif(importlib.util.find_spec("circuit_tracer") is None,
                    reason="--serve needs circuit-tracer: pip install --no-deps circuit-tracer==0.5.0")
def test_command_serves_until_interrupted(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(graphs, "attribute", lambda *a, **k: hand_graph(), raising=False)
    served = []
    serve_module = importlib.import_module("hooked_bilinear.graphs.serve")

    def wait(self):  # instead of blocking until Ctrl-C: fetch the page once, then stop
        import urllib.request

        with urllib.request.urlopen(f"{self.url}data/graph-metadata.json", timeout=10) as r:
            served.append(json.loads(r.read()))
        self.stop()

    monkeypatch.setattr(serve_module.GraphServer, "wait", wait)
    assert main(["graph", str(model_dir), "1 2 3", "--out", str(tmp_path), "--slug", "live", "--serve",
                 "--port", "0"]) == 0
    assert [g["slug"] for g in served[0]["graphs"]] == ["live"]
    assert "index.html?slug=live" in capsys.readouterr().out


def test_targets_and_slugs(model_dir):
    model = HookedBilinearTransformer.from_pretrained(str(model_dir))
    assert parse_targets(model, None) is None
    assert parse_targets(model, ["7", " 3-1"]) == [7, Target.logit_diff(3, 1)]
    from hooked_bilinear.errors import InputError

    with pytest.raises(InputError, match="'cat'.*no tokenizer"):
        parse_targets(model, ["cat"])
    slug = default_slug("tdooms/fw medium", torch.tensor([[1, 2]]))
    assert slug.startswith("tdooms-fw-medium-") and slug == default_slug("tdooms/fw medium", torch.tensor([[1, 2]]))
    assert slug != default_slug("tdooms/fw medium", torch.tensor([[1, 3]]))


@pytest.mark.skipif("induction-2l" not in bundled_models(), reason="induction-2l not bundled")
def test_command_on_a_bundled_model(tmp_path, capsys):
    if not hasattr(graphs, "attribute"):
        pytest.skip("the graph builder (hooked_bilinear.graphs.attribute) is not on this branch yet")
    out = tmp_path / "g"
    assert main(["graph", "induction-2l", "0 5 9 17 23 5 9 17", "--max-nodes", "32", "--out", str(out), "--html",
                 "--slug", "ind"]) == 0
    text = capsys.readouterr().out
    assert "top 15 nodes" in text
    data = json.loads((out / "ind.json").read_text())
    assert any(n["feature_type"] == "logit" for n in data["nodes"])
    assert (out / "ind.html").stat().st_size > 1_000_000  # plotly.js inlined


def test_command_why_puts_the_head_and_its_qk_pairs_in_the_node_details(model_dir, tmp_path):
    out = tmp_path / "why"
    assert main(["graph", str(model_dir), "1 2 3 1 2", "--target", "3", "--out", str(out), "--slug", "w",
                 "--why", "2"]) == 0
    nodes = json.loads((out / "w.json").read_text())["nodes"]
    logit = next(n for n in nodes if n["is_target_logit"])
    assert "| via head 0." in logit["clerp"] and "score 0." in logit["clerp"]
