"""Head loadings: an edge between positions split exactly over the heads it flows through (spec graphs §2).

With patterns frozen, a source's write c at position q reaches a row only through attention: each block
adds Σ_h head_h(X) to what it reads. For any one block l between source and row, the edge splits as

    e(s→r) = Σ_h G_l · head_{l,h}(X_l)  +  G_l · X_l          (X_l: the write carried to block l's input,
                                                             G_l: the row's encoder carried back to block l's output)

so `loading[l, h]` is the part of the edge through head (l, h) (every path through that head), and each
block's loadings plus its skip term sum to the edge. Sources that are sums (remainders) and pattern
nodes (their edge already goes through one head) have no loadings.
"""

from __future__ import annotations

import torch

from hooked_bilinear.errors import InputError
from hooked_bilinear.graphs.rows import PromptRun, carry_back, feature_encoders, neuron_encoders


def _write(graph, pr: PromptRun, src) -> tuple[torch.Tensor, int]:
    """(write [d] at the source's position, first block whose attention reads it)."""
    f, kind, l, q = pr.folded, src["kind"], int(src["layer"]), int(src["pos"])
    if kind == "embedding":
        return f.W_E[pr.tokens[q]], 0
    if kind == "position":
        return f.W_pos[q], 0
    if kind == "constant":
        L = f.layers[l]
        c = L.b_O + (L.b_out if L.has_mlp else 0)
        if pr.qk:  # softmax-free attention: the value path's half of the value-bias write at q
            c = c + 0.5 * torch.einsum("h,he,hed->d", pr.patterns[l][:, q].sum(-1), pr.qk[l].b_V, L.W_O)
        return c, l + 1
    if kind == "neuron":
        return pr.h[l][q, int(src["index"])] * f.layers[l].W_out[int(src["index"])], l + 1
    if kind == "feature":
        F, i = pr.features[l], int(src["index"])
        return F.act[q, i] * F.dec[i], l + 1
    if kind == "error":
        return pr.features[l].err[q], l + 1
    raise InputError(f"node {src['node_id']!r} is a {kind} node: it has no single write to split over heads")


def _encoder(graph, pr: PromptRun, row) -> tuple[torch.Tensor, int]:
    """(encoder [d] at the row's position, last block whose attention it reads)."""
    nL = pr.n_layers
    if row["kind"] in ("neuron", "feature"):
        l, p, k = int(row["layer"]), int(row["pos"]), int(row["index"])
        fn = feature_encoders if row["kind"] == "feature" else neuron_encoders
        enc, _ = fn(pr, l, torch.tensor([p]), torch.tensor([k]))
        return enc[0], l
    if row["kind"] != "logit":
        raise InputError(f"node {row['node_id']!r} is not a row (a neuron or logit node)")
    from hooked_bilinear.graphs.targets import node_weight

    w = node_weight(graph, row, pr.logits.shape[-1], pr.logits.dtype, pr.logits.device)
    return (pr.folded.W_U @ w) / pr.sf[int(row["pos"])], nL - 1


