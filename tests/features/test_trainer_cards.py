"""Training a dictionary on streamed activations, the card metrics, and circuit-tracer feature cards."""

import json

import pytest
import torch

from hooked_bilinear import InputError
from hooked_bilinear.features.bases import eigen_basis, neuron_basis, sae_basis
from hooked_bilinear.features.buffer import ActivationBuffer
from hooked_bilinear.features.cards import feature_cards, write_feature_files
from hooked_bilinear.features.corpus import corpus_tokens
from hooked_bilinear.features.metrics import evaluate_sae
from hooked_bilinear.features.trainer import train_sae

HOOK = "blocks.1.hook_mlp_out"


def test_buffer_rows_are_aligned_and_bounded(tiny, tokens):
    buf = ActivationBuffer(tiny, tokens, ["blocks.1.ln2.hook_normalized", HOOK], buffer_size=64, windows_per_chunk=2)
    x, y = buf.next(16)
    assert x.shape == y.shape == (16, 16) and buf.rows[0].shape[0] == 64
    mlp = tiny.blocks[1].mlp
    with torch.no_grad():
        torch.testing.assert_close(mlp(x[:, None])[:, 0], y)  # the same positions in both streams


def test_training_reduces_the_loss_and_the_metrics_match_a_recount(tiny, tokens):
    sae, hist = train_sae(tiny, tokens, HOOK, d_sae=32, k=4, steps=60, batch_size=64, lr=3e-3, buffer_size=256,
                          windows_per_chunk=4, progress=False)
    assert sum(hist["loss"][-10:]) < sum(hist["loss"][:10])
    m = evaluate_sae(tiny, sae, tokens[:8], batch_windows=3)
    with torch.no_grad():
        clean, cache = tiny.run_with_cache(tokens[:8], return_type="loss")
        y = cache[HOOK].reshape(-1, 16)
        acts = sae.encode(y)
        ev = 1 - (y - sae(y)).pow(2).sum() / (y - y.mean(0)).pow(2).sum()
        with tiny.hooks(sae.replacement_hooks()):
            spliced = tiny(tokens[:8], return_type="loss")
    assert m["explained_variance"] == pytest.approx(float(ev), abs=1e-4)
    assert m["dead_fraction"] == pytest.approx(float(((acts > 0).sum(0) == 0).float().mean()))
    assert m["loss_increase"] == pytest.approx(float(spliced - clean), abs=1e-4)
    tc, _ = train_sae(tiny, tokens, "blocks.1.ln2.hook_normalized", hook_name_out=HOOK, d_sae=32, k=4, steps=5,
                      batch_size=32, buffer_size=128, progress=False)
    assert tc.cfg.is_transcoder and not tc.cfg.apply_b_dec_to_input


def test_cards_find_the_max_activating_windows(tiny, tokens):
    basis = neuron_basis(tiny, 1)
    cards = feature_cards(tiny, basis, tokens, nodes=[3, 9], n_examples=3, context=2, batch_windows=5, progress=False)
    with torch.no_grad():
        post = tiny.run_with_cache(tokens, names_filter=["blocks.1.mlp.hook_post"])[1]["blocks.1.mlp.hook_post"]
    for card, node in zip(cards, (3, 9)):
        per_window = post[..., node].max(1).values
        best = per_window.topk(3).values[per_window.topk(3).values > 0]
        got = [max(e["tokens_acts_list"]) for e in card["examples_quantiles"][0]["examples"]]
        torch.testing.assert_close(torch.tensor(got), best)
        assert card["act_max"] == pytest.approx(float(post[..., node].max()))
        assert card["activation_frequency"] == pytest.approx(float((post[..., node] != 0).float().mean()))
        ex = card["examples_quantiles"][0]["examples"][0]
        assert ex["tokens_acts_list"][ex["train_token_ind"]] == max(ex["tokens_acts_list"])
        logit_effect = tiny.W_out[1][node] @ tiny.W_U
        assert card["top_logits"][0] == str(int(logit_effect.argmax()))


