"""AttributionGraph: nodes and edges of an exact attribution graph, as pandas frames.

The one invariant: **every row's incoming edges sum to its activation** (its value in the real forward
pass): a neuron row (l, p, k) sums to `blocks.{l}.mlp.hook_post[p, k]`, a logit node to the logit (b_U
enters as the constant node `C_{n_layers}_{p}`). Leaves (embeddings, positions, constants, neurons that
are not rows, remainders) have no incoming edges; a remainder's activation is the exact sum of the
edges it stands for.

`nodes` columns: node_id, kind (embedding, position, constant, neuron, remainder, logit), layer, pos,
index (neuron index or token id, else -1), activation, label, is_row, abs_mass (Σ |edges| of a row
before truncation), token_prob, is_target, influence; after pruning also `pruned_in` (the exact mass
of a kept row's incoming edges that pruning removed). `edges` columns: source, target, weight.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from hooked_bilinear.errors import InputError

FORMAT = "hooked_bilinear.attribution_graph/1"
_FLOAT_COLS = ("activation", "abs_mass", "token_prob", "influence", "pruned_in")
_INT_COLS = ("layer", "pos", "index", "head", "key_pos")
_BOOL_COLS = ("is_row", "is_target")
_STR_COLS = ("node_id", "kind", "label")


class GraphFormatError(InputError):
    """A saved graph that is corrupt or not in our format."""


@dataclass(frozen=True)
class GraphCheck:
    """How exactly the rows add up: worst |Σ incoming − activation|, absolute and over the row's Σ|edges|."""

    max_abs_err: float
    max_rel_err: float
    worst_node: str
    n_rows: int

    def __str__(self) -> str:
        return (f"{self.n_rows} rows: Σ incoming edges vs the real activation, max abs err {self.max_abs_err:.2e}, "
                f"max err relative to the row's Σ|edges| {self.max_rel_err:.2e} (worst node {self.worst_node})")

    def assert_ok(self, rtol: float) -> "GraphCheck":
        if not self.max_rel_err <= rtol:
            raise AssertionError(f"{self} exceeds rtol={rtol:.1e}")
        return self


