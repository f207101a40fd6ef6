"""What a graph explains: logit nodes (a token's logit, a logit difference, or any output direction).

Default (circuit-tracer's): the most likely next tokens at the last position until their cumulative
probability reaches 0.95, at most 10. A target node's value is `w · logits[p]` with `w` a weight on the
vocabulary; after folding ln_final it reads the final residual through the encoder `W_U'' w / σf[p]`,
plus the constant `w · b_U'`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from hooked_bilinear.circuits.target import Target
from hooked_bilinear.errors import InputError


@dataclass
class GraphTarget:
    """One logit node: weight `w` [d_vocab] at position `pos`."""

    pos: int
    w: Tensor
    key: str          # the id part: a token id, "a-b" for a difference, "d{i}" for a direction
    index: int        # token id, or -1
    label: str
    prob: float       # softmax probability of the token (NaN for differences and directions)


def _pos(p: int, n: int) -> int:
    q = p + n if p < 0 else p
    if not 0 <= q < n:
        raise InputError(f"target position {p} is out of range for a prompt of {n} positions")
    return q


def _token(x, b: int, V: int) -> int:
    if isinstance(x, Tensor):
        x = x.reshape(-1)[b] if x.numel() > 1 else x.reshape(-1)[0]
        x = int(x)
    if not isinstance(x, int) or isinstance(x, bool) or not 0 <= x < V:
        raise InputError(f"target token {x!r} must be an int in [0, d_vocab={V})")
    return x


def default_targets(logits: Tensor, max_targets: int = 10, cum_prob: float = 0.95) -> list[int]:
    """Top tokens at one position until cumulative probability ≥ cum_prob, at most max_targets."""
    probs = torch.softmax(logits.double(), -1)
    p, idx = probs.sort(descending=True)
    k = int((p.cumsum(0) < cum_prob).sum()) + 1
    return idx[: min(k, max_targets)].tolist()


def resolve_targets(targets, logits: Tensor, b: int, tok_str) -> list[GraphTarget]:
    """Normalise `targets` for prompt b. logits: [n, d_vocab] (real); tok_str: id -> display string."""
    n, V = logits.shape
    probs = torch.softmax(logits.double(), -1)
    like = torch.zeros(V, dtype=logits.dtype, device=logits.device)

    def token_target(t: int, p: int) -> GraphTarget:
        w = like.clone()
        w[t] = 1
        prob = float(probs[p, t])
        return GraphTarget(p, w, str(t), t, f"logit {tok_str(t)} @{p} (p={prob:.3f})", prob)

    if targets is None:
        return [token_target(t, n - 1) for t in default_targets(logits[-1])]
    if isinstance(targets, (int, Target)) or (isinstance(targets, Tensor) and targets.ndim == 0):
        targets = [targets]
    if isinstance(targets, Tensor):
        targets = targets.tolist()
    if not isinstance(targets, Sequence) or len(targets) == 0:
        raise InputError(f"targets must be None, a token id, a Target or a non-empty list of them, got {targets!r}")
    out: list[GraphTarget] = []
    for i, t in enumerate(targets):
        if isinstance(t, (int, Tensor)) and not isinstance(t, bool):
            out.append(token_target(_token(t, b, V), n - 1))
            continue
        if not isinstance(t, Target):
            raise InputError(f"target {t!r} is neither a token id nor a Target")
        if t.kind == "next_token":
            raise InputError("Target.next_token() is not a graph target; pass token ids or Target.logit(...)")
        for p in ([t.pos] if isinstance(t.pos, int) else list(t.pos)):
            q = _pos(p, n)
            if t.kind == "logit":
                out.append(token_target(_token(t.a, b, V), q))
            elif t.kind == "logit_diff":
                x, y = _token(t.a, b, V), _token(t.b, b, V)
                w = like.clone()
                w[x], w[y] = 1, -1
                out.append(GraphTarget(q, w, f"{x}-{y}", -1, f"logit {tok_str(x)} - {tok_str(y)} @{q}", float("nan")))
            else:
                u = t.u.to(device=logits.device, dtype=logits.dtype)
                if u.ndim == 2:
                    u = u[b]
                if u.shape != (V,):
                    raise InputError(f"a graph target direction must be [d_vocab={V}] (or [batch, d_vocab]), "
                                     f"got shape {tuple(t.u.shape)}")
                out.append(GraphTarget(q, u.clone(), f"d{i}", -1, f"direction {i} @{q}", float("nan")))
    keys = [(g.key, g.pos) for g in out]
    if len(set(keys)) != len(keys):
        raise InputError(f"graph targets repeat a node: {keys}")
    return out


def influence_weights(targets: list[GraphTarget], default: bool) -> Tensor:
    """Weights of the target nodes in influence (circuit-tracer: their probabilities; else uniform)."""
    if default:
        return torch.tensor([g.prob for g in targets], dtype=torch.float64)
    return torch.full((len(targets),), 1.0 / len(targets), dtype=torch.float64)




def node_weight(graph, row, d_vocab: int, dtype, device=None) -> Tensor:
    """The weight `w` [d_vocab] of a logit node (its value is `w · logits[pos]`), from the graph's targets
    when it was built here, else from its id (a token, or "a-b" for a difference)."""
    key, pos = str(row["node_id"]).split("_")[1], int(row["pos"])
    built = [g for g in (graph._targets or []) if g.key == key and g.pos == pos]
    if built:
        return built[0].w.to(dtype=dtype, device=device)
    if key.startswith("d"):
        raise InputError(f"the direction of target {row['node_id']!r} is not saved with a graph: use the graph as built")
    w = torch.zeros(d_vocab, dtype=dtype, device=device)
    if "-" in key:
        a, b = (int(x) for x in key.split("-"))
        w[a], w[b] = 1, -1
    else:
        w[int(key)] = 1
    return w
