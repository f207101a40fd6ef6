"""Row bookkeeping for `attribute`: influence-ordered row selection, top-k edges and exact remainders.

Influence (circuit-tracer's, spec graphs §1.3): a target node carries its weight; a row r with
influence I_r passes I_r · |e(s→r)| / Σ_s' |e(s'→r)| to each of its sources s. Sources are credited
when a row is computed, from the row's dense edges, so a neuron that is no row's top-k edge can still
be chosen next. Remainder groups: a row's dropped edges are summed per source layer (-1 = the
embeddings; n_layers = b_U), so the row still sums to its value.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from hooked_bilinear.graphs.ids import KIND_NAMES, Numbering, logit_id, remainder_id, string_ids
from hooked_bilinear.graphs.rows import PromptRun, feature_encoders, neuron_encoders, row_edges
from hooked_bilinear.graphs.targets import GraphTarget


class GraphBuilder:
    def __init__(self, pr: PromptRun, targets: list[GraphTarget], weights: Tensor, edges_per_node: int,
                 default_targets: bool = True):
        self.pr, self.targets, self.k = pr, targets, edges_per_node
        self.default_targets = default_targets
        self.W = max([pr.width(l) for l in range(pr.n_layers)] or [0]) if pr.d_mlp else 0
        self.num = Numbering(pr.n, pr.n_layers, self.W, tuple((l, F.d_sae) for l, F in sorted(pr.features.items())))
        dev = pr.logits.device
        shape = (pr.n_layers, pr.n, self.W)
        self.infl = torch.zeros(shape, dtype=torch.float64, device=dev)
        self.visited = torch.zeros(shape, dtype=torch.bool, device=dev)
        for l, F in pr.features.items():
            self.visited[l, :, F.d_sae:] = True  # error nodes are sources, never rows
        self.weights = weights
        # per row: int id, activation, abs mass, influence when chosen
        self.row_ids: list[np.ndarray] = []
        self.row_act: list[np.ndarray] = []
        self.row_mass: list[np.ndarray] = []
        # edges: source int id (or -1 - remainder index), target row ordinal, weight
        self.e_src: list[np.ndarray] = []
        self.e_row: list[np.ndarray] = []
        self.e_w: list[np.ndarray] = []
        self.rem_row: list[np.ndarray] = []   # remainder: row ordinal, source layer, value
        self.rem_layer: list[np.ndarray] = []
        self.rem_val: list[np.ndarray] = []
        self.n_rows = 0
        self.n_neuron_rows = 0
        self.n_sweeps = 0

    # ------------------------------------------------------------------ rows
    def add_logit_rows(self, batch: int) -> None:
        f, pr = self.pr.folded, self.pr
        T = len(self.targets)
        W = torch.stack([g.w for g in self.targets])                               # [T, V]
        pos = torch.tensor([g.pos for g in self.targets], device=W.device)
        enc = (W @ f.W_U.T) / pr.sf[pos]                                            # W_U'' w / σf
        own = W @ f.b_U
        act = (W * pr.logits[pos]).sum(-1)                                          # the real target values
        layer = torch.full((T,), pr.n_layers, device=W.device)
        ids = self.num.logit0 + torch.arange(T)
        for s in range(0, T, batch):
            sl = slice(s, s + batch)
            self._add(layer[sl], pos[sl], enc[sl], own[sl], ids[sl].numpy(), act[sl], self.weights[sl].to(W.device))

    def next_rows(self, k: int):
        """The k unexplained neurons of highest influence so far, or None when none has any."""
        if not self.W:
            return None
        cand = self.infl.masked_fill(self.visited, 0).flatten()
        k = min(k, int((cand > 0).sum()))
        if k == 0:
            return None
        val, flat = cand.topk(k)
        n, m = self.pr.n, self.W
        layer, rest = flat // (n * m), flat % (n * m)
        return layer, rest // m, rest % m, val

    def add_neuron_rows(self, layer: Tensor, pos: Tensor, idx: Tensor, infl: Tensor) -> None:
        pr = self.pr
        self.visited[layer, pos, idx] = True
        encs, owns = [], []
        order = torch.argsort(layer, stable=True)
        layer, pos, idx, infl = layer[order], pos[order], idx[order], infl[order]
        for l in layer.unique().tolist():
            at = layer == l
            enc_fn = feature_encoders if l in pr.features else neuron_encoders
            e, o = enc_fn(pr, l, pos[at], idx[at])
            encs.append(e), owns.append(o)
        act = torch.stack([pr.features[l].act_real[p, k] if l in pr.features else pr.h_real[l][p, k]
                           for l, p, k in zip(layer.tolist(), pos.tolist(), idx.tolist())])
        ids = self.num.neuron(layer, pos, idx).cpu().numpy()
        self._add(layer, pos, torch.cat(encs), torch.cat(owns), ids, act, infl)
        self.n_neuron_rows += len(ids)

    # ------------------------------------------------------------------ one sweep
    def _add(self, layer, pos, enc, own, ids, act, infl) -> None:
        pr, num = self.pr, self.num
        E = row_edges(pr, layer, pos, enc, own)
        self.n_sweeps += 1
        R, n, nL, m = enc.shape[0], pr.n, pr.n_layers, self.W
        dev = enc.device
        vals, srcs, groups = [E.tok], [torch.arange(n, device=dev).expand(R, n)], [torch.zeros(R, n, dtype=torch.long, device=dev)]
        if E.pos is not None:
            vals.append(E.pos), srcs.append(num.pos0 + srcs[0]), groups.append(groups[0])
        cl = torch.arange(nL + 1, device=dev)[:, None]
        const_ids = num.const0 + cl * n + torch.arange(n, device=dev)
        vals.append(E.const.reshape(R, -1)), srcs.append(const_ids.reshape(1, -1).expand(R, -1))
        groups.append((cl + 1).expand(-1, n).reshape(1, -1).expand(R, -1))
        G = nL + 2  # groups: 0 embeddings, l + 1 block l, nL + 1 b_U
        total = torch.zeros(R, G, dtype=enc.dtype, device=dev)
        nonzero = torch.zeros(R, G, dtype=torch.long, device=dev)
        mass = sum(v.abs().sum(-1) for v in vals)
        for v, g in zip(vals, groups):
            total.scatter_add_(1, g, v)
            nonzero.scatter_add_(1, g, (v != 0).long())
        absE = [None if En is None else En.abs() for En in E.neurons]  # once per block: mass, influence, top-k
        for A in absE:
            if A is not None:
                mass = mass + A.flatten(1).sum(-1)
        c = (infl.to(dev, torch.float64) / mass.double().clamp_min(1e-300)).to(dev, enc.dtype)
        for l, En in enumerate(E.neurons):
            if En is None:
                continue
            flat, w, A = En.flatten(1), En.shape[-1], absE[l]
            total[:, l + 1] += flat.sum(-1)
            nonzero[:, l + 1] += (flat != 0).sum(-1)
            self.infl[l, :, :w] += torch.einsum("r,rnm->nm", c, A)  # in the graph's dtype, accumulated in float64
            kk = min(self.k, flat.shape[1])
            top = A.flatten(1).topk(kk, dim=1).indices
            absE[l] = None
            vals.append(flat.gather(1, top)), srcs.append(num.neuron0 + (l * n + top // w) * m + top % w)
            groups.append(torch.full_like(top, l + 1))
        V, S, Gr = torch.cat(vals, 1), torch.cat(srcs, 1), torch.cat(groups, 1)
        kk = min(self.k, V.shape[1])
        keep = V.abs().topk(kk, dim=1).indices
        Vk, Sk, Gk = V.gather(1, keep), S.gather(1, keep), Gr.gather(1, keep)
        live = Vk != 0
        kept = torch.zeros_like(total).scatter_add_(1, Gk, Vk)
        kept_nz = torch.zeros_like(nonzero).scatter_add_(1, Gk, live.long())
        rem = total - kept
        has_rem = (nonzero - kept_nz) > 0
        base = self.n_rows
        r_idx = torch.arange(R, device=dev)[:, None].expand_as(Vk)
        self.e_src.append(Sk[live].cpu().numpy()), self.e_row.append((base + r_idx[live]).cpu().numpy())
        self.e_w.append(Vk[live].double().cpu().numpy())
        rr, gg = has_rem.nonzero(as_tuple=True)
        self.rem_row.append((base + rr).cpu().numpy()), self.rem_layer.append((gg - 1).cpu().numpy())
        self.rem_val.append(rem[rr, gg].double().cpu().numpy())
        self.row_ids.append(np.asarray(ids, dtype=np.int64))
        self.row_act.append(act.double().cpu().numpy()), self.row_mass.append(mass.double().cpu().numpy())
        self.n_rows += R

    # ------------------------------------------------------------------ frames
    def graph(self, model, tok_str, max_nodes: int):
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
        sid = string_ids(dec["kind"], dec["layer"], dec["pos"], dec["index"], tokens)
        act = np.full(len(base_ids), np.nan)
        for j in np.flatnonzero(np.isin(dec["kind"], (3, 4))):
            l, p, k = int(dec["layer"][j]), int(dec["pos"][j]), int(dec["index"][j])
            act[j] = float(pr.features[l].act_real[p, k] if dec["kind"][j] == 4 else pr.h_real[l][p, k])
        labels = _labels(dec, tokens, tok_str, nL)
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
                              "abs_mass": mass, "token_prob": 0.0, "is_target": False})
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
        nodes = pd.concat([nodes, lg, rem], ignore_index=True).astype({"layer": "int64", "pos": "int64", "index": "int64"})
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
            "frozen": "attention patterns and norm scales of this forward pass (everything else is exact)",
            "node_threshold": None, "edge_threshold": None, "pruned": False,
            "max_nodes": max_nodes, "edges_per_node": self.k, "default_targets": self.default_targets, "sweeps": self.n_sweeps,
            "dtype": str(pr.logits.dtype).replace("torch.", ""),
            "basis": {str(l): {"hook_name": f"blocks.{l}.hook_mlp_out", "d_sae": F.d_sae} for l, F in pr.features.items()},
        }
        g = AttributionGraph(nodes, edges, meta)
        g.nodes["influence"] = node_influence(g)
        g._model, g._run, g._targets = model, pr, self.targets
        return g


def _labels(dec, tokens, tok_str, nL) -> list[str]:
    out = []
    for k, l, p, i in zip(dec["kind"].tolist(), dec["layer"].tolist(), dec["pos"].tolist(), dec["index"].tolist()):
        if k == 0:
            out.append(f"tok {tok_str(tokens[p])} @{p}")
        elif k == 1:
            out.append(f"pos @{p}")
        elif k == 2:
            out.append(f"b_U @{p}" if l == nL else f"bias L{l} @{p}")
        elif k == 4:
            out.append(f"sae{l} f{i} @{p}")
        elif k == 5:
            out.append(f"sae{l} error @{p}")
        else:
            out.append(f"mlp{l} n{i} @{p}")
    return out
