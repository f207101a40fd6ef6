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


def _loadings(pr: PromptRun, C: torch.Tensor, qs: list, firsts: list, enc: torch.Tensor, p: int, last: int,
              chunk: int = 16) -> list:
    """Per-head loadings of E edges into one row: writes C [E, d] at positions qs, first blocks `firsts`.

    Returns one list per edge of (layer, head, loading, query_pos, key_pos) rows (head -1 = the skip term),
    blocks `firsts[e]..last`. The row's encoder is carried back once for all edges; the writes go forward in
    chunks of `chunk` edges.
    """
    f, n, d = pr.folded, pr.n, C.shape[-1]
    half = 0.5 if pr.qk else 1.0  # softmax-free attention: the value path carries half of each head term
    start = min(firsts, default=last + 1)
    G, back = enc.new_zeros(n, d), {}
    G[p] = enc
    for l in range(last, start - 1, -1):  # the encoder at each block's output, and through W_O
        back[l] = (G, torch.einsum("pd,hed->hpe", G, f.layers[l].W_O))
        G = carry_back(pr, G, l, l - 1)
    out = [[] for _ in qs]
    for lo in range(0, len(qs), chunk):
        idx = list(range(lo, min(lo + chunk, len(qs))))
        X = C.new_zeros(len(idx), n, d)
        for l in range(start, last + 1):
            L = f.layers[l]
            for j, e in enumerate(idx):
                if firsts[e] == l:
                    X[j, qs[e]] += C[e]
            xv = torch.einsum("bnd,hde->bhne", X / pr.s1[l], L.W_V)             # [E, H, n, dh]
            Y = half * torch.einsum("bhne,hed->bhnd", pr.patterns[l] @ xv, L.W_O)  # [E, H, n, d]
            Gl, GO = back[l]
            per_head = torch.einsum("nd,bhnd->bh", Gl, Y)
            skip = torch.einsum("nd,bnd->b", Gl, X)
            # which pattern entry A[p', q'] of each head carries its loading: M[e, h, p', q'] sums to it
            M = half * pr.patterns[l] * (GO @ xv.transpose(-1, -2))
            at = M.abs().flatten(2).argmax(-1)
            for j, e in enumerate(idx):
                if firsts[e] <= l:
                    out[e] += [(l, h, float(per_head[j, h]), int(at[j, h]) // n, int(at[j, h]) % n)
                               for h in range(Y.shape[1])]
                    out[e].append((l, -1, float(skip[j]), -1, -1))  # the part that skips block l's attention
            X = X + Y.sum(1)
    return out


def score_pairs(model, tokens, key: tuple, qk: int) -> str:
    """`"score l.h [p→q]: <top qk query×key source pairs with their exact contributions>"` (level-1 QK expansion)."""
    from hooked_bilinear.circuits import Target, decompose

    top = decompose(model, tokens, target=Target.score(*key), level=1).top(qk)
    pairs = "; ".join(f"{lab} {c:+.3g}" for lab, c in zip(top["label"], top["contribution"]))
    return f"score {key[0]}.{key[1]} [{key[2]}→{key[3]}]: {pairs}"


def _why(graph, frame, qk: int):
    """For each edge's largest head loading: the top query×key source pairs of that head's score at the
    pattern entry (query_pos, key_pos) that carries most of the loading (`decompose(target=Target.score(...))`,
    exact, norm scales frozen)."""
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
            cache[key] = score_pairs(model, tokens, key, qk)
        rows.append((r.source, r.target, int(r.layer), int(r.head), cache[key]))
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
    if len(e):
        t = e["target"].iloc[0]  # one target: a node's incoming edges, or the one edge asked
        trow = table.loc[t].copy()
        trow["node_id"] = t
        enc, last = _encoder(graph, pr, trow)
        writes, qs, firsts = [], [], []
        for s in e["source"]:
            srow = table.loc[s].copy()
            srow["node_id"] = s
            c, first = _write(graph, pr, srow)
            writes.append(c), qs.append(int(srow["pos"])), firsts.append(first)
        rows = _loadings(pr, torch.stack(writes), qs, firsts, enc, int(trow["pos"]), last)
        for (s, w), mine in zip(e[["source", "weight"]].itertuples(index=False), rows):
            out += [(s, t, w, l, h, v, qp, kp) for l, h, v, qp, kp in mine]
    df = pd.DataFrame(out, columns=["source", "target", "weight", "layer", "head", "loading", "query_pos", "key_pos"])
    df["share"] = df["loading"] / df["weight"].where(df["weight"] != 0)
    return _why(graph, df, qk) if qk and len(df) else df
