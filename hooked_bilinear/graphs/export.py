"""Write an attribution graph in circuit-tracer's viewer format: `{slug}.json` and `graph-metadata.json`.

The schema is circuit-tracer 0.5.0's (`frontend/graph_models.py`: `Metadata`, `QParams`, `Node`,
`Link`, `Model`; the writer `utils/create_graph_files.py`), which its frontend and Neuronpedia read.
circuit-tracer itself is never imported (its dependencies cannot share an environment with
transformer-lens 4.x); the records are plain dicts with the schema's fields, and the tests validate
them against its pydantic models.

How our node kinds map onto the kinds its frontend draws (it handles `"cross layer transcoder"`,
`"embedding"`, `"logit"` and any type containing `"error"`; other types are drawn as plain circles):

    ============  ==========================  ============  ===========================================
    our kind      feature_type                layer         notes
    ============  ==========================  ============  ===========================================
    neuron        cross layer transcoder      block index   `Node.feature_node(layer, pos, index)`
    feature       cross layer transcoder      block index   an SAE/transcoder feature, same constructor
    embedding     embedding                   "E"           `Node.token_node(pos, token)`
    logit         logit                       n_layers + 1  `Node.logit_node(...)`, clerp 'Output "tok" (p=..)'
    error         mlp reconstruction error    block index   `Node.error_node(layer, pos)`
    remainder     mlp reconstruction error    source layer  clerp "exact remainder (not an error): ..."
    position      position embedding          "E"           drawn in the embedding row
    constant      constant                    "E"           bias writes: leaves, drawn in the embedding row
    other         the kind itself             block index
    ============  ==========================  ============  ===========================================

The frontend merges nodes sharing (layer, feature, ctx_idx) into one "feature" and deletes features
present at more than 2/3 of the positions, so kinds without a circuit-tracer feature number get a
unique negative one. Its pruning slider hides nodes whose `influence` (circuit-tracer's *cumulative*
influence, in [0, 1]) exceeds the slider; the cumulative score is computed here from the raw
`influence` column of the graph before pruning (see `cumulative_influence`).
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
from pathlib import Path
from typing import Optional, Union

from hooked_bilinear.errors import InputError

CT_FEATURE = "cross layer transcoder"
CT_ERROR = "mlp reconstruction error"
METADATA_FILE = "graph-metadata.json"
SCHEMA_VERSION = 1
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_REQUIRED_META = ("prompt", "prompt_tokens", "n_layers")
ALWAYS_SHOWN = ("embedding", "logit")  # kept by pruning, never hidden by the viewer's slider


def to_circuit_tracer(graph, out_dir: Union[str, Path], slug: str, *, scan: Optional[str] = None,
                      prune: Optional[bool] = None, node_threshold: float = 0.8,
                      edge_threshold: float = 0.98, why: int = 0) -> Path:
    """Write `graph` as `out_dir/{slug}.json` and add it to `out_dir/graph-metadata.json`.

    Like circuit-tracer's `create_graph_files`: the graph is pruned first (when it has a `prune`
    method and is not pruned yet, unless `prune=False`), only edges between kept nodes are written,
    nodes left without edges are dropped (embeddings and logits are always kept), and an existing
    `graph-metadata.json` keeps its other graphs, the entry with the same slug being replaced.

    Args:
        graph: an `AttributionGraph` (`nodes`, `edges` frames and `meta` dict).
        out_dir: folder to write to; created when absent.
        slug: the graph's name in the viewer and its file name (letters, digits, `.`, `_`, `-`).
        scan: circuit-tracer's transcoder-set name; defaults to `graph.meta["model_name"]`.
        prune: prune before writing; None prunes when the graph can and is not pruned yet.
        node_threshold: cumulative influence kept by pruning (also the viewer's slider maximum).
        edge_threshold: cumulative edge influence kept by pruning.
        why: when > 0, each kept node's `clerp` (its text in the viewer's node details) also says which head
            carried its input from other positions and, on a softmax model, the top `why` query × key source
            pairs of that head's score (`hooked_bilinear.graphs.why`; costs a head split per kept node).

    Returns:
        The path of the written graph JSON.

    Raises:
        InputError: a bad slug, an `out_dir` that is a file, a corrupt `graph-metadata.json`, missing
            meta fields, thresholds outside [0, 1], or non-finite edge weights; nothing is written then.

    Example:
        >>> to_circuit_tracer(graph, "graphs", "induction")    # doctest: +SKIP
        >>> serve("graphs")                                     # doctest: +SKIP
    """
    if not isinstance(slug, str) or not _SLUG.match(slug):
        raise InputError(f"slug {slug!r} is not a file-name-safe name: expected letters, digits, '.', '_', '-'")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"out_dir {str(out)!r} is a file: expected a folder (it is created when absent)")
    for name, value in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise InputError(f"{name}={value!r}: expected a fraction in [0, 1]")
    missing = [k for k in _REQUIRED_META if k not in graph.meta]
    if missing:
        raise InputError(f"graph.meta lacks {missing}: expected the keys {list(_REQUIRED_META)}")
    existing = _read_metadata(out / METADATA_FILE)  # validate before writing anything

    cumulative = cumulative_influence(graph.nodes)
    drawn, threshold = _pruned(graph, prune, node_threshold, edge_threshold)
    if why:
        from hooked_bilinear.graphs.why import with_why

        drawn = with_why(drawn, why)
    if cumulative is None:  # influence only known after pruning: relative to what is drawn, no slider
        cumulative, threshold = cumulative_influence(drawn.nodes), None
    model = circuit_tracer_model(drawn, slug, scan=scan, node_threshold=threshold, cumulative=cumulative)

    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{slug}.json"
    _write_atomic(path, json.dumps(model, allow_nan=False, separators=(",", ":")))
    graphs = [g for g in existing["graphs"] if g.get("slug") != slug] + [model["metadata"]]
    _write_atomic(out / METADATA_FILE, json.dumps({**existing, "graphs": graphs}, indent=2, allow_nan=False))
    return path


def circuit_tracer_model(graph, slug: str, *, scan: Optional[str] = None, node_threshold: Optional[float] = None,
                         cumulative=None) -> dict:
    """The graph as circuit-tracer's `Model` dict: `{metadata, qParams, nodes, links}` (no pruning here)."""
    meta = graph.meta
    nodes = graph.nodes
    ids = set(nodes["node_id"])
    edges = graph.edges[graph.edges["source"].isin(ids) & graph.edges["target"].isin(ids)]
    import numpy as np

    bad = edges[~np.isfinite(edges["weight"].to_numpy(dtype=np.float64))]
    if len(bad):
        row = bad.iloc[0]
        raise InputError(f"edge {row['source']} -> {row['target']} has weight {row['weight']}: "
                         "expected a finite number")
    connected = set(edges["source"]) | set(edges["target"])
    out_pos = dict(zip(edges["source"], _positions_of(nodes, edges["target"])))  # where each source writes
    records, next_free, virtual = [], [-2], [int(meta.get("d_vocab", 0))]
    for row in nodes.itertuples(index=False):
        if row.node_id not in connected and row.kind not in ALWAYS_SHOWN:
            continue
        influence = None if cumulative is None else cumulative.get(row.node_id)
        records.append(_node_record(row, int(meta["n_layers"]), influence, next_free, out_pos, virtual))
    links = [{"source": s, "target": t, "weight": float(w)}
             for s, t, w in zip(edges["source"], edges["target"], edges["weight"])]
    metadata = {
        "slug": slug,
        "scan": scan if scan is not None else str(meta.get("model_name") or "hooked_bilinear"),
        "transcoder_list": [],
        "prompt_tokens": [str(t) for t in meta["prompt_tokens"]],
        "prompt": str(meta["prompt"]),
        "node_threshold": None if node_threshold is None else float(node_threshold),
        "schema_version": SCHEMA_VERSION,
    }
    qparams = {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
    return {"metadata": metadata, "qParams": qparams, "nodes": records, "links": links}


def cumulative_influence(nodes) -> Optional[dict]:
    """circuit-tracer's cumulative score per node id: Σ of the influences ≥ its own over the total.

    Taken over every node with a finite influence, as circuit-tracer's `prune_graph` and
    `AttributionGraph.prune` threshold them, so that the viewer's slider at `node_threshold` shows the
    pruned graph (embeddings and logits are always kept and never hidden). Returns None when no node
    has a finite influence.
    """
    if "influence" not in nodes.columns:
        return None
    finite = nodes["influence"].map(lambda v: v is not None and math.isfinite(float(v)))
    known = nodes[finite]
    if not len(known):
        return None
    known = known.sort_values("influence", ascending=False, kind="stable")
    values = known["influence"].astype(float)
    total = float(values.sum())
    if total <= 0:
        return {nid: None for nid in known["node_id"]}
    return dict(zip(known["node_id"], (values.cumsum() / total).clip(upper=1.0).tolist()))  # rounding: never > 1


def cantor(x: int, y: int) -> int:
    """Cantor pairing: circuit-tracer's feature number of (layer, feature index)."""
    return (x + y) * (x + y + 1) // 2 + y


def _pruned(graph, prune: Optional[bool], node_threshold: float, edge_threshold: float):
    can_prune = callable(getattr(graph, "prune", None))
    if prune is None:
        prune = can_prune and not graph.meta.get("pruned", False)
    if not prune:
        return graph, None
    if not can_prune:
        raise InputError(f"prune=True but a {type(graph).__name__} has no prune method: pass prune=False")
    result = graph.prune(node_threshold=node_threshold, edge_threshold=edge_threshold)
    return (result[0] if isinstance(result, tuple) else result), node_threshold


def _node_record(row, n_layers: int, influence, next_free: list, out_pos: dict, virtual: list) -> dict:
    kind, layer, pos, index = row.kind, int(row.layer), int(row.pos), int(row.index)
    if pos < 0:  # an aggregate without a position of its own: draw it at its row's position
        pos = int(out_pos.get(row.node_id, 0))
    label = str(row.label)
    record = {"node_id": row.node_id, "feature": None, "layer": str(layer) if layer >= 0 else "E",
              "ctx_idx": pos, "feature_type": kind, "token_prob": 0.0, "is_target_logit": False, "run_idx": 0,
              "reverse_ctx_idx": 0, "jsNodeId": row.node_id, "clerp": label,
              "influence": influence, "activation": _finite(row.activation)}
    if kind in ("neuron", "feature"):
        record.update(feature=cantor(layer, index), feature_type=CT_FEATURE, jsNodeId=f"{layer}_{index}-0")
    elif kind == "embedding":
        record.update(feature=pos, layer="E", jsNodeId=f"E_{index}-{pos}")
    elif kind == "logit":
        prob = float(getattr(row, "token_prob", 0.0) or 0.0)
        if index < 0:  # a difference or direction: circuit-tracer's virtual index, d_vocab + its ordinal
            index, virtual[0] = virtual[0], virtual[0] + 1
        record.update(feature=index, layer=str(n_layers + 1), token_prob=prob,
                      is_target_logit=bool(getattr(row, "is_target", False)), jsNodeId=f"L_{index}-{pos}",
                      clerp=f'Output "{_logit_token(row)}" (p={prob:.3f})')
    elif kind == "error":
        record.update(feature=-1, feature_type=CT_ERROR, jsNodeId=f"{layer}_{pos}-0")
    else:
        record["feature"] = next_free[0]
        next_free[0] -= 1
        if kind == "remainder":
            value = record["activation"]
            record.update(feature_type=CT_ERROR, clerp=f"exact remainder (not an error): {label}"
                          + ("" if value is None else f" = {value:+.4g}"))
        elif kind in ("position", "constant"):
            record.update(layer="E", feature_type="position embedding" if kind == "position" else "constant")
        elif kind == "pattern":  # softmax-free attention entry A[p, q]: drawn as a feature of its block
            record.update(feature_type=CT_FEATURE, clerp=f"{label} (bilinear attention pattern entry)")
    why = getattr(row, "why", "")
    if isinstance(why, str) and why:
        record["clerp"] += f" | {why}"
    return record


def _logit_token(row) -> str:
    """The token string of a logit node: a `token` column, else parsed from "logit ' cat' @5"."""
    token = getattr(row, "token", None)
    if isinstance(token, str):
        return token
    match = re.match(r"^logit (.*) @-?\d+(?: \(p=[^)]*\))?$", str(row.label))
    if not match:
        return str(row.index)
    text = match.group(1)
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return value if isinstance(value, str) else text


def _positions_of(nodes, ids):
    pos = dict(zip(nodes["node_id"], nodes["pos"]))
    return [pos.get(i, 0) for i in ids]


def _finite(value) -> Optional[float]:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _read_metadata(path: Path) -> dict:
    if not path.exists():
        return {"graphs": []}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{path} is not readable JSON ({e}): expected circuit-tracer's {{'graphs': [...]}}") from e
    if not isinstance(data, dict) or not isinstance(data.get("graphs"), list):
        raise InputError(f"{path} holds {type(data).__name__} without a 'graphs' list: expected {{'graphs': [...]}}")
    return data


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
