"""Row bookkeeping for `attribute`: influence-ordered row selection, top-k edges and exact remainders.

Influence (circuit-tracer's, spec graphs §1.3): a target node carries its weight; a row r with
influence I_r passes I_r · |e(s→r)| / Σ_s' |e(s'→r)| to each of its sources s. Sources are credited
when a row is computed, from the row's dense edges, so a neuron that is no row's top-k edge can still
be chosen next. Remainder groups: a row's dropped edges are summed per source layer (-1 = the
embeddings; n_layers = b_U), so the row still sums to its value. `frames.py` turns the finished
builder into the graph's frames.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from hooked_bilinear.graphs.ids import Numbering
from hooked_bilinear.graphs.rows import PromptRun, feature_encoders, neuron_encoders, row_edges
from hooked_bilinear.graphs.targets import GraphTarget


class GraphBuilder:
    def __init__(self, pr: PromptRun, targets: list[GraphTarget], weights: Tensor, edges_per_node: int,
                 default_targets: bool = True):
        self.pr, self.targets, self.k = pr, targets, edges_per_node
        self.default_targets = default_targets
        self.W = max([pr.width(l) for l in range(pr.n_layers)] or [0])
        self.num = Numbering(pr.n, pr.n_layers, self.W, tuple((l, F.d_sae) for l, F in sorted(pr.features.items())),
                             tuple((l, pr.mlp_width(l)) for l in range(pr.n_layers)) if pr.qk else ())
        dev = pr.logits.device
        shape = (pr.n_layers, pr.n, self.W)
        self.infl = torch.zeros(shape, dtype=torch.float64, device=dev)
        self.visited = torch.zeros(shape, dtype=torch.bool, device=dev)
        for l, F in pr.features.items():
            self.visited[l, :, F.d_sae:pr.mlp_width(l)] = True  # error nodes are sources, never rows
        for l in range(pr.n_layers):
            self.visited[l, :, pr.width(l):] = True  # unused slots
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
        """Rows for chosen slots: neurons or SAE features (read resid_mid), or pattern entries (read the block input)."""
        pr = self.pr
        self.visited[layer, pos, idx] = True
        offset = torch.tensor([pr.mlp_width(l) for l in range(pr.n_layers)], device=layer.device)[layer]
        is_pat = idx >= offset
        order = torch.argsort(layer * 2 + is_pat.long(), stable=True)
        layer, pos, idx, infl, is_pat, offset = (t[order] for t in (layer, pos, idx, infl, is_pat, offset))
        encs, owns, encs2, pos2 = [], [], [], pos.clone()
        acts = []
        for l in layer.unique().tolist():
            for pat in (False, True):
                at = (layer == l) & (is_pat == pat)
                if not at.any():
                    continue
                if pat:
                    from hooked_bilinear.graphs.patterns import pattern_encoders

                    h, q = (idx[at] - offset[at]) // pr.n, (idx[at] - offset[at]) % pr.n
                    e, e2, o = pattern_encoders(pr, l, h, pos[at], q)
                    pos2[at] = q
                    acts.append(pr.patterns[l][h, pos[at], q])
                else:
                    enc_fn = feature_encoders if l in pr.features else neuron_encoders
                    e, o = enc_fn(pr, l, pos[at], idx[at])
                    e2 = torch.zeros_like(e)
                    src = pr.features[l].act_real if l in pr.features else pr.h_real[l]
                    acts.append(src[pos[at], idx[at]])
                encs.append(e), owns.append(o), encs2.append(e2)
        ids = self.num.neuron(layer, pos, idx).cpu().numpy()
        self._add(layer, pos, torch.cat(encs), torch.cat(owns), ids, torch.cat(acts), infl,
                  pos2=pos2, enc2=torch.cat(encs2), at_pre=is_pat)
        self.n_neuron_rows += len(ids)

    # ------------------------------------------------------------------ one sweep
    def _add(self, layer, pos, enc, own, ids, act, infl, pos2=None, enc2=None, at_pre=None) -> None:
        pr, num = self.pr, self.num
        E = row_edges(pr, layer, pos, enc, own, pos2, enc2, at_pre)
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
        from hooked_bilinear.graphs.frames import build_graph

        return build_graph(self, model, tok_str, max_nodes)
