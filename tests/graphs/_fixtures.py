"""Small hand-made attribution graphs in the `AttributionGraph` format (nodes, edges, meta).

They are built edge-first: every row node's activation is set to the sum of its incoming edges, so
the graph's invariant holds by construction, independently of any code under test. `HandGraph` is
a stand-in with the same three attributes as `hooked_bilinear.graphs.graph.AttributionGraph`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

TOKENS = [" the", " cat", " sat", " on"]


@dataclass
class HandGraph:
    nodes: pd.DataFrame
    edges: pd.DataFrame
    meta: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"HandGraph({len(self.nodes)} nodes, {len(self.edges)} edges)"

    def check(self) -> str:
        """The worst |Σ incoming - activation| over the rows, as a line of text."""
        sums = self.edges.groupby("target")["weight"].sum()
        rows = self.nodes[self.nodes["is_row"]].set_index("node_id")["activation"]
        return f"worst row error {float((sums.reindex(rows.index) - rows).abs().max()):.3e}"


@dataclass
class PrunableGraph(HandGraph):
    """A HandGraph with a `prune` that keeps the nodes of influence ≥ a fixed cut (a test double)."""

    calls: list = field(default_factory=list)

    def prune(self, node_threshold=0.8, edge_threshold=0.98):
        self.calls.append((node_threshold, edge_threshold))
        keep = self.nodes[(self.nodes["influence"] >= 0.5) | self.nodes["kind"].isin(["embedding", "logit"])]
        ids = set(keep["node_id"])
        edges = self.edges[self.edges["source"].isin(ids) & self.edges["target"].isin(ids)]
        return HandGraph(keep.reset_index(drop=True), edges.reset_index(drop=True), {**self.meta, "pruned": True})


def hand_graph(n_layers: int = 2, n_pos: int = 4, per_cell: int = 2, seed: int = 0, d_mlp: int = 64,
               cls=HandGraph) -> HandGraph:
    """A graph with every node kind: embeddings, positions, constants, neurons, remainders, two logits.

    Neurons: `per_cell` per (layer, position), all rows; each row gets one remainder per source layer
    below it. Logits of token ids 11 and 4 at the last position. ~ n_layers·n_pos·per_cell·(n_layers+1)
    nodes in all.
    """
    rng = np.random.default_rng(seed)
    tok_ids = [(7 * p + 3) % 50 for p in range(n_pos)]
    tok_str = [TOKENS[p % len(TOKENS)] for p in range(n_pos)]
    nodes, edges = [], []

    def add(node_id, kind, layer, pos, index, label, is_row=False, activation=math.nan, token_prob=0.0,
            is_target=False):
        nodes.append(dict(node_id=node_id, kind=kind, layer=layer, pos=pos, index=index, activation=activation,
                          label=label, influence=float(rng.uniform(0.01, 1.0)), is_row=is_row,
                          token_prob=token_prob, is_target=is_target))
        return node_id

    leaves = []  # (node id, layer it sits at, position)
    for p in range(n_pos):
        leaves.append((add(f"E_{tok_ids[p]}_{p}", "embedding", -1, p, tok_ids[p], f"tok {tok_str[p]!r} @{p}"), -1, p))
        leaves.append((add(f"P_{p}_{p}", "position", -1, p, -1, f"pos {p}"), -1, p))
        for layer in range(n_layers):
            leaves.append((add(f"C_{layer}_{p}", "constant", layer, p, -1, f"const L{layer} @{p}"), layer - 1, p))
    neurons = []  # (node id, layer, position)
    for layer in range(n_layers):
        for p in range(n_pos):
            for k in rng.choice(d_mlp, size=per_cell, replace=False):
                node_id = f"{layer}_{int(k)}_{p}"
                sources = [s for s, sl, sp in leaves + neurons if sl < layer and sp <= p]
                incoming = [(s, float(rng.normal())) for s in sources]
                for src_layer in range(-1, layer):
                    rest = float(rng.normal(scale=0.1))
                    rid = add(f"R_{node_id}_{src_layer}", "remainder", src_layer, p, -1,
                              f"rest of L{src_layer} into mlp{layer} n{int(k)} @{p}", activation=rest)
                    incoming.append((rid, rest))
                add(node_id, "neuron", layer, p, int(k), f"mlp{layer} n{int(k)} @{p}", is_row=True,
                    activation=sum(w for _, w in incoming))
                edges += [(s, node_id, w) for s, w in incoming]
                neurons.append((node_id, layer, p))
    last = n_pos - 1
    bias = add(f"C_{n_layers}_{last}", "constant", n_layers, last, -1, f"const b_U @{last}")
    for token, prob, text in [(11, 0.7, " mat"), (4, 0.2, ' "quoted"')]:
        node_id = f"{n_layers + 1}_{token}_{last}"
        incoming = [(s, float(rng.normal())) for s, _, sp in leaves + neurons if sp <= last] + [(bias, 0.5)]
        add(node_id, "logit", n_layers, last, token, f"logit {text!r} @{last}", is_row=True,
            activation=sum(w for _, w in incoming), token_prob=prob, is_target=True)
        edges += [(s, node_id, w) for s, w in incoming]
    frame = pd.DataFrame(nodes)
    frame.loc[frame["kind"] == "logit", "influence"] = math.nan  # circuit-tracer gives logits no influence
    meta = dict(prompt="".join(tok_str), prompt_tokens=tok_str, model_name="hand-made", n_layers=n_layers,
                d_mlp=d_mlp, frozen="attention patterns and norm scales", node_threshold=None, pruned=False)
    return cls(frame, pd.DataFrame(edges, columns=["source", "target", "weight"]), meta)


INDUCTION_TOKENS = [0, 5, 9, 17, 23, 41, 5, 9, 17, 23]  # BOS, a block, its repeat: induction predicts 41


@functools.lru_cache(maxsize=None)
def induction_graph(max_nodes: int = 32):
    """A real graph of the bundled induction-2l model (skips when the model or the builder is absent)."""
    import pytest
    import torch

    from hooked_bilinear import HookedBilinearTransformer, bundled_models

    try:
        from hooked_bilinear.graphs import attribute
    except ImportError:
        pytest.skip("the graph builder (hooked_bilinear.graphs.attribute) is not on this branch yet")
    if "induction-2l" not in bundled_models():
        pytest.skip("induction-2l is not bundled")
    model = HookedBilinearTransformer.from_pretrained("induction-2l")
    return attribute(model, torch.tensor([INDUCTION_TOKENS]), max_nodes=max_nodes)
