"""Why a node's cross-position input came through the heads it did: one line per node for the viewers.

For every node with incoming edges from other positions, `why_notes` splits those edges exactly over heads
(`head_loadings`) and names the head carrying the largest share, the pattern entry A[query → key] that carries
it, and, on a softmax model, the top query × key source pairs of that head's pre-softmax score there (the exact
QK expansion, `Target.score`). `to_html(..., why=k)` puts the line on each hover card and
`to_circuit_tracer(..., why=k)` appends it to each node's `clerp`, which circuit-tracer's node details show.
"""

from __future__ import annotations

from hooked_bilinear.errors import InputError
from hooked_bilinear.graphs.heads import score_pairs

ROW_KINDS = ("neuron", "feature", "logit")  # rows whose incoming edges `head_loadings` splits over heads


def why_notes(graph, qk: int = 3) -> dict[str, str]:
    """{node_id: note} for every row node whose cross-position input goes through heads (the head with the
    largest summed loading, at the pattern entry carrying most of it).

    Args:
        graph: an `AttributionGraph` with its model attached (as `attribute` returns it, pruned or not).
        qk: how many query × key source pairs of the top head's score each note lists (softmax models; 0 = none).

    Returns:
        A note per node, e.g. `"via head 1.1 (A[30→11]; loading +2.2 of the +2.31 from other positions); score
        1.1 [30→11]: q:mlp0 × k:head0.1 +2.5; ..."`. Nodes with no cross-position input get no note.
    """
    if isinstance(qk, bool) or not isinstance(qk, int) or qk < 0:
        raise InputError(f"qk={qk!r}: expected a non-negative int (query × key pairs per note)")
    model = graph._model
    softmax = getattr(getattr(model, "cfg", None), "attention", "softmax") == "softmax"
    pos = dict(zip(graph.nodes["node_id"], graph.nodes["pos"]))
    crossing = graph.edges[graph.edges["source"].map(pos) != graph.edges["target"].map(pos)]
    wanted = set(graph.nodes.loc[graph.nodes["kind"].isin(ROW_KINDS), "node_id"]) & set(crossing["target"])
    tokens, scores = None, {}
    notes = {}
    for node in graph.nodes["node_id"]:
        if node not in wanted:
            continue
        df = graph.head_loadings(node)
        heads = df[df["head"] >= 0]
        if heads.empty:
            continue
        per_head = heads.groupby(["layer", "head"])["loading"].sum()
        l, h = (int(v) for v in per_head.abs().idxmax())
        mine = heads[(heads["layer"] == l) & (heads["head"] == h)]
        lead = mine.loc[mine["loading"].abs().idxmax()]
        p, q = int(lead["query_pos"]), int(lead["key_pos"])
        total = float(df.drop_duplicates(["source", "target"])["weight"].sum())
        note = f"via head {l}.{h} (A[{p}→{q}]; loading {per_head[(l, h)]:+.3g} of the {total:+.3g} from other positions)"
        if qk and softmax:
            if tokens is None:
                import torch

                tokens = torch.tensor([graph.meta["tokens"]], device=model.cfg.device)
            if (l, h, p, q) not in scores:
                scores[(l, h, p, q)] = score_pairs(model, tokens, (l, h, p, q), qk)
            note += "; " + scores[(l, h, p, q)]
        notes[node] = note
    return notes


def with_why(graph, qk: int):
    """A shallow copy of `graph` whose nodes carry a `why` column (empty string where there is no note)."""
    import copy

    notes = why_notes(graph, qk)
    out = copy.copy(graph)
    out.nodes = graph.nodes.copy()
    out.nodes["why"] = [notes.get(i, "") for i in out.nodes["node_id"]]
    return out
