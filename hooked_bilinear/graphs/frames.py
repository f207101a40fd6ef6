"""Frames of a finished `GraphBuilder`: string ids, kinds, labels and real values for every node and edge."""

from __future__ import annotations

import numpy as np

from hooked_bilinear.graphs.ids import KIND_NAMES, logit_id, remainder_id, string_ids


def build_graph(self, model, tok_str, max_nodes: int):  # self: the GraphBuilder
    """The builder's rows, edges and remainders as an AttributionGraph (string ids, labels, real values)."""
    import pandas as pd

    from hooked_bilinear.graphs.graph import AttributionGraph
    from hooked_bilinear.graphs.prune import node_influence

    pr, num = self.pr, self.num
    nL, tokens = pr.n_layers, pr.tokens.cpu().numpy()
    row_ids = np.concatenate(self.row_ids)
    src = np.concatenate(self.e_src)
    leaf_ids = np.setdiff1d(np.unique(src), row_ids[row_ids < num.logit0])
    base_ids = np.concatenate([row_ids[row_ids < num.logit0], leaf_ids])
    dec = num.decode(base_ids)
    kinds = KIND_NAMES[dec["kind"]]
    sid, labels = string_ids(dec, tokens, nL, tok_str)
    act = np.full(len(base_ids), np.nan)
    for j in np.flatnonzero(np.isin(dec["kind"], (3, 4, 6))):
        l, p, k = int(dec["layer"][j]), int(dec["pos"][j]), int(dec["index"][j])
        if dec["kind"][j] == 6:
            act[j] = float(pr.patterns[l][int(dec["head"][j]), p, int(dec["key"][j])])
        else:
            act[j] = float(pr.features[l].act_real[p, k] if dec["kind"][j] == 4 else pr.h_real[l][p, k])
    n_neuron_rows = int((row_ids < num.logit0).sum())  # neuron (or feature) rows come first in base_ids
    is_row = np.zeros(len(base_ids), dtype=bool)
    is_row[:n_neuron_rows] = True
    mass = np.full(len(base_ids), np.nan)
    row_act = np.concatenate(self.row_act)
    row_mass = np.concatenate(self.row_mass)
    ordinal = {int(i): j for j, i in enumerate(row_ids)}
    for j in range(n_neuron_rows):
        r = ordinal[int(base_ids[j])]
        mass[j], act[j] = row_mass[r], row_act[r]
    nodes = pd.DataFrame({"node_id": sid, "kind": kinds, "layer": dec["layer"], "pos": dec["pos"],
                          "index": dec["index"], "activation": act, "label": labels, "is_row": is_row,
                          "abs_mass": mass, "token_prob": 0.0, "is_target": False,
                          "head": dec["head"], "key_pos": dec["key"]})
    # logit nodes
    T = self.targets
    lg = pd.DataFrame({"node_id": [logit_id(nL, g.key, g.pos) for g in T], "kind": "logit", "layer": nL,
                       "pos": [g.pos for g in T], "index": [g.index for g in T],
                       "activation": [row_act[ordinal[int(num.logit0 + i)]] for i in range(len(T))],
                       "label": [g.label for g in T], "is_row": True,
                       "abs_mass": [row_mass[ordinal[int(num.logit0 + i)]] for i in range(len(T))],
                       "token_prob": [0.0 if np.isnan(g.prob) else g.prob for g in T], "is_target": True})
    # remainders
    row_sid = {}
    for i, j in zip(base_ids[:n_neuron_rows].tolist(), range(n_neuron_rows)):
        row_sid[ordinal[i]] = sid[j]
    for i in range(len(T)):
        row_sid[ordinal[int(num.logit0 + i)]] = lg["node_id"].iloc[i]
    rr, rl, rv = (np.concatenate(x) for x in (self.rem_row, self.rem_layer, self.rem_val))
    rem_ids = [remainder_id(row_sid[int(r)], int(l)) for r, l in zip(rr, rl)]
    row_pos = {ordinal[i]: p for i, p in zip(base_ids[:n_neuron_rows].tolist(), dec["pos"][:n_neuron_rows])}
    row_pos.update({ordinal[int(num.logit0 + i)]: g.pos for i, g in enumerate(T)})
    rem = pd.DataFrame({"node_id": rem_ids, "kind": "remainder", "layer": rl.astype(np.int64),
                        "pos": [int(row_pos[int(r)]) for r in rr], "index": -1, "activation": rv,
                        "label": [f"rest of {'embeddings' if l < 0 else ('b_U' if l == nL else f'L{l}')} into {row_sid[int(r)]}"
                                  for r, l in zip(rr, rl)],
                        "is_row": False, "abs_mass": np.nan, "token_prob": 0.0, "is_target": False})
    nodes = pd.concat([nodes, lg, rem], ignore_index=True)
    nodes[["head", "key_pos"]] = nodes[["head", "key_pos"]].fillna(-1)
    nodes = nodes.astype({"layer": "int64", "pos": "int64", "index": "int64", "head": "int64", "key_pos": "int64"})
    # edges
    id_of = dict(zip(base_ids.tolist(), sid))
    id_of.update({int(num.logit0 + i): lg["node_id"].iloc[i] for i in range(len(T))})
    erow = np.concatenate(self.e_row)
    edges = pd.DataFrame({
        "source": [id_of[int(s)] for s in src] + rem_ids,
        "target": [row_sid[int(r)] for r in erow] + [row_sid[int(r)] for r in rr],
        "weight": np.concatenate([np.concatenate(self.e_w), rv]),
    })
    cfg = model.cfg
    meta = {
        "prompt": model.to_string(pr.tokens) if getattr(model, "tokenizer", None) is not None else " ".join(map(str, tokens.tolist())),
        "prompt_tokens": [tok_str(t).strip("'\"") if getattr(model, "tokenizer", None) is not None else str(int(t)) for t in tokens],
        "tokens": tokens.tolist(),
        "model_name": str(getattr(cfg, "model_name", "") or "hooked-bilinear"),
        "n_layers": nL, "d_mlp": pr.d_mlp, "d_vocab": cfg.d_vocab,
        "frozen": _frozen(model, bool(pr.qk)),
        "node_threshold": None, "edge_threshold": None, "pruned": False,
        "max_nodes": max_nodes, "edges_per_node": self.k, "default_targets": self.default_targets, "sweeps": self.n_sweeps,
        "dtype": str(pr.logits.dtype).replace("torch.", ""),
        "basis": {str(l): {"hook_name": f"blocks.{l}.hook_mlp_out", "d_sae": F.d_sae} for l, F in pr.features.items()},
    }
    g = AttributionGraph(nodes, edges, meta)
    g.nodes["influence"] = node_influence(g)
    g._model, g._run, g._targets = model, pr, self.targets
    return g


def _frozen(model, pattern_nodes: bool) -> str:
    """What the graph freezes, said on every graph."""
    if not pattern_nodes:
        return "attention patterns and norm scales of this forward pass (everything else is exact)"
    if model.cfg.normalization_type in ("LN", "LNPre", "RMS", "RMSPre"):
        return "norm scales (σ) of this forward pass only; the bilinear attention patterns are nodes"
    return "nothing: softmax-free attention patterns are nodes and the norms are linear"
