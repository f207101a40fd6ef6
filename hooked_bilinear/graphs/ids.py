"""Node numbering and circuit-tracer-style node ids.

Inside the builder every node is an integer (vectorised bookkeeping); the frames carry string ids
that follow circuit-tracer's scheme where it has one (`frontend/graph_models.py`): a neuron is a
feature `f"{layer}_{index}_{pos}"`, a token embedding `f"E_{token}_{pos}"`, a logit
`f"{n_layers + 1}_{token}_{pos}"`. Our extra kinds: `P_{pos}_{pos}` (position embedding),
`C_{layer}_{pos}` (the constants of block `layer` written at `pos`; layer = n_layers is b_U),
`R_{row}_{layer}` (the exact sum of a row's dropped edges from one source layer; layer -1 = embeddings),
`X_{layer}_{pos}` (an SAE basis's reconstruction error at that block and position, written exactly),
`A_{layer}_{head}_{query}_{key}` (a softmax-free attention pattern entry).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Numbering:
    """Integer ids for the leaves and neurons of one prompt: tok | pos | const | neurons | logits."""

    n: int        # positions
    n_layers: int
    d_mlp: int    # slots per (layer, position): max(d_mlp, d_sae + 1); 0 for attention-only models
    features: tuple = ()  # ((layer, d_sae), ...): blocks whose slots hold SAE features, then the error node
    patterns: tuple = ()  # ((layer, offset), ...): slots from `offset` on are pattern nodes (head, key position)

    @property
    def pos0(self) -> int:
        return self.n

    @property
    def const0(self) -> int:
        return 2 * self.n

    @property
    def neuron0(self) -> int:
        return 2 * self.n + (self.n_layers + 1) * self.n

    @property
    def logit0(self) -> int:
        return self.neuron0 + self.n_layers * self.n * self.d_mlp

    def tok(self, p):
        return p

    def pos(self, p):
        return self.pos0 + p

    def const(self, layer, p):
        return self.const0 + layer * self.n + p

    def neuron(self, layer, p, k):
        return self.neuron0 + (layer * self.n + p) * self.d_mlp + k

    def decode(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """Integer ids (below logit0) -> kind code (0 tok, 1 pos, 2 const, 3 neuron, 4 feature, 5 error), layer, pos, index."""
        ids = np.asarray(ids, dtype=np.int64)
        kind = np.select([ids < self.pos0, ids < self.const0, ids < self.neuron0], [0, 1, 2], 3)
        layer = np.full(ids.shape, -1, dtype=np.int64)
        pos = np.zeros(ids.shape, dtype=np.int64)
        index = np.full(ids.shape, -1, dtype=np.int64)
        pos[kind == 0] = ids[kind == 0]
        pos[kind == 1] = ids[kind == 1] - self.pos0
        c = ids[kind == 2] - self.const0
        layer[kind == 2], pos[kind == 2] = c // self.n, c % self.n
        if self.d_mlp:
            r = ids[kind == 3] - self.neuron0
            layer[kind == 3] = r // (self.n * self.d_mlp)
            pos[kind == 3] = (r // self.d_mlp) % self.n
            index[kind == 3] = r % self.d_mlp
            for l, d_sae in self.features:
                at = (kind == 3) & (layer == l)
                kind[at & (index < d_sae)] = 4
                kind[at & (index == d_sae)] = 5
        head = np.full(ids.shape, -1, dtype=np.int64)
        key = np.full(ids.shape, -1, dtype=np.int64)
        for l, offset in self.patterns:
            at = (kind >= 3) & (layer == l) & (index >= offset)
            kind[at] = 6
            head[at], key[at] = (index[at] - offset) // self.n, (index[at] - offset) % self.n
            index[at] = -1
        return {"kind": kind, "layer": layer, "pos": pos, "index": index, "head": head, "key": key}


KIND_NAMES = np.array(["embedding", "position", "constant", "neuron", "feature", "error", "pattern"])


def neuron_id(layer: int, index: int, pos: int) -> str:
    return f"{layer}_{index}_{pos}"


def logit_id(n_layers: int, key: str, pos: int) -> str:
    return f"{n_layers + 1}_{key}_{pos}"


def remainder_id(row_id: str, layer: int) -> str:
    return f"R_{row_id}_{layer}"


def _strings(k: int, l: int, p: int, i: int, h: int, q: int, token: int, n_layers: int, tok_str):
    """(string id, label) of one decoded node; the label is None without `tok_str`."""
    if k == 6:
        return f"A_{l}_{h}_{p}_{q}", f"attn{l}.{h} A[{p}, {q}]"
    if k == 0:
        return f"E_{token}_{p}", None if tok_str is None else f"tok {tok_str(token)} @{p}"
    if k == 1:
        return f"P_{p}_{p}", f"pos @{p}"
    if k == 2:
        return f"C_{l}_{p}", f"b_U @{p}" if l == n_layers else f"bias L{l} @{p}"
    if k == 5:
        return f"X_{l}_{p}", f"sae{l} error @{p}"
    # neurons, and SAE features in their place, take circuit-tracer's feature ids
    return neuron_id(l, i, p), f"sae{l} f{i} @{p}" if k == 4 else f"mlp{l} n{i} @{p}"


def string_ids(dec: dict, tokens: np.ndarray, n_layers: int = -1, tok_str=None) -> tuple[list[str], list]:
    """String ids and labels of decoded leaf/neuron nodes (`dec` from `Numbering.decode`; labels are None
    without `tok_str`, which maps a token id to its text)."""
    n = len(dec["kind"])
    head = dec.get("head", np.full(n, -1))
    key = dec.get("key", np.full(n, -1))
    pairs = [_strings(k, l, p, i, h, q, int(tokens[p]), n_layers, tok_str)
             for k, l, p, i, h, q in zip(dec["kind"].tolist(), dec["layer"].tolist(), dec["pos"].tolist(),
                                         dec["index"].tolist(), head.tolist(), key.tolist())]
    return [a for a, _ in pairs], [b for _, b in pairs]