class AttributionGraph:
    """An exact attribution graph of one prompt (see the module docstring for the frames).

    Example:
        >>> g = attribute(model, tokens)
        >>> g.check()                       # every row adds up
        >>> p = g.prune(0.8, 0.98)          # circuit-tracer's pruning
        >>> g.scores()                      # (replacement, completeness) = (1.0, 1.0)
        >>> g.to_html("graph.html")         # offline viewer; g.to_circuit_tracer(dir, slug) for circuit-tracer's
    """

    def __init__(self, nodes, edges, meta: dict):
        self.nodes, self.edges, self.meta = nodes, edges, dict(meta)
        self._model = None
        self._run = None       # the frozen run it was built from (not saved; rebuilt from the model on demand)
        self._targets = None

    # ------------------------------------------------------------------ views
    def __repr__(self) -> str:
        n_rows = int(self.nodes["is_row"].sum())
        tgts = ", ".join(self.nodes.loc[self.nodes["is_target"], "label"].tolist()[:4])
        pr = f", pruned at ({self.meta['node_threshold']}, {self.meta['edge_threshold']})" if self.meta.get("pruned") else ""
        return (f"AttributionGraph({self.meta.get('prompt', '')!r}: {len(self.nodes)} nodes ({n_rows} rows), "
                f"{len(self.edges)} edges{pr}; targets [{tgts}]; frozen: {self.meta.get('frozen')})")

    @property
    def targets(self):
        """The logit nodes."""
        return self.nodes[self.nodes["is_target"]]

    def incoming(self, node_id: str):
        """Edges into `node_id`, largest |weight| first, with the source's label."""
        self._node(node_id)
        e = self.edges[self.edges["target"] == node_id]
        lab = dict(zip(self.nodes["node_id"], self.nodes["label"]))
        e = e.assign(source_label=e["source"].map(lab))
        return e.reindex(e["weight"].abs().sort_values(ascending=False).index)

    def _node(self, node_id: str):
        hit = self.nodes[self.nodes["node_id"] == node_id]
        if hit.empty:
            raise InputError(f"no node {node_id!r} in this graph")
        return hit.iloc[0]

    # ------------------------------------------------------------------ exactness
    def check(self) -> GraphCheck:
        """Σ incoming edges (and, after pruning, the pruned mass) against every row's real activation."""
        rows = self.nodes[self.nodes["is_row"]]
        s = self.edges.groupby("target")["weight"].sum()
        total = rows["node_id"].map(s).fillna(0.0).to_numpy()
        if "pruned_in" in rows:
            total = total + rows["pruned_in"].fillna(0.0).to_numpy()
        err = np.abs(total - rows["activation"].to_numpy(dtype=np.float64))
        mass = rows["abs_mass"].to_numpy(dtype=np.float64)
        absw = self.edges["weight"].abs().groupby(self.edges["target"]).sum()
        mass = np.where(np.isnan(mass), rows["node_id"].map(absw).fillna(0.0).to_numpy(), mass)
        rel = err / np.maximum(mass, np.finfo(np.float64).tiny)
        if len(rows) == 0:
            return GraphCheck(0.0, 0.0, "", 0)
        i = int(np.argmax(rel))
        return GraphCheck(float(err.max()), float(rel[i]), str(rows["node_id"].iloc[i]), len(rows))

    # ------------------------------------------------------------------ pruning and scores
    def prune(self, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> "AttributionGraph":
        """circuit-tracer's pruning; kept rows record the exact incoming mass removed in `pruned_in`."""
        from hooked_bilinear.graphs.prune import node_influence, prune_masks

        nm, em = prune_masks(self, node_threshold, edge_threshold)
        nodes = self.nodes[nm].copy()
        edges = self.edges[em].reset_index(drop=True)
        kept = edges.groupby("target")["weight"].sum()
        prev = nodes["pruned_in"].fillna(0.0) if "pruned_in" in nodes else 0.0
        full = self.edges.groupby("target")["weight"].sum()
        nodes["pruned_in"] = np.where(nodes["is_row"], nodes["node_id"].map(full).fillna(0.0) + prev
                                      - nodes["node_id"].map(kept).fillna(0.0), np.nan)
        meta = {**self.meta, "pruned": True, "node_threshold": node_threshold, "edge_threshold": edge_threshold}
        g = AttributionGraph(nodes.reset_index(drop=True), edges, meta)
        g.nodes["influence"] = node_influence(g)
        g._model, g._run, g._targets = self._model, self._run, self._targets
        return g

    def pruned_mass(self):
        """Per target: its value, the sum of its kept incoming edges, and the exact mass pruning removed."""
        t = self.targets
        kept = t["node_id"].map(self.edges.groupby("target")["weight"].sum()).fillna(0.0)
        removed = t["pruned_in"] if "pruned_in" in t else 0.0 * kept
        return t[["node_id", "label", "activation"]].assign(kept=kept.to_numpy(), removed=np.asarray(removed))

    def scores(self) -> tuple[float, float]:
        """(replacement, completeness) by circuit-tracer's formulas (1.0 here: no error nodes)."""
        from hooked_bilinear.graphs.prune import scores

        return scores(self)

    def _prompt_run(self):
        if self._run is None:
            if self._model is None:
                raise InputError("this graph has no model attached (a loaded graph): set graph._model = model")
            import torch

            from hooked_bilinear.circuits.frozen import freeze
            from hooked_bilinear.graphs.rows import mlp_hook_names, prompt_run

            if self.meta.get("basis"):
                raise InputError("this graph is in an SAE basis and was loaded: rebuild it with attribute(..., basis=sae)")
            dtype = getattr(torch, self.meta.get("dtype", "float32"))
            tokens = torch.tensor([self.meta["tokens"]], device=self._model.cfg.device)
            run = freeze(self._model, tokens, dtype=dtype, extra_names=mlp_hook_names(self._model))
            self._run = prompt_run(run, 0, model=self._model)  # the model: pattern nodes of bilinear attention
        return self._run

    def head_loadings(self, edge_or_node, target=None, qk: int = 0):
        """Split an edge (source, target), or every incoming cross-position edge of a node, exactly over heads;
        `qk=k` adds, for the head carrying most of each edge, its top k query×key score pairs (`why`)."""
        from hooked_bilinear.graphs.heads import head_loadings

        return head_loadings(self, edge_or_node, target, qk=qk)

    def why_notes(self, qk: int = 3) -> dict:
        """{node_id: why its input from other positions came through the head it did}: the head with the largest
        loading, its pattern entry and (softmax models) its top `qk` query×key score pairs (`graphs.why`)."""
        from hooked_bilinear.graphs.why import why_notes

        return why_notes(self, qk)

    def error_upstream(self, error_id: str, row_id: str):
        """An SAE error node's edge into a row, split exactly over the sources: (frame, edge value)."""
        from hooked_bilinear.graphs.error_upstream import error_upstream

        return error_upstream(self, error_id, row_id)

    # ------------------------------------------------------------------ interventions
    def intervene(self, nodes, scale: float = None, value: float = None, model=None):
        """Rerun the real model (nothing frozen) with neurons scaled or set; compare with the graph."""
        from hooked_bilinear.graphs.intervene import intervene

        return intervene(self, nodes, scale=scale, value=value, model=model)

    # ------------------------------------------------------------------ viewers
    def to_circuit_tracer(self, out_dir, slug: str, **kwargs):
        """Write circuit-tracer's graph JSON and graph-metadata.json (its frontend reads them)."""
        from hooked_bilinear.graphs.export import to_circuit_tracer

        return to_circuit_tracer(self, out_dir, slug, **kwargs)

    def to_html(self, path, **kwargs):
        """One self-contained offline HTML page of the graph."""
        from hooked_bilinear.graphs.html import to_html

        return to_html(self, path, **kwargs)

    def show(self, **kwargs):
        """Display the offline viewer in a notebook."""
        from hooked_bilinear.graphs.html import show

        return show(self, **kwargs)

    # ------------------------------------------------------------------ files
    def save(self, path: Union[str, Path]) -> Path:
        """Write the graph to one safetensors file (tensors + JSON metadata; no pickle)."""
        import torch
        from safetensors.torch import save_file

        path = Path(path)
        nodes, edges = self.nodes, self.edges
        pos = {nid: i for i, nid in enumerate(nodes["node_id"])}
        t = {f"nodes.{c}": torch.from_numpy(nodes[c].to_numpy(dtype=np.float64).copy()) for c in _FLOAT_COLS if c in nodes}
        t.update({f"nodes.{c}": torch.from_numpy(nodes[c].to_numpy(dtype=np.int64).copy()) for c in _INT_COLS if c in nodes})
        t.update({f"nodes.{c}": torch.from_numpy(nodes[c].to_numpy(dtype=bool).astype(np.uint8)) for c in _BOOL_COLS})
        t["edges.source"] = torch.from_numpy(edges["source"].map(pos).to_numpy(dtype=np.int64).copy())
        t["edges.target"] = torch.from_numpy(edges["target"].map(pos).to_numpy(dtype=np.int64).copy())
        t["edges.weight"] = torch.from_numpy(edges["weight"].to_numpy(dtype=np.float64).copy())
        header = {"format": FORMAT, "meta": json.dumps(self.meta)}
        header.update({f"nodes.{c}": json.dumps(nodes[c].astype(str).tolist()) for c in _STR_COLS})
        save_file(t, str(path), metadata=header)
        return path

    @classmethod
    def load(cls, path: Union[str, Path]) -> "AttributionGraph":
        """Read a graph written by `save`; a corrupt or foreign file raises GraphFormatError."""
        import pandas as pd
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise GraphFormatError(f"no graph file at {str(path)!r}")
        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                tensors = {k: f.get_tensor(k).numpy() for k in f.keys()}
        except Exception as e:  # safetensors raises its own error types for truncated or garbled files
            raise GraphFormatError(f"{str(path)!r} is not a readable safetensors graph file: {e}") from e
        if header.get("format") != FORMAT:
            raise GraphFormatError(f"{str(path)!r} is not an attribution graph (format {header.get('format')!r}, expected {FORMAT!r})")
        try:
            meta = json.loads(header["meta"])
            cols = {c: json.loads(header[f"nodes.{c}"]) for c in _STR_COLS}
            n = len(cols["node_id"])
            for c in _FLOAT_COLS + _INT_COLS + _BOOL_COLS:
                if f"nodes.{c}" in tensors:
                    v = tensors[f"nodes.{c}"]
                    cols[c] = v.astype(bool) if c in _BOOL_COLS else v
            src, tgt, w = tensors["edges.source"], tensors["edges.target"], tensors["edges.weight"]
        except (KeyError, ValueError) as e:
            raise GraphFormatError(f"{str(path)!r} lacks graph field {e}") from e
        bad = [c for c, v in cols.items() if len(v) != n]
        if bad or not (len(src) == len(tgt) == len(w)):
            raise GraphFormatError(f"{str(path)!r} is inconsistent: columns {bad} or the edge arrays have wrong lengths")
        if len(src) and (src.min() < 0 or tgt.min() < 0 or max(src.max(), tgt.max()) >= n):
            raise GraphFormatError(f"{str(path)!r} has edges pointing outside its {n} nodes")
        ids = np.asarray(cols["node_id"], dtype=object)
        order = ["node_id", "kind", "layer", "pos", "index", "activation", "label", "is_row", "abs_mass",
                 "token_prob", "is_target", "head", "key_pos", "influence", "pruned_in"]
        nodes = pd.DataFrame({c: cols[c] for c in order if c in cols})
        edges = pd.DataFrame({"source": ids[src], "target": ids[tgt], "weight": w})
        return cls(nodes, edges, meta)