def test_feature_files_follow_circuit_tracers_schema(tiny, tokens, tmp_path):
    from hooked_bilinear.features import SAE, SAEConfig
    from hooked_bilinear.features.cards import feature_number, viewer_scan

    sae = SAE(SAEConfig(d_in=16, d_sae=20, k=3, hook_name=HOOK), seed=0)
    cards = feature_cards(tiny, sae_basis(tiny, sae), tokens[:6], nodes=[0, 1], progress=False)
    cards += feature_cards(tiny, eigen_basis(tiny, 1, tiny.W_U[:, 4], k=3), tokens[:6], progress=False)
    paths = write_feature_files(cards, tmp_path)
    assert paths[0] == tmp_path / "features" / cards[0]["transcoder_id"] / "0.json"
    by_number = write_feature_files(cards[:2], tmp_path, scan="tiny", layer=1)
    unpair = [(int(((8 * n + 1) ** 0.5 - 1) // 2), n) for n in (feature_number(1, 0), feature_number(1, 1))]
    assert [(w - (n - w * (w + 1) // 2), n - w * (w + 1) // 2) for w, n in unpair] == [(1, 0), (1, 1)]  # the JS unpairing
    assert by_number[1] == tmp_path / "features" / "tiny" / f"{feature_number(1, 1)}.json"
    assert viewer_scan("tiny") == "./graph_data/features/tiny"
    fm = pytest.importorskip("circuit_tracer.frontend.feature_models",
                             reason="circuit-tracer (installed --no-deps by .ci/run) holds the schema")
    for p in paths + by_number:
        fm.Model(**json.loads(p.read_text()))


def test_corpus_forms_and_empty_corpus(tiny, tmp_path):
    class Tok:  # a minimal tokenizer: one id per character
        eos_token_id = 0

        def encode(self, text, add_special_tokens=False):
            return [1 + ord(c) % 40 for c in text]

    tiny.tokenizer = Tok()
    try:
        w = corpus_tokens(["ab", "cde"], tiny)
        assert w.tolist() == [[1 + ord("a") % 40, 1 + ord("b") % 40, 0, 1 + ord("c") % 40, 1 + ord("d") % 40,
                               1 + ord("e") % 40]]
        (tmp_path / "t.txt").write_text("x" * 30)
        assert corpus_tokens(tmp_path / "t.txt", tiny).shape == (2, 12)
        datasets = pytest.importorskip("datasets")
        ds = datasets.Dataset.from_dict({"text": ["ab", "cde"]})
        assert torch.equal(corpus_tokens(ds, tiny), w)
        with pytest.raises(InputError, match="has no column 'body'"):
            corpus_tokens(ds, tiny, text_column="body")
        with pytest.raises(InputError, match="the corpus has no text"):
            corpus_tokens(["", "  \n"], tiny)
        with pytest.raises(InputError, match="the corpus has no text"):
            feature_cards(tiny, neuron_basis(tiny, 0), [], progress=False)
    finally:
        tiny.tokenizer = None


def test_graph_nodes_find_their_cards(tiny, tokens, tmp_path):
    graphs = pytest.importorskip("hooked_bilinear.graphs")
    from hooked_bilinear.features.cards import viewer_scan

    graph = graphs.attribute(tiny, tokens[0, :6], max_nodes=8)
    neurons = graph.nodes[graph.nodes.kind == "neuron"]
    for layer in sorted(neurons.layer.unique()):
        idx = sorted(neurons[neurons.layer == layer]["index"].unique().tolist())
        cards = feature_cards(tiny, neuron_basis(tiny, int(layer)), tokens[:4], nodes=idx, progress=False)
        write_feature_files(cards, tmp_path, scan="n", layer=int(layer))
    path = graphs.to_circuit_tracer(graph, tmp_path, "g", scan=viewer_scan("n"), prune=False)
    exported = json.loads(path.read_text())
    scan = exported["metadata"]["scan"]
    assert scan.startswith("./graph_data/")
    for node in exported["nodes"]:
        if node["feature_type"] == "cross layer transcoder":  # the viewer fetches <scan>/<feature>.json
            card = tmp_path / scan[len("./graph_data/"):] / f"{node['feature']}.json"
            assert card.exists(), node["node_id"]
            layer, index = int(node["layer"]), int(node["node_id"].split("_")[1])
            assert json.loads(card.read_text())["index"] == index and node["layer"] == str(layer)
