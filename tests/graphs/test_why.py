"""`why_notes` and the viewers' `why=`: the head named for a node's cross-position input is the one whose
knock-out (its frozen pattern zeroed, autograd through the real model) removes most of it, and the QK pairs
listed are that head's score decomposition at the named entry."""

import json
import re

import pytest
import torch

from hooked_bilinear.circuits import Target, decompose
from hooked_bilinear.errors import InputError
from hooked_bilinear.graphs import attribute
from hooked_bilinear.graphs.why import why_notes

from tests.circuits._models import make_model, tokens
from ._reference import frozen_edges


def _graph(**kw):
    # attention-only, rotary, no biases: the only sources at other positions are token embeddings, so the
    # knock-out of a head over the token edges is the whole of that head's cross-position share
    model = make_model(2, "RMS", "rotary", biases=False, attn_only=True, **kw)
    toks = tokens(1, 6, seed=4)[0]
    return model, toks, attribute(model, toks, targets=[2], max_nodes=10, edges_per_node=10_000)


def test_the_named_head_is_the_largest_knock_out_and_the_pairs_are_its_score():
    model, toks, g = _graph()
    logit = g.targets["node_id"].iloc[0]
    note = why_notes(g, qk=2)[logit]
    full, _, _ = frozen_edges(model, toks, ("logit", 5, 2))
    drop = {}
    for l in range(2):
        for h in range(model.cfg.n_heads):
            e, _, _ = frozen_edges(model, toks, ("logit", 5, 2), zero_head=(l, h))
            drop[(l, h)] = float((full[:5] - e[:5]).sum())  # sources at positions 0-4 (the logit is at 5)
    l, h = max(drop, key=lambda k: abs(drop[k]))
    m = re.match(r"via head (\d+)\.(\d+) \(A\[(\d+)→(\d+)\]", note)
    assert m and (int(m[1]), int(m[2])) == (l, h), (note, drop)
    p, q = int(m[3]), int(m[4])
    want = decompose(model, toks, target=Target.score(l, h, p, q), level=1).top(2)
    assert f"score {l}.{h} [{p}→{q}]" in note and all(lab in note for lab in want["label"])


def test_viewers_carry_the_notes(tmp_path):
    _, _, g = _graph()
    logit = g.targets["node_id"].iloc[0]
    note = why_notes(g, qk=1)[logit]
    page = (g.to_html(tmp_path / "g.html", prune=False, why=1)).read_text()
    assert "attention: " + note.split(";")[0].replace("→", "→") in page.replace("&gt;", ">")
    path = g.to_circuit_tracer(tmp_path / "ct", "why", prune=False, why=1)
    clerps = {n["node_id"]: n["clerp"] for n in json.loads(path.read_text())["nodes"]}
    assert clerps[logit].endswith(" | " + note)
    plain = json.loads(g.to_circuit_tracer(tmp_path / "ct2", "plain", prune=False).read_text())
    assert all("via head" not in n["clerp"] for n in plain["nodes"])


def test_bilinear_attention_notes_name_heads_without_softmax_scores():
    model = make_model(1, "Scale", "rotary", biases=False, attn_only=True, attention="bilinear")
    toks = tokens(1, 5, seed=1)[0]
    g = attribute(model, toks, targets=[1], max_nodes=10, edges_per_node=10_000)
    notes = why_notes(g, qk=3)
    assert notes and all(n.startswith("via head 0.") and "score" not in n for n in notes.values())


@pytest.mark.parametrize("qk", [-1, 1.5, True])
def test_bad_qk(qk):
    _, _, g = _graph()
    with pytest.raises(InputError, match="qk="):
        why_notes(g, qk=qk)
