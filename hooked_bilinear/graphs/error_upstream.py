"""The upstream of an SAE error node: its edge into a row, split exactly over the sources (spec graphs §1.2).

Unlike a transcoder's error, an SAE's reconstruction error on a bilinear MLP is exact in the sources:
`ε = mlp_out − x̂ = Σ_k h_k W_out[k] + b_out − n (Σ_{f active} act_f W_dec[f] + b_dec)` with `act_f` linear
in the neurons. Its edge into a row r is `g_r · ε[p]` (g_r: the row's encoder carried back to the block's
output at p), a linear combination `Σ_k β_k h_k + const` of the block's neurons,

    β_k = g·W_out[k] − Σ_{f active} (g·n W_dec[f]) w_fk,

so it splits over sources by the neurons' half-gradient rule, like a row of its own.
"""

from __future__ import annotations

import torch

from hooked_bilinear.errors import InputError
from hooked_bilinear.graphs.ids import KIND_NAMES, Numbering, string_ids
from hooked_bilinear.graphs.rows import carry_back, row_edges


@torch.no_grad()
def error_upstream(graph, error_id: str, row_id: str):
    """Sources of the error node's edge into `row_id`: a DataFrame (source, label, weight), plus the edge.

    Returns (frame, edge): the weights sum to `edge = g_r · ε[p]` (the own-constant part is in the
    `C_{l}_{p}` row), which is the graph's edge from the error node into the row when it was kept.
    """
    import pandas as pd

    from hooked_bilinear.graphs.heads import _encoder

    pr = graph._prompt_run()
    table = graph.nodes.set_index("node_id")
    if error_id not in table.index or table.loc[error_id, "kind"] != "error":
        raise InputError(f"{error_id!r} is not an error node of this graph")
    if row_id not in table.index or not bool(table.loc[row_id, "is_row"]):
        raise InputError(f"{row_id!r} is not a row of this graph")
    l, p = int(table.loc[error_id, "layer"]), int(table.loc[error_id, "pos"])
    row = table.loc[row_id].copy()
    row["node_id"] = row_id
    if int(row["layer"]) <= l:
        raise InputError(f"row {row_id!r} is not downstream of block {l}: the error cannot reach it")
    enc, top = _encoder(graph, pr, row)
    G = enc.new_zeros(pr.n, enc.shape[0])
    G[int(row["pos"])] = enc
    g = carry_back(pr, G, top, l)[p]
    F, L = pr.features[l], pr.folded.layers[l]
    active = F.act_real[p] != 0
    coef = F.dec[active] @ g                                   # [F_active]
    beta = L.W_out @ g - F.w[:, active] @ coef                 # [m]
    a, b = pr.a[l][p], pr.b[l][p]
    e = 0.5 * ((beta * b) @ L.W_l.T + (beta * a) @ L.W_r.T) / pr.s2[l][p]
    own = (beta * 0.5 * (L.b_l * b + a * L.b_r)).sum() + g @ L.b_out - coef @ F.c[active] - g @ F.bdec
    E = row_edges(pr, torch.tensor([l]), torch.tensor([p]), e[None], own[None])
    num = Numbering(pr.n, pr.n_layers, max(pr.width(k) for k in range(pr.n_layers)),
                    tuple((k, X.d_sae) for k, X in sorted(pr.features.items())))
    ids, vals = [torch.arange(pr.n), num.pos0 + torch.arange(pr.n)], [E.tok[0], None if E.pos is None else E.pos[0]]
    cl = torch.arange(pr.n_layers + 1)[:, None]
    ids.append((num.const0 + cl * pr.n + torch.arange(pr.n)).flatten()), vals.append(E.const[0].flatten())
    for k, En in enumerate(E.neurons):
        if En is not None:
            w = En.shape[-1]
            flat = torch.arange(pr.n * w)
            ids.append(num.neuron0 + (k * pr.n + flat // w) * num.d_mlp + flat % w), vals.append(En[0].flatten())
    keep = [(i, v) for i, v in zip(ids, vals) if v is not None]
    I, V = torch.cat([i for i, _ in keep]).numpy(), torch.cat([v for _, v in keep]).double().cpu().numpy()
    nz = V != 0
    dec = num.decode(I[nz])
    sid, _ = string_ids(dec, pr.tokens.cpu().numpy())
    frame = pd.DataFrame({"source": sid, "kind": KIND_NAMES[dec["kind"]], "weight": V[nz]})
    frame = frame.reindex(frame["weight"].abs().sort_values(ascending=False).index).reset_index(drop=True)
    return frame, float(g @ F.err[p])
