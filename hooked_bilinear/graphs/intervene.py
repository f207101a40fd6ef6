"""Interventions on graph nodes: rerun the real model with neurons scaled or set, and compare.

Three numbers per target: `real` (the model rerun with nothing frozen), `frozen` (rerun with the
graph's freeze: attention patterns and norm scales fixed at their cached values, so every path through
the MLPs counts), and `direct` (the graph's own first-order prediction: the target plus the change of
each intervened node times its direct edge over its activation).
"""

from __future__ import annotations

import numpy as np
import torch

from hooked_bilinear.errors import InputError


def _neurons(graph, nodes) -> list[tuple[str, int, int, int]]:
    ids = [nodes] if isinstance(nodes, str) else list(nodes)
    if not ids:
        raise InputError("intervene needs at least one node id")
    table = graph.nodes.set_index("node_id")
    out = []
    for nid in ids:
        if nid not in table.index:
            raise InputError(f"no node {nid!r} in this graph")
        row = table.loc[nid]
        if row["kind"] != "neuron":
            raise InputError(f"node {nid!r} is a {row['kind']} node; only neurons can be intervened on")
        out.append((nid, int(row["layer"]), int(row["pos"]), int(row["index"])))
    return out


def _target_values(graph, logits: torch.Tensor) -> np.ndarray:
    """w · logits[p] for each target node (`targets.node_weight`)."""
    from hooked_bilinear.graphs.targets import node_weight

    return np.array([float(node_weight(graph, t, logits.shape[-1], torch.float64, logits.device) @ logits[int(t["pos"])].double())
                     for _, t in graph.targets.iterrows()])


@torch.no_grad()
def intervene(graph, nodes, scale=None, value=None, model=None):
    """Scale (`scale`) or set (`value`) neurons and rerun; returns a DataFrame per target node."""
    import pandas as pd

    model = model if model is not None else graph._model
    if model is None:
        raise InputError("this graph has no model attached (a loaded graph): pass model=...")
    if (scale is None) == (value is None):
        raise InputError("pass exactly one of scale= or value=")
    picked = _neurons(graph, nodes)
    tokens = torch.tensor([graph.meta["tokens"]], device=model.cfg.device)
    act = graph.nodes.set_index("node_id")["activation"]
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for _, l, p, k in picked:
        by_layer.setdefault(l, []).append((p, k))

    def edit(h, hook):
        l = int(hook.name.split(".")[1])
        h = h.clone()
        for p, k in by_layer[l]:
            h[:, p, k] = h[:, p, k] * scale if scale is not None else value
        return h

    edits = [(f"blocks.{l}.mlp.hook_post", edit) for l in by_layer]
    was = model.training
    model.eval()
    try:
        before, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern") or n.endswith("hook_scale"))
        real = model.run_with_hooks(tokens, fwd_hooks=edits)
        frozen_hooks = [(name, (lambda v: lambda x, hook: v)(cache[name])) for name in cache.keys()]
        frozen = model.run_with_hooks(tokens, fwd_hooks=frozen_hooks + edits)
    finally:
        model.train(was)
    t = graph.targets
    base = _target_values(graph, before[0])
    direct = base.copy()
    for nid, _, _, _ in picked:
        a = float(act[nid])
        new = a * scale if scale is not None else value
        e = graph.edges[(graph.edges["source"] == nid)]
        w = t["node_id"].map(dict(zip(e["target"], e["weight"]))).fillna(0.0).to_numpy()
        if a != 0:
            direct += (new - a) / a * w
    return pd.DataFrame({"node_id": t["node_id"].to_numpy(), "label": t["label"].to_numpy(), "before": base,
                         "real": _target_values(graph, real[0]), "frozen": _target_values(graph, frozen[0]),
                         "direct": direct})
