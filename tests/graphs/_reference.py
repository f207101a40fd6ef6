"""Independent references for graph tests: autograd through the real model under the graph's freeze.

Patterns and norm scales are replaced by detached copies of their cached values, and every MLP output
`hook_post` is cut from its inputs (MLPs are nodes), so each row is a polynomial in the sources of
degree 2 (a neuron: Euler gives e = ½ ∂h/∂c · c) or 1 (a logit: e = ∂logit/∂c · c).
"""

from __future__ import annotations

import torch


def frozen_edges(model, tokens: torch.Tensor, row, zero_head=None) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Edges into one row from each token embedding [n] and each neuron [n_layers][n, m], and the row's value.

    row: ("neuron", layer, pos, index) or ("logit", pos, token). Token edges include the position
    embedding only when the model has none (rotary / none); learned positions enter as hook_pos_embed.
    zero_head=(layer, head): that head's frozen pattern is set to zero (the edge without any path through it);
    (layer, head, p, q): only its entry A[p, q].
    """
    names = lambda n: n.endswith("hook_pattern") or n.endswith("hook_scale")  # noqa: E731
    _, cache = model.run_with_cache(tokens[None], names_filter=names)
    saved = {}

    def freeze(x, hook):
        out = cache[hook.name].detach().clone()
        if zero_head is not None and hook.name == f"blocks.{zero_head[0]}.attn.hook_pattern":
            if len(zero_head) == 4:  # one entry A[p, q] of the head
                out[:, zero_head[1], zero_head[2], zero_head[3]] = 0
            else:
                out[:, zero_head[1]] = 0
        return out

    def leaf(x, hook):
        saved["orig." + hook.name] = x
        y = x.detach().requires_grad_(True)
        saved[hook.name] = y
        return y

    L = model.cfg.n_layers
    posts = [f"blocks.{l}.mlp.hook_post" for l in range(L)] if not model.cfg.attn_only else []
    hooks = [(n, freeze) for n in cache.keys()] + [("hook_embed", leaf)] + [(n, leaf) for n in posts]
    with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
        logits = model(tokens[None])
        if row[0] == "neuron":
            _, l, p, k = row
            value, factor = saved[f"orig.blocks.{l}.mlp.hook_post"][0, p, k], 0.5
        else:
            _, p, t = row
            value, factor = logits[0, p, t], 1.0
        leaves = [saved["hook_embed"]] + [saved[n] for n in posts]
        grads = torch.autograd.grad(value, leaves, allow_unused=True)
    edges = [factor * ((g if g is not None else torch.zeros_like(x)) * x.detach())[0] for g, x in zip(grads, leaves)]
    return edges[0].sum(-1), edges[1:], value.detach()