def _loadings(pr: PromptRun, c: torch.Tensor, q: int, first: int, enc: torch.Tensor, p: int, last: int):
    f, n = pr.folded, pr.n
    half = 0.5 if pr.qk else 1.0  # softmax-free attention: the value path carries half of each head term
    X = c.new_zeros(n, c.shape[0])
    X[q] = c
    outs = {}
    for l in range(first, last + 1):
        L = f.layers[l]
        v = torch.einsum("nd,hde->hne", X / pr.s1[l], L.W_V)
        Y = half * torch.einsum("hne,hed->hnd", pr.patterns[l] @ v, L.W_O)  # [H, n, d]
        outs[l] = (X, Y)
        X = X + Y.sum(0)
    G = enc.new_zeros(n, enc.shape[0])
    G[p] = enc
    rows = []
    for l in range(last, first - 1, -1):
        Xl, Y = outs[l]
        L = f.layers[l]
        per_head = torch.einsum("nd,hnd->h", G, Y)
        # which pattern entry A[p', q'] of each head carries its loading: M[h, p', q'] sums to loading[h]
        M = half * pr.patterns[l] * (torch.einsum("pd,hed->hpe", G, L.W_O) @ torch.einsum("qd,hde->hqe", Xl / pr.s1[l], L.W_V).transpose(1, 2))
        at = M.abs().flatten(1).argmax(1)
        rows += [(l, h, float(per_head[h]), int(at[h]) // n, int(at[h]) % n) for h in range(Y.shape[0])]
        rows.append((l, -1, float((G * Xl).sum()), -1, -1))  # the part that skips block l's attention
        G = carry_back(pr, G, l, l - 1)
    return rows


def _why(graph, frame, qk: int):
    """For each edge's largest head loading: the top query×key source pairs of that head's score at the
    pattern entry (query_pos, key_pos) that carries most of the loading (`decompose(target=Target.score(...))`,
    exact, norm scales frozen)."""
    from hooked_bilinear.circuits import Target, decompose

    model = graph._model
    if model is None or getattr(model.cfg, "attention", "softmax") != "softmax":
        raise InputError("QK pairs need the graph's softmax model attached (graph._model)")
    tokens = torch.tensor([graph.meta["tokens"]], device=model.cfg.device)
    heads = frame[frame["head"] >= 0]
    best = heads.loc[heads.groupby(["source", "target"])["loading"].apply(lambda x: x.abs().idxmax())]
    cache: dict = {}
    rows = []
    for r in best.itertuples(index=False):
        p, q = int(r.query_pos), int(r.key_pos)
        key = (int(r.layer), int(r.head), p, q)
        if key not in cache:
            d = decompose(model, tokens, target=Target.score(*key), level=1)
            top = d.top(qk)
            cache[key] = "; ".join(f"{lab} {c:+.3g}" for lab, c in zip(top["label"], top["contribution"]))
        rows.append((r.source, r.target, int(r.layer), int(r.head), f"score {key[0]}.{key[1]} [{p}→{q}]: {cache[key]}"))
    import pandas as pd

    why = pd.DataFrame(rows, columns=["source", "target", "layer", "head", "why"])
    return frame.merge(why, on=["source", "target", "layer", "head"], how="left")


@torch.no_grad()
def head_loadings(graph, edge_or_node, target=None, qk: int = 0):
    """Per-head split of edges: one (source, target) edge, or every incoming edge of a node from other positions.

    Returns a DataFrame: source, target, weight (the edge), layer, head (-1 = skips that block's
    attention), loading, query_pos / key_pos (the pattern entry A[query_pos, key_pos] of that head that
    carries most of the loading), share (loading / weight); per (edge, layer) the loadings sum to the edge.
    With `qk=k`, the head carrying most of each edge gets a `why` column: the top k query×key source
    pairs of its pre-softmax score at that entry (why it attends there).
    """
    import pandas as pd

    pr = graph._prompt_run()
    table = graph.nodes.set_index("node_id")
    if target is not None or isinstance(edge_or_node, tuple):
        src, tgt = (edge_or_node, target) if target is not None else edge_or_node
        e = graph.edges[(graph.edges["source"] == src) & (graph.edges["target"] == tgt)]
        if e.empty:
            raise InputError(f"no edge {src!r} -> {tgt!r} in this graph")
    else:
        graph._node(edge_or_node)
        e = graph.edges[graph.edges["target"] == edge_or_node]
        kinds = e["source"].map(table["kind"])
        e = e[(e["source"].map(table["pos"]) != table.loc[edge_or_node, "pos"]) & ~kinds.isin(["remainder", "pattern"])]
    out = []
    for s, t, w in e[["source", "target", "weight"]].itertuples(index=False):
        srow, trow = table.loc[s].copy(), table.loc[t].copy()
        srow["node_id"], trow["node_id"] = s, t
        c, first = _write(graph, pr, srow)
        enc, last = _encoder(graph, pr, trow)
        for l, h, v, qp, kp in _loadings(pr, c, int(srow["pos"]), first, enc, int(trow["pos"]), last):
            out.append((s, t, w, l, h, v, qp, kp))
    df = pd.DataFrame(out, columns=["source", "target", "weight", "layer", "head", "loading", "query_pos", "key_pos"])
    df["share"] = df["loading"] / df["weight"].where(df["weight"] != 0)
    return _why(graph, df, qk) if qk and len(df) else df
